"""Off the happy path: every way a user can go wrong with the command ends in one clear line,
and nothing already done is lost (issue 14). Where the behaviour is the process's own (exit
status, signals, what reaches stderr) the real command runs in a subprocess."""
import importlib
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastmnist import History, TwoLayerNet
from fastmnist import datasets as D
from fastmnist.augment import COPIES
from fastmnist.backend import import_cupy, probe_cuda
from fastmnist.cli import build_parser, default_model, main
from tests.conftest import sigint_as_usual
from tests.test_datasets import FILES

ROOT = Path(__file__).resolve().parents[1]


def command(*args, code=None, **kwargs):
    """The ``fastmnist`` command (or ``python -c code`` before it) as a subprocess argv."""
    head = [sys.executable, "-c", "import sys; " + code, *args] if code else \
        [sys.executable, "-m", "fastmnist.cli", *args]
    return head


def environment(**extra) -> dict:
    """This process's environment for a child; one given a local mirror may download (CI sets
    FASTMNIST_OFFLINE=1 for everything else)."""
    base = {k: v for k, v in os.environ.items()
            if not (k == "FASTMNIST_OFFLINE" and "FASTMNIST_MIRROR" in extra)}
    return {**base, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}


def fastmnist(*args, env=None, code=None, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args, code=code), capture_output=True, text=True,
                          env=environment(**(env or {})), cwd=cwd, timeout=timeout)


def one_clear_line(proc, status: int) -> str:
    """The process ended with ``status`` and one line on stderr, no traceback; that line."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- a mirror on 127.0.0.1 that records every request ---------------------------------------------
class Recorder(BaseHTTPRequestHandler):
    requests: list = []
    stall = False

    def log_message(self, *args):
        pass

    def do_GET(self):
        Recorder.requests.append(self.path)
        if Recorder.stall:  # a slow download: headers, a little data, then nothing
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + bytes(1000))
            self.wfile.flush()
            time.sleep(20)
            return
        self.send_error(404, "Not Found")


@pytest.fixture
def mirror():
    Recorder.requests, Recorder.stall = [], False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_offline_variable_fails_at_once_and_never_touches_the_network(mirror, tmp_path):
    """FASTMNIST_OFFLINE=1 was ignored by `train` (it passed download=not --offline)."""
    env = {"FASTMNIST_OFFLINE": "1", "FASTMNIST_MIRROR": mirror}
    proc = fastmnist("train", "--dataset", "kmnist", "--iters", "10", env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "downloading is off (FASTMNIST_OFFLINE=1 is set)" in proc.stderr
    assert "--data-dir FOLDER" in proc.stderr and "FASTMNIST_DATA=FOLDER" in proc.stderr
    proc = fastmnist("data", "fetch", "kmnist", env=env)
    assert proc.returncode == 1 and "FASTMNIST_OFFLINE=1 is set" in proc.stderr
    proc = fastmnist("train", "--dataset", "kmnist", "--offline", env={"FASTMNIST_MIRROR": mirror},
                     cwd=tmp_path)
    assert "downloading is off (--offline)" in proc.stderr
    proc = fastmnist("sweep", "--engine", "local", "--dataset", "kmnist", "--out", "", env=env)
    assert proc.returncode == 2 and "FASTMNIST_OFFLINE=1 is set" in proc.stderr
    assert Recorder.requests == []


def test_ctrl_c_during_data_loading_is_one_line(mirror, tmp_path):
    Recorder.stall = True
    proc = subprocess.Popen(command("train", "--dataset", "kmnist"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=environment(FASTMNIST_MIRROR=mirror), preexec_fn=sigint_as_usual)
    deadline = time.monotonic() + 60
    while not Recorder.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Recorder.requests, "the download never started"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "fastmnist train: interrupted during data loading"


# -- output paths, checked before any work ----------------------------------------------------------
def unusable_outputs(tmp_path):
    (tmp_path / "h.csv").write_text("step,loss\n")
    missing = tmp_path / "no" / "such" / "dir"
    cases = [
        (["--save", str(tmp_path / "h.csv" / "m.npz")], "h.csv is a file, not a folder"),
        (["--plot", str(tmp_path / "plot.txt")], "'.txt' is not a format"),
        (["--history", str(tmp_path / "h.xlsx")], ".json, .csv"),
        (["--save", str(missing / "m.npz")], f"the folder {missing} does not exist; create it"),
    ]
    if Path("/proc/self").is_dir():  # Linux: /proc takes no new files, whoever you are
        cases.append((["--save", "/proc/m.npz", "--plot", str(tmp_path / "p.png")],
                      "cannot create files in /proc"))
    return cases


def test_unusable_output_paths_are_refused_before_any_work(tmp_path, mirror):
    """Before: training ran first, then the write failed and took the other outputs with it."""
    for args, message in unusable_outputs(tmp_path):
        proc = fastmnist("train", "--dataset", "kmnist", *args, cwd=tmp_path,
                         env={"FASTMNIST_MIRROR": mirror})
        line = one_clear_line(proc, 2)
        assert line.startswith(f"fastmnist train: error: {args[0]} ") and message in line, line
        assert proc.stdout == ""  # no data loaded, nothing trained
    assert Recorder.requests == [] and not (tmp_path / "no").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv"]  # no probe or part left


def test_a_folder_given_for_an_output_gets_the_default_name_inside(tmp_path, fashion_dir, capsys):
    folder = tmp_path / "SOMEDIR"
    folder.mkdir()
    assert main(["train", "--dataset", "fashion-mnist", "--train-limit", "1000", "--iters", "200",
                 "--seed", "0", "--save", str(folder), "--plot", str(folder),
                 "--history", str(folder)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["curves.png", "history.json", "model.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SOMEDIR"]  # nothing beside it
    for said in re.findall(r"(?:saved|written) to (\S+)", out):
        assert Path(said).is_file(), said
    assert f"plot written to {folder / 'curves.png'}" in out


def test_one_failed_output_never_costs_the_others(tmp_path, fashion_dir, monkeypatch, capsys):
    import fastmnist.plots

    def disk_full(history, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(fastmnist.plots, "plot_history", disk_full)
    model, plot, hist = tmp_path / "m.npz", tmp_path / "c.png", tmp_path / "h.csv"
    assert main(["train", "--dataset", "fashion-mnist", "--train-limit", "1000", "--iters", "50",
                 "--save", str(model), "--plot", str(plot), "--history", str(hist)]) == 1
    err = capsys.readouterr().err
    assert f"the plot was not written to {plot}" in err and "No space left" in err
    assert TwoLayerNet.load(model).metadata["steps"] == 50
    assert len(hist.read_text().splitlines()) == 51 and not plot.exists()


def test_files_get_the_permissions_of_any_new_file(tmp_path, fashion_dir, isolated_cache):
    """Model and cache files were 600 (a temporary file's) while plots were 644."""
    old = os.umask(0o022)
    try:
        assert main(["train", "--dataset", "fashion-mnist", "--train-limit", "500", "--iters", "5",
                     "--save", str(tmp_path / "m.npz"), "--plot", str(tmp_path / "c.png"),
                     "--history", str(tmp_path / "h.json"), "--quiet"]) == 0
    finally:
        os.umask(old)
    written = [tmp_path / n for n in ("m.npz", "c.png", "h.json")]
    written += [isolated_cache / "fashion-mnist" / n for n in ("train.npz", "test.npz")]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {"0o644"}


# -- Ctrl-C and failures part-way keep what was trained ----------------------------------------------
@pytest.mark.parametrize("overlap", ["--overlap", "--no-overlap"])
def test_ctrl_c_after_an_epoch_keeps_the_model_and_history(tmp_path, fashion_dir, overlap):
    model, hist, plot = tmp_path / "m.npz", tmp_path / "h.json", tmp_path / "c.png"
    proc = subprocess.Popen(
        command("train", "--dataset", "fashion-mnist", "--train-limit", "6000", "--epochs", "50",
                overlap,
                "--save", str(model), "--history", str(hist), "--plot", str(plot)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(),
        preexec_fn=sigint_as_usual)
    seen = []
    for line in proc.stdout:  # the helper thread (--overlap) must not hold the exit up
        seen.append(line)
        if line.startswith("epoch   1.00"):
            proc.send_signal(signal.SIGINT)
            break
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    steps = int(re.fullmatch(r"fastmnist train: interrupted at step (\d+) of 3000",
                             stderr.strip().splitlines()[-1]).group(1))
    h = History.from_json(hist)
    assert h.status == "interrupted" and len(h.loss) == steps >= 61
    assert h.eval_steps[:2] == [0, 60] and len(h.train_acc) == len(h.eval_steps) >= 2
    net = TwoLayerNet.load(model, device="cpu")
    assert net.metadata["status"] == "interrupted" and net.metadata["steps"] == steps
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "marked interrupted" in stdout


def test_a_failure_part_way_still_writes_what_ran(tmp_path, fashion_dir, monkeypatch, capsys):
    training = importlib.import_module("fastmnist.train")  # fastmnist.train is the function
    real = training.epoch_line

    def third_evaluation_fails(h, k, per_epoch):
        if k == 2:
            raise MemoryError("simulated: the machine ran out of memory")
        return real(h, k, per_epoch)

    monkeypatch.setattr(training, "epoch_line", third_evaluation_fails)
    model, hist = tmp_path / "m.npz", tmp_path / "h.json"
    assert main(["train", "--dataset", "fashion-mnist", "--train-limit", "2000", "--epochs", "5",
                 "--no-overlap", "--save", str(model), "--history", str(hist)]) == 2
    err = capsys.readouterr().err
    assert "error: out of memory: simulated" in err
    h = History.from_json(hist)
    assert h.status == "failed" and "MemoryError" in h.error and h.eval_steps == [0, 20, 40]
    assert TwoLayerNet.load(model).metadata["status"] == "failed"


# -- settings that cannot work -----------------------------------------------------------------------
def test_too_many_hidden_units_are_refused_naming_size_and_memory(tmp_path):
    proc = fastmnist("train", "--hidden", "10000000", "--offline", cwd=tmp_path)
    line = one_clear_line(proc, 2)
    assert re.search(r"784-10000000-10 in float32 .* needs about [\d.]+ GiB .* but this machine "
                     r"has [\d.]+ GiB available; use fewer hidden units", line), line
    proc = fastmnist("train", "--hidden", "10000000", "--offline", cwd=tmp_path,
                     env={"FASTMNIST_DEBUG": "1"})
    assert "Traceback" in proc.stderr and proc.stderr.strip().endswith("--batch-size")
    proc = fastmnist("train", "--hidden", "10000000", "--offline", "--debug", cwd=tmp_path)
    assert "Traceback" in proc.stderr


def test_a_failed_allocation_reads_as_out_of_memory():
    from fastmnist.cli import error_line

    with pytest.raises(MemoryError) as exc:
        np.empty(2**50, dtype=np.uint8)  # a petabyte: beyond any address space
    assert error_line(exc.value).startswith("out of memory: Unable to allocate 1.00 PiB")


@pytest.fixture
def not_models(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros((784, 50), np.float32))
    (tmp_path / "notes.npz").write_text("these are my notes\n")
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    (tmp_path / "digit.png").rename(tmp_path / "photo.npz")
    return tmp_path


@pytest.mark.parametrize("name, looks", [("plain.npy", "a .npy array"), ("notes.npz", "text"),
                                         ("photo.npz", "a PNG image, not a zip archive")])
def test_a_file_that_is_not_a_model_is_named_so(not_models, name, looks):
    """Before: a TypeError traceback for .npy, 'holds pickled Python objects' for the others."""
    proc = fastmnist("predict", "--model", str(not_models / name), str(not_models / "x.png"))
    line = one_clear_line(proc, 2)
    assert f"{name} is not a fastmnist model file ({looks}" in line, line


def test_a_run_that_did_not_learn_warns_and_is_not_the_default(tmp_path, fashion_dir, capsys):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    run = ["train", "--dataset", "fashion-mnist", "--train-limit", "3000", "--iters", "300",
           "--seed", "0", "--quiet"]
    assert main(run + ["--save", str(good)]) == 0
    assert default_model() == str(good.resolve())
    assert main(run + ["--save", str(bad), "--lr", "100"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"WARNING: this run did not learn: test accuracy 0\.\d{4}, where always "
                     r"answering one class scores 0\.1000", err), err
    assert "(--lr 100) is likely too large" in err and "not made the default" in err
    assert default_model() == str(good.resolve())  # still the one that learned
    assert main(run + ["--save", str(good), "--lr", "100"]) == 0  # overwrites it with a bad one
    assert default_model() == "model.npz"  # so it is no longer remembered
    capsys.readouterr()
    photo = tmp_path / "digit.png"
    Image.new("L", (200, 200), 255).save(photo)
    main(["predict", str(photo), "--model", str(bad)])
    assert "did not learn (test accuracy 0." in capsys.readouterr().err


@pytest.mark.parametrize("epochs, limit, augment, steps, per_epoch", [
    # 500 digits and COPIES copies of each: 500 (COPIES + 1) rows in batches of 100
    ("1", 500, True, 5 * (COPIES + 1), 5 * (COPIES + 1)),
    ("0.5", 1000, False, 5, 10),
])
def test_an_epoch_is_a_pass_over_the_rows_trained_on(tmp_path, fashion_dir, capsys, epochs,
                                                     limit, augment, steps, per_epoch):
    hist = tmp_path / "h.json"
    assert main(["train", "--dataset", "fashion-mnist", "--train-limit", str(limit), "--epochs",
                 epochs, "--save", "", "--history", str(hist)] + ["--augment"] * augment) == 0
    h = History.from_json(hist)
    assert len(h.loss) == steps and h.config["iters"] == steps
    assert f"epoch {(steps - 1) / per_epoch:6.2f}  step {steps - 1:6d}" in capsys.readouterr().out


def test_help_shows_defaults_and_has_text_for_every_option():
    parser = build_parser()
    top = subprocess.run(command("--help"), capture_output=True, text=True, env=environment())
    assert "``" not in top.stdout and ":func:" not in top.stdout
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"fastmnist {name} {'/'.join(action.option_strings) or action.dest}"
    for name in ("train", "bench", "sweep"):
        assert "(default: " in commands[name].format_help().split("--dataset", 2)[2][:300]


def test_history_repr_is_short():
    h = History(loss=[0.5] * 10_000, eval_steps=[0, 9_999], train_acc=[0.1, 0.9],
                test_acc=[0.1, 0.88], train_seconds=3.0)
    assert repr(h) == "History(complete, 10000 steps, 2 evaluations, test acc 0.8800, 3.00 s)"


# -- CUDA installed, no GPU ---------------------------------------------------------------------------
def test_cuda_without_a_gpu_says_so_and_names_the_variable(tmp_path):
    """With CuPy installed and no driver: 'cudaErrorInsufficientDriver' and 'install the GPU
    extra' (already installed) before; without CuPy, how to install it."""
    cupy, reason = probe_cuda(0)
    if cupy is not None:
        pytest.skip("a GPU is usable here (tests/test_cuda.py runs it)")
    cupy = import_cupy()[0]
    installed = cupy is not None
    if installed and cupy.cuda.runtime.driverGetVersion() != 0:  # 0: CUDA found no driver
        pytest.skip(f"CUDA has a driver here but is not usable: {reason}")
    info = fastmnist("info")
    proc = fastmnist("gradcheck", env={"FASTMNIST_DEVICE": "cuda"})
    line = one_clear_line(proc, 2)
    assert "device 'cuda' was requested (from FASTMNIST_DEVICE=cuda)" in line
    assert "unset FASTMNIST_DEVICE" in line and "cudaError" not in info.stdout + line
    if installed:
        assert "no NVIDIA GPU or driver found" in line and "pip install" not in line
        assert "(CUDA not used: no NVIDIA GPU or driver found)" in info.stdout
    else:
        assert "CuPy is not installed" in line and "pip install 'fastmnist[cuda]'" in line


# -- bench -------------------------------------------------------------------------------------------
def test_bench_estimates_shows_progress_and_stops_on_ctrl_c(tmp_path, fashion_dir):
    no_torch = ("sys.modules['torch'] = None; "  # `import torch` fails as if not installed
                "from fastmnist.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen(command("bench", "--quick", "--out", str(tmp_path / "b"),
                                    code=no_torch),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment(), preexec_fn=sigint_as_usual)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("  round 1/2 fastmnist "):
            proc.send_signal(signal.SIGINT)
            break
    stdout, stderr = proc.communicate(timeout=60)
    assert seen[0].startswith("PyTorch is not installed: its rows are left out")
    assert re.match(r"estimated duration: about \d+ (s|min) \(2 interleaved rounds", seen[1])
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == \
        "fastmnist bench: interrupted during the article's workload (nothing written yet)"


def test_readme_tells_the_bench_default():
    readme = (ROOT / "README.md").read_text()
    repeat = build_parser()._subparsers._group_actions[0].choices["bench"].get_default("repeat")
    assert f"`fastmnist bench` runs {repeat} interleaved rounds" in readme


# -- data --------------------------------------------------------------------------------------------
def test_data_fetch_gives_one_line_per_mirror_and_verify_says_what_it_does(mirror, monkeypatch,
                                                                           capsys):
    import socket

    with socket.socket() as s:  # a port with nothing behind it: connections are refused
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    monkeypatch.setitem(D.REGISTRY, "tiny", D.Dataset("tiny", FILES, mirrors=(closed, mirror)))
    started = time.perf_counter()
    assert main(["data", "fetch", "tiny"]) == 1
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    for url in (closed, mirror):
        for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
            assert err.count(url + name) == 1, err
    assert f"{mirror}train-images-idx3-ubyte.gz: HTTP 404" in err
    assert f"{closed}train-images-idx3-ubyte.gz: cannot connect" in err
    assert seconds < 20  # a refused connection is not retried for seconds on end
    assert main(["data", "verify", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "`fastmnist data verify` reads local files only; `fastmnist data fetch tiny` " \
           "downloads" in err and "FASTMNIST_OFFLINE" not in err


# -- what was already right, kept right ----------------------------------------------------------------
def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels and holds none (what a bomb looks like
    before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + \
            zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_huge_images_are_refused_with_their_size(tmp_path):
    net = TwoLayerNet(seed=0, device="cpu")
    model = net.save(tmp_path / "m.npz", dataset="mnist")
    for side in (12_000, 20_000):
        (tmp_path / f"{side}.png").write_bytes(png_header(side, side))
    proc = fastmnist("predict", "--model", str(model), str(tmp_path / "12000.png"),
                     str(tmp_path / "20000.png"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "12000.png is too large: 12000 x 12000 pixels" in lines[0]
    assert "20000.png is too large: 400 megapixels" in lines[1] and "DecompressionBombWarning" not in proc.stderr

"""Sweeps: the same trials on a real local Ray and in-process, early stopping, failing trials,
refused specs, Ctrl-C, and the files a sweep writes. Real Fashion-MNIST, few rows and steps."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastmnist as fm
from fastmnist.space import Range, SweepSpecError, expand
from tests.conftest import ROOT, sigint_as_usual

ROWS = 3000  # training rows of the subset; the test set is the full 10,000
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def data(fashion_files, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        (x, t), test = fm.load_mnist(normalize=True, dataset="fashion-mnist",
                                     data_dir=fashion_files, download=False)
    return (x[:ROWS], t[:ROWS]), test


@pytest.fixture(scope="module")
def local_ray():
    """One real local Ray with 2 CPUs for the module (starting it takes seconds)."""
    try:
        import ray
        from ray import tune  # noqa: F401  (the Tune extra, not just Ray core)
    except ImportError as exc:
        pytest.fail(f"the sweep tests need Ray Tune ({exc}): pip install -e '.[dev]' "
                    "(dev includes the sweep extra)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def read_results(out):
    with open(out / "results.json", encoding="utf-8") as f:
        return json.load(f)


def test_grid_gives_the_same_accuracies_on_ray_and_locally(data, local_ray, tmp_path):
    space = {"hidden": [16, 32], "lr": [0.1, 0.5], "iters": 300}
    runs = {engine: fm.sweep(space, engine=engine, data=data, dataset="fashion-mnist",
                             out=tmp_path / engine, log=None)
            for engine in ("local", "ray")}
    local, ray = runs["local"], runs["ray"]
    assert [r["config"] for r in local.trials] == [r["config"] for r in ray.trials]
    assert len(local.trials) == 4
    assert all(r["status"] == "ok" for run in runs.values() for r in run.trials)
    acc_local = np.array([r["test_acc"] for r in local.trials])
    acc_ray = np.array([r["test_acc"] for r in ray.trials])
    # one BLAS thread per Ray trial sums in another order than the local run: float32 noise only
    np.testing.assert_allclose(acc_ray, acc_local, atol=1e-3)
    assert acc_local.max() - acc_local.min() > 0.05  # the configs do differ

    for engine, run in runs.items():
        out = tmp_path / engine
        saved = read_results(out)
        assert saved["engine"] == engine
        assert [t["test_acc"] for t in saved["trials"]] == [r["test_acc"] for r in run.trials]
        assert saved["best"]["test_acc"] == max(t["test_acc"] for t in saved["trials"])
        assert all(t["history"]["steps"][-1] == 299 for t in saved["trials"])
        net = fm.TwoLayerNet.load(out / "best.npz", device="cpu")
        assert net.sizes[1] == saved["best"]["config"]["hidden"]
        assert float(net.accuracy(*data[1])) == pytest.approx(saved["best"]["test_acc"], abs=1e-4)
        with open(out / "results.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert [float(r["test_acc"]) for r in rows] == [r["test_acc"] for r in run.trials]
        assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rank" in ray.table() and ray.best["trial"] == local.best["trial"]


def test_early_stop_ends_a_bad_trial_and_failures_are_recorded(data, local_ray):
    # the two good trials take both CPUs first, so the bad ones meet their scores at epoch 1
    space = {"lr": [0.5, 2.0, 1e-4, 1e30], "epochs": 8}
    result = fm.sweep(space, engine="ray", early_stop=True, data=data, log=None)
    by_lr = {r["config"]["lr"]: r for r in result.trials}
    slow = by_lr[1e-4]
    assert slow["status"] == "stopped" and slow["stopped_early"]
    assert slow["history"]["epochs"][-1] < 7  # 8 epochs: the last evaluation is at 7.97
    diverged = by_lr[1e30]
    assert diverged["status"] == "failed" and "diverged" in diverged["error"]
    assert result.best is not None and result.best["config"]["lr"] in (0.5, 2.0)
    assert result.model is not None


def test_trials_larger_than_the_machine_are_refused(data, local_ray):
    with pytest.raises(SweepSpecError, match="no Ray node can hold a trial of 1 CPUs and 1 GPUs"):
        fm.sweep({"iters": 10}, engine="ray", gpus_per_trial=1, data=data, log=None)
    assert local_ray.is_initialized()  # the test's own Ray is left alone


def test_failing_trials_are_recorded_and_the_sweep_goes_on(data):
    space = {"lr": [1e30, 0.5], "batch_size": [100, 5000], "sampling": "epoch", "iters": 60}
    result = fm.sweep(space, engine="local", data=data, log=None)
    status = [(r["config"]["lr"], r["config"]["batch_size"], r["status"]) for r in result.trials]
    assert status == [(1e30, 100, "failed"), (1e30, 5000, "failed"), (0.5, 100, "ok"),
                      (0.5, 5000, "failed")]
    assert result.trials[0]["error"].startswith("TrainingDiverged: training diverged")
    assert "larger than the 3000 training rows" in result.trials[1]["error"]
    assert result.best["trial"] == 2 and result.best_model().sizes == (784, 50, 10)


def test_random_search_draws_the_ranges_reproducibly():
    space = {"lr": "0.01:1:log", "hidden": "16:256:log", "seed": [0, 1]}
    configs = expand(space, samples=5)
    assert len(configs) == 10 and configs == expand(space, samples=5)
    assert configs != expand(space, samples=5, search_seed=1)
    lrs = np.array([c["lr"] for c in configs])
    assert ((lrs >= 0.01) & (lrs <= 1)).all() and len(set(lrs)) == 5
    assert all(isinstance(c["hidden"], int) and 16 <= c["hidden"] <= 256 for c in configs)
    assert [c["seed"] for c in configs[:2]] == [0, 1] and configs[0]["lr"] == configs[1]["lr"]
    assert expand({"lr": Range(0.1, 0.2)}, samples=1)[0]["iters"] == 10_000


@pytest.mark.parametrize("space, samples, message", [
    ({"hidden": []}, None, "empty list"),
    ({"hidden": "50,,100"}, None, "empty value"),
    ({"lr": "-1"}, None, "must be a positive number"),
    ({"lr": 0}, None, "must be a positive number"),
    ({"momentum": 0.9}, None, "unknown sweep parameter 'momentum'"),
    ({"lr": "0.01:x:log"}, None, "a range is LOW:HIGH"),
    ({"lr": "0.01:1:exp"}, 2, "a range is LOW:HIGH"),
    ({"lr": "1:0.1"}, 2, "LOW must be below HIGH"),
    ({"lr": "0:1:log"}, 2, "must be a positive number"),
    ({"hidden": "2.5:10"}, 2, "positive whole number"),
    ({"dtype": "float32:float64"}, 2, "takes a list of values, not a range"),
    ({"dtype": "float16"}, None, "must be one of float32, float64"),
    ({"augment": "maybe"}, None, "must be yes or no"),
    ({"lr": "0.01:1:log"}, None, "add --samples N"),
    ({"lr": [0.1, 0.2]}, 3, "no parameter has a range"),
    ({"iters": 100, "epochs": 2}, None, "not both"),
])
def test_bad_specs_are_refused_before_any_work(space, samples, message):
    with pytest.raises(SweepSpecError, match=message):
        fm.sweep(space, samples=samples, engine="local", dataset="no-such-dataset")


def test_engine_options_are_checked():
    with pytest.raises(SweepSpecError, match="--early-stop needs --engine ray"):
        fm.sweep({}, engine="local", early_stop=True)
    with pytest.raises(SweepSpecError, match="unknown engine 'spark'"):
        fm.sweep({}, engine="spark")
    with pytest.raises(SweepSpecError, match="needs --gpus-per-trial"):
        fm.sweep({}, engine="ray", device="cuda")


def run_cli(*args, code="from fastmnist.cli import main; sys.exit(main(sys.argv[1:]))",
            timeout=120):
    return subprocess.run([sys.executable, "-c", "import sys; " + code, "sweep", *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--lr", "-1"], "--lr '-1': must be a positive number"),
    (["--hidden", ""], "--hidden '': empty value"),
    (["--lr", "0.1:oops:log", "--samples", "3"], "a range is LOW:HIGH"),
    (["--momentum", "0.9"], "unrecognized arguments: --momentum"),
])
def test_cli_refuses_bad_specs_without_a_traceback(args, message):
    proc = run_cli(*args, "--engine", "local", "--offline")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_without_ray_runs_locally_and_names_the_extra(tmp_path, fashion_files):
    no_ray = ("sys.modules['ray'] = None; "  # `import ray` fails as if it were not installed
              "from fastmnist.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = run_cli("--engine", "ray", code=no_ray)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pip install 'fastmnist[sweep]'" in proc.stderr
    out = tmp_path / "out"
    proc = run_cli("--dataset", "fashion-mnist", "--data-dir", str(fashion_files), "--offline",
                   "--train-limit", "2000", "--iters", "50", "--hidden", "8,16",
                   "--out", str(out), code=no_ray)
    assert proc.returncode == 0, proc.stderr
    assert "local engine: 2 of 2 trials finished" in proc.stdout
    assert "again by hand: fastmnist train --dataset fashion-mnist" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["best.npz", "results.csv", "results.json",
                                                     "sweep.png"]


def test_ctrl_c_stops_the_sweep_and_keeps_finished_trials(tmp_path, fashion_files):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fastmnist.cli", "sweep", "--engine", "local", "--offline",
           "--dataset", "fashion-mnist", "--data-dir", str(fashion_files), "--iters", "4000",
           "--lr", "0.3,0.2,0.1,0.05", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, preexec_fn=sigint_as_usual)
    deadline = time.monotonic() + 90
    while not (out / "results.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # written once the first trial has finished
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stdout
    saved = read_results(out)
    assert saved["interrupted"] and saved["trials"][0]["status"] == "ok"
    assert saved["trials"][-1]["status"] == "interrupted"
    assert fm.TwoLayerNet.load(out / "best.npz", device="cpu").metadata["test_accuracy"] == \
        saved["best"]["test_acc"]


def test_import_fastmnist_leaves_ray_and_tqdm_alone():
    code = ("import sys, fastmnist; fastmnist.sweep; "
            "print(sorted(m for m in ('ray', 'tqdm') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert proc.stdout.strip() == "[]", proc.stderr


@pytest.mark.parametrize("overlap", [False, True])
def test_train_reports_every_evaluation(data, overlap):
    calls = []
    net = fm.TwoLayerNet(784, 16, 10, device="cpu", seed=0)
    h = fm.train(net, *data[0], *data[1], iters=95, seed=0, quiet=True, overlap=overlap,
                 on_eval=lambda *a: calls.append(a))
    assert calls == list(zip(h.eval_steps, h.train_acc, h.test_acc))
    assert [c[0] for c in calls] == [0, 30, 60, 90, 94]


def test_progress_bar_only_when_asked_or_on_a_terminal(data, capsys):
    (x, t), _ = data
    fm.train(fm.TwoLayerNet(784, 8, 10, device="cpu", seed=0), x, t, iters=20, log=None)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    fm.train(fm.TwoLayerNet(784, 8, 10, device="cpu", seed=0), x, t, iters=20, log=None,
             progress=True)
    assert "/20 [" in capsys.readouterr().err


def test_sweep_benchmark_runs(fashion_dir, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_sweep

    out = bench_sweep.main(["--data-dir", str(fashion_dir), "--train-limit", "1000",
                            "--trials", "2", "--iters", "30", "--engines", "local",
                            "--json", str(tmp_path / "s.json")])
    (row,) = out["rows"]
    assert row["engine"] == "local" and row["trials"] == 2 and row["trials_per_minute"] > 0
    assert json.loads((tmp_path / "s.json").read_text())["iters"] == 30

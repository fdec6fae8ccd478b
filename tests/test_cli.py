import json
import subprocess
import sys

import numpy as np
import pytest

from fastmnist import History, TwoLayerNet
from fastmnist.cli import main
from tests.conftest import FASHION_DIR


def test_train_end_to_end_writes_model_plot_and_history(tmp_path, fashion_dir, capsys):
    model, plot, hist = tmp_path / "m.npz", tmp_path / "curves.png", tmp_path / "h.json"
    code = main(["train", "--dataset", "fashion-mnist", "--iters", "300", "--train-limit", "3000",
                 "--seed", "1", "--device", "cpu", "--save", str(model), "--plot", str(plot),
                 "--history", str(hist)])
    assert code == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "model saved" in out
    net = TwoLayerNet.load(model, device="cpu")
    assert net.metadata["dataset"] == "fashion-mnist" and 0.5 < net.metadata["test_accuracy"] <= 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    h = History.from_json(hist)
    assert len(h.loss) == 300 and h.eval_steps[-1] == 299
    from fastmnist.cli import default_model

    assert default_model() == str(model.resolve())  # `fastmnist predict` finds it by itself


@pytest.mark.parametrize("flag, overlapped", [("--overlap", True), ("--no-overlap", False)])
def test_train_overlap_switch(tmp_path, fashion_dir, capsys, flag, overlapped):
    hist = tmp_path / "h.json"
    assert main(["train", "--dataset", "fashion-mnist", "--train-limit", "500", "--iters", "20",
                 "--device", "cpu", "--save", "", "--history", str(hist), flag]) == 0
    assert History.from_json(hist).config["overlap"] is overlapped
    assert ("evaluation alongside" in capsys.readouterr().out) is overlapped


def test_train_with_augmentation(tmp_path, fashion_dir, capsys):
    model = tmp_path / "aug.npz"
    assert main(["train", "--dataset", "fashion-mnist", "--train-limit", "500", "--augment",
                 "--iters", "30", "--device", "cpu", "--save", str(model)]) == 0
    from fastmnist.augment import COPIES

    assert f"training on {500 * (COPIES + 1)} rows" in capsys.readouterr().out
    assert TwoLayerNet.load(model).metadata["augment"] is True


def test_dry_run_trains_nothing(tmp_path, fashion_dir, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", "--dataset", "fashion-mnist", "--dry-run", "--save", str(model)]) == 0
    assert "dry run" in capsys.readouterr().out and not model.exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "--batch-size", "0"], "positive whole number"),
    (["train", "--lr", "-1"], "positive number"),
    (["train", "--dataset", "cifar"], "invalid choice"),
    (["train", "--iters", "5", "--epochs", "2"], "not allowed with"),
])
def test_nonsense_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_missing_data_and_unusable_device_are_errors_not_tracebacks(tmp_path, capsys):
    assert main(["train", "--offline", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "could not load the mnist train set" in err and "--data-dir" in err
    assert main(["gradcheck", "--device", "cuda:7"]) == 2
    assert "cuda:7" in capsys.readouterr().err


def test_gradcheck_and_info(capsys):
    assert main(["gradcheck", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    errors = [float(line.split(":")[1]) for line in out.splitlines() if line.strip()[:2] in ("W1", "b1", "W2", "b2")]
    assert len(errors) == 4 and max(errors) < 1e-6 and "PASS" in out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "NumPy" in out and "device used by default" in out
    from fastmnist.steps import compiled

    built = compiled.library_file() and compiled.numpy_gemm_library()
    assert ("CPU training step: compiled" if built else "CPU training step: NumPy") in out
    from fastmnist.steps.threaded import thread_budget

    large = ("the serial step" if thread_budget() < 2 else
             "the tiled compiled step" if built else "the NumPy step threaded")
    assert f"large batches: {large}" in out


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "fastmnist.cli", "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--dataset", "--data-dir", "--epochs", "--batch-size", "--lr", "--hidden",
                 "--device", "--dtype", "--seed", "--save", "--plot", "--history", "--quiet",
                 "--dry-run"):
        assert flag in out


def test_data_commands(fashion_dir, isolated_cache, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist" in out and "ossci-datasets" in out
    assert main(["data", "verify", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist train: 60000 images verified" in out
    assert main(["data", "path", "fashion-mnist"]) == 0
    assert capsys.readouterr().out.strip() == str(isolated_cache / "fashion-mnist")
    assert main(["data", "verify", "mnist"]) == 1  # the MNIST training set is not on this machine
    assert "could not load the mnist train set" in capsys.readouterr().err


def test_import_leaves_scipy_and_matplotlib_until_needed():
    code = ("import sys, fastmnist\n"
            "assert 'scipy' not in sys.modules and 'matplotlib' not in sys.modules\n"
            "from fastmnist import plot_history, predict_image, preprocess_image\n"
            "assert callable(plot_history) and callable(predict_image) and 'scipy' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import fastmnist

        fastmnist.nope

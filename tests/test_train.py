import csv
import json
import warnings

import numpy as np
import pytest

from fastmnist import History, TrainingDiverged, TwoLayerNet, load_mnist, to_numpy, train
from fastmnist.train import BatchSampler
from fastmnist.backend import get_backend
from tests.conftest import assert_agree, assert_same_accuracy, small_problem

xps = pytest.importorskip("array_api_strict")


def run(seed=0, iters=60, fast=None, device="cpu", dtype="float32", **kw):
    x, t = small_problem(n=200, d=784, seed=1)
    net = TwoLayerNet(seed=seed, device=device, dtype=dtype)
    h = train(net, x.astype(np.float32), t, x[:50], t[:50], iters=iters, batch_size=20,
              seed=seed, quiet=True, fast=fast, **kw)
    return net, h


def test_same_seed_same_history_and_weights():
    (a, ha), (b, hb) = run(seed=4), run(seed=4)
    assert ha.loss == hb.loss and ha.train_acc == hb.train_acc
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    _, hc = run(seed=5)
    assert hc.loss != ha.loss


def test_fast_training_matches_plain_training():
    quick, hf = run(seed=2, iters=300, fast=True, learning_rate=0.5)
    plain, hp = run(seed=2, iters=300, fast=False, learning_rate=0.5)
    assert hf.config["step"] in ("CpuStep", "CompiledStep") and hp.config["step"] == "PlainStep"
    assert_agree(quick.params, plain.params, steps=300, batch=20)
    assert_agree({"loss": hf.loss}, {"loss": hp.loss}, steps=300, batch=20)
    x, t = small_problem(n=200, d=784, seed=1)
    assert len(hf.train_acc) == len(hp.train_acc)
    # each run's recorded score is its own network's (to the rounding of one forward pass)
    for net, h in ((quick, hf), (plain, hp)):
        assert_same_accuracy(h.train_acc[-1], net.accuracy(x, t), net, x, steps=1, batch=20)


def test_training_under_array_api_strict_agrees_with_numpy():
    ref, href = run(seed=3, iters=30, dtype="float64", fast=False)
    strict, hstrict = run(seed=3, iters=30, dtype="float64", device=xps)
    assert_agree({k: to_numpy(v) for k, v in strict.params.items()}, ref.params, steps=30,
                 batch=20, dtype="float64")
    assert_agree({"loss": hstrict.loss}, {"loss": href.loss}, steps=30, batch=20, dtype="float64")


def test_uint8_images_train_like_their_float_versions():
    x, t = small_problem(n=200, d=784, seed=1)
    pixels = (x * 255).round().astype(np.uint8)
    scaled = pixels.astype(np.float32) / 255
    for fast in (True, False):
        a, b = TwoLayerNet(seed=0, device="cpu"), TwoLayerNet(seed=0, device="cpu")
        ha = train(a, pixels, t, pixels[:50], t[:50], iters=50, batch_size=20, seed=0, quiet=True, fast=fast)
        hb = train(b, scaled, t, scaled[:50], t[:50], iters=50, batch_size=20, seed=0, quiet=True, fast=fast)
        assert_agree(a.params, b.params, steps=50, batch=20)
        for net, h in ((a, ha), (b, hb)):
            assert_same_accuracy(h.test_acc[-1], net.accuracy(scaled[:50], t[:50]), net,
                                 scaled[:50], steps=1, batch=20)


def test_loss_falls_and_evaluations_land_on_schedule():
    _, h = run(iters=100)
    assert h.eval_steps == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]  # 200 rows / 20 = 10 per epoch
    assert len(h.loss) == 100 and len(h.train_acc) == len(h.test_acc) == 11
    assert np.mean(h.loss[-10:]) < np.mean(h.loss[:10])
    assert h.train_seconds > 0 and h.eval_seconds > 0


def test_epoch_sampling_visits_every_row_once_per_epoch():
    sampler = BatchSampler(get_backend("cpu"), n=100, batch_size=10, mode="epoch", seed=0)
    first = np.concatenate([sampler(i) for i in range(10)])
    second = np.concatenate([sampler(i) for i in range(10, 20)])
    assert sorted(first) == list(range(100)) == sorted(second)
    assert not np.array_equal(first, second)


def test_divergence_stops_with_a_message():
    with pytest.raises(TrainingDiverged, match="diverged.*step \\d+.*smaller learning rate"):
        run(iters=50, learning_rate=1e38)


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "batch_size"), (dict(learning_rate=-0.1), "learning_rate"),
    (dict(iters=0), "iters"), (dict(sampling="sometimes"), "sampling"),
    (dict(learning_rate=float("nan")), "learning_rate"),
])
def test_nonsense_hyperparameters(kw, match):
    x, t = small_problem(n=20, d=784)
    with pytest.raises(ValueError, match=match):
        train(TwoLayerNet(device="cpu"), x, t, **{"quiet": True, **kw})


def test_bad_data_is_refused_before_training():
    x, t = small_problem(n=20, d=784)
    net = TwoLayerNet(device="cpu")
    with pytest.raises(ValueError, match="0-9"):
        train(net, x, t + 5, quiet=True)
    with pytest.raises(ValueError, match="expects \\(N, 784\\)"):
        train(net, x[:, :100], t, quiet=True)
    with pytest.raises(ValueError, match="labels have shape"):
        train(net, x, t[:5], quiet=True)
    for value in (np.nan, np.inf, -np.inf):
        bad = x.copy()
        bad[3, 3] = value
        with pytest.raises(ValueError, match="x_train contains NaN or infinite"):
            train(net, bad, t, quiet=True)
    huge = x * np.float32(1e30)  # finite, but its sum of squares overflows: looked at closely
    with warnings.catch_warnings():  # and its updates underflow alike in every step: no warning
        warnings.simplefilter("error")
        assert len(train(net, huge, t, iters=2, quiet=True).loss) == 2


def test_history_exports(tmp_path):
    _, h = run(iters=25)
    h.save(tmp_path / "h.json")
    h.save(tmp_path / "h.csv")
    back = History.from_json(tmp_path / "h.json")
    assert back.loss == h.loss and back.test_acc == h.test_acc and back.config == h.config
    assert json.loads((tmp_path / "h.json").read_text())["total_seconds"] == pytest.approx(h.total_seconds)
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert len(rows) == 25 and float(rows[7]["loss"]) == pytest.approx(h.loss[7])
    assert float(rows[10]["train_acc"]) == h.train_acc[1] and rows[11]["train_acc"] == ""


def test_one_line_per_evaluation_unless_quiet():
    lines = []
    x, t = small_problem(n=100, d=784)
    train(TwoLayerNet(device="cpu", seed=0), x, t, iters=30, batch_size=10, log=lines.append,
          progress=False)
    assert len(lines) == 4 and all(line.startswith("epoch") for line in lines)


def test_article_settings_on_real_mnist_digits(mnist_test):
    images, labels = mnist_test
    x = images.reshape(-1, 784).astype(np.float32) / 255
    net = TwoLayerNet(784, 50, 10, seed=0, device="cpu")
    h = train(net, x[:8000], labels[:8000], x[8000:], labels[8000:], iters=10_000,
              batch_size=100, learning_rate=0.1, seed=0, quiet=True)
    print(f"MNIST 8000/2000: test accuracy {h.test_acc[-1]:.4f}, train {h.train_seconds:.2f} s")
    assert h.test_acc[-1] >= 0.90


@pytest.mark.slow
def test_article_workload_on_full_fashion_mnist(fashion_dir):
    (x, t), (xt, tt) = load_mnist(normalize=True, dataset="fashion-mnist", download=False)
    net = TwoLayerNet(784, 50, 10, seed=0, device="cpu")
    h = train(net, x, t, xt, tt, iters=10_000, seed=0, quiet=True)
    print(f"Fashion-MNIST: test accuracy {h.test_acc[-1]:.4f}, "
          f"train {h.train_seconds:.2f} s + eval {h.eval_seconds:.2f} s")
    assert h.test_acc[-1] >= 0.84


def test_large_batches_draw_their_indices_in_small_blocks():
    from fastmnist.train import INDEX_ROWS

    sampler = BatchSampler(get_backend("cpu"), n=60_000, batch_size=60_000, mode="replacement", seed=3)
    first = sampler(0)
    assert sampler.block.shape == (1, 60_000)  # not 1,000 x 60,000 indices before the first step
    second = sampler(1)
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(first, rng.integers(0, 60_000, size=(1, 60_000))[0])
    np.testing.assert_array_equal(second, rng.integers(0, 60_000, size=(1, 60_000))[0])
    small = BatchSampler(get_backend("cpu"), n=500, batch_size=100, mode="replacement", seed=0)
    small(0)
    assert small.block.shape == (1000, 100) and 1000 * 100 <= INDEX_ROWS

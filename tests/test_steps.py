"""The three steps compute the same SGD: the tuned CPU step and the GPU's buffered base step
against the plain array-API reference, on the same batches, within float rounding (the bounds
of fastmnist.agreement: what any BLAS kernel and thread count may give, not one machine's luck)."""
import numpy as np
import pytest

from fastmnist import TwoLayerNet
from fastmnist.steps.cpu import CpuStep
from fastmnist.steps.threaded import ThreadedStep
from fastmnist.network import one_hot
from fastmnist.steps import BufferedCount, BufferedStep, PlainStep
from tests.conftest import assert_agree, small_problem

STEPS, BATCH, LR = 300, 20, 0.5
STEPS_MADE = []  # compiled steps, to check that they did not fall back to NumPy


def make(kind, net, x, t, lr=LR):
    if kind == "cpu":
        return CpuStep(net.params, x, t, lr, BATCH)
    if kind in ("compiled", "tiled"):
        from fastmnist.steps import compiled
        from fastmnist.steps.tiled import TiledStep

        if compiled.library_file() is None:  # test_compiled.py checks it is built where it can be
            pytest.skip("the compiled step was not built here (no C compiler at install)")
        if kind == "tiled":  # 3 threads: blocks of 6, 7 and 7 rows, in tiles of 4 rows
            step = TiledStep(net.params, x, t, lr, BATCH, threads=3, tile=4)
        else:
            step = compiled.CompiledStep(net.params, x, t, lr, BATCH)
        STEPS_MADE.append(step)
        return step
    if kind == "threaded":  # 3 threads: blocks of 6, 7 and 7 rows
        return ThreadedStep(net.params, x, t, lr, BATCH, threads=3)
    if kind == "buffered":
        return BufferedStep(net.params, x, one_hot(t, 10, net.dtype), lr, BATCH, np)
    return PlainStep(net.params, x, one_hot(t, 10, net.dtype), lr)


def run(kind, x, t, dtype="float32", lr=LR):
    net = TwoLayerNet(seed=2, device="cpu", dtype=dtype)
    xd, td = net.as_input(x, keep_uint8=True), net.as_labels(t, x.shape[0])
    step = make(kind, net, xd, td, lr)
    rows = np.random.default_rng(0).integers(0, x.shape[0], (STEPS, BATCH))
    losses = np.zeros((STEPS, BATCH), net.dtype)
    with np.errstate(all="ignore"):
        for i in range(STEPS):
            step(rows[i], losses, i)
    return net, losses


@pytest.mark.parametrize("kind", ["cpu", "buffered", "threaded", "compiled", "tiled"])
def test_fast_steps_match_the_plain_step(kind):
    x, t = small_problem(n=200, d=784, seed=1)
    x = x.astype(np.float32)
    STEPS_MADE.clear()
    fast, fast_losses = run(kind, x, t)
    assert all(s.compiled for s in STEPS_MADE)  # it stepped compiled, not NumPy
    plain, plain_losses = run("plain", x, t)
    assert_agree(fast.params, plain.params, steps=STEPS, batch=BATCH)
    # the plain step stores each batch's mean over its row; the fast ones per-row losses
    assert_agree({"loss": fast_losses.mean(axis=1)}, {"loss": plain_losses[:, 0]}, steps=STEPS,
                 batch=BATCH)
    assert np.abs(fast.params["W1"] - TwoLayerNet(seed=2).params["W1"]).max() > 1e-3  # it moved


def test_the_bound_catches_a_step_that_is_slightly_wrong():
    x, t = small_problem(n=200, d=784, seed=1)
    x = x.astype(np.float32)
    plain, _ = run("plain", x, t)
    off, _ = run("cpu", x, t, lr=LR * 1.01)  # a 1% error: far more than rounding
    with pytest.raises(AssertionError, match="W1 differs by"):
        assert_agree(off.params, plain.params, steps=STEPS, batch=BATCH)


@pytest.mark.parametrize("kind", ["cpu", "threaded", "compiled", "tiled"])
def test_cpu_steps_in_float64_match_to_double_precision(kind):
    x, t = small_problem(n=200, d=784, seed=1)
    fast, fast_losses = run(kind, x, t, "float64")
    plain, plain_losses = run("plain", x, t, "float64")
    assert_agree(fast.params, plain.params, steps=STEPS, batch=BATCH, dtype="float64")
    for k in plain.params:
        np.testing.assert_allclose(fast.params[k], plain.params[k], rtol=0, atol=1e-10)
    assert_agree({"loss": fast_losses.mean(axis=1)}, {"loss": plain_losses[:, 0]}, steps=STEPS,
                 batch=BATCH, dtype="float64")


@pytest.mark.parametrize("kind", ["cpu", "buffered", "threaded", "compiled", "tiled"])
def test_uint8_batches_are_scaled_as_they_are_gathered(kind):
    x, t = small_problem(n=200, d=784, seed=1)
    pixels = (x * 255).round().astype(np.uint8)
    a, _ = run(kind, pixels, t)
    b, _ = run(kind, pixels.astype(np.float32) / 255, t)
    # pixel * (1/255) and pixel / 255 differ in the last bit: float rounding, which the bound
    # allows for; a batch left unscaled would be off by 255x
    assert_agree(a.params, b.params, steps=STEPS, batch=BATCH)


def test_cpu_step_keeps_params_usable_views():
    x, t = small_problem(n=50, d=784)
    net = TwoLayerNet(seed=0, device="cpu")
    step = CpuStep(net.params, net.as_input(x), net.as_labels(t, 50), 0.1, 10)
    step(np.arange(10), np.zeros((1, 10), np.float32), 0)
    assert {k: v.shape for k, v in net.params.items()} == {
        "W1": (784, 50), "b1": (50,), "W2": (50, 10), "b2": (10,)}
    assert all(np.isfinite(v).all() for v in net.params.values())
    np.testing.assert_allclose(net.predict(x).sum(axis=1), 1.0, rtol=1e-5)


def test_chunked_count_matches_the_network():
    x, t = small_problem(n=257, d=784, seed=3)
    net = TwoLayerNet(seed=1, weight_init_std=0.3, device="cpu")
    xd, td = net.as_input(x), net.as_labels(t, 257)
    expected = int(np.sum(np.argmax(net.predict(xd), axis=1) == td))
    assert int(BufferedCount(net.params, np, chunk=50)(xd, td)) == expected
    assert sum(int(c) for c in BufferedCount(net.params, np, chunk=100).chunks(xd, td)) == expected

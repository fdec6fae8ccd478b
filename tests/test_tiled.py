"""The compiled large-batch step (each thread its block of rows in one C call): train() takes it
for large batches where the compiled step is available, and the threaded NumPy step where it is
not, is switched off, or goes wrong on its first step; BLAS's thread setting is left as found.
Its numbers against the plain step are in tests/test_steps.py."""
import sys

import numpy as np
import pytest

from fastmnist import TwoLayerNet, train
from fastmnist.steps import compiled, tiled
from fastmnist.steps.threaded import THREADED_MIN_BATCH, ThreadedStep
from fastmnist.steps.tiled import TiledStep
from tests.conftest import assert_agree, small_problem

BATCH = THREADED_MIN_BATCH


@pytest.fixture(autouse=True)
def need_compiled():
    if compiled.why_unavailable() is not None:
        pytest.skip("the compiled step is not available here (tests/test_compiled.py says why)")


def blas_threads() -> int:
    return tiled.grads_kernel("float32").get_threads()


def run(monkeypatch, threads=2, dtype="float32", **kw):
    x, t = small_problem(n=6_000, d=784, seed=1)
    training = sys.modules["fastmnist.train"]  # the module; fastmnist.train is the function
    monkeypatch.setattr(training, "thread_budget", lambda: threads)
    net = TwoLayerNet(seed=0, device="cpu", dtype=dtype)
    h = train(net, x.astype(dtype), t, iters=4, batch_size=BATCH, seed=0, quiet=True, **kw)
    return net, h


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_train_takes_it_for_large_batches_and_not_when_switched_off(monkeypatch, dtype):
    monkeypatch.delenv("FASTMNIST_COMPILED", raising=False)
    before = blas_threads()
    net, h = run(monkeypatch, dtype=dtype)
    assert h.config["step"] == "TiledStep" and blas_threads() == before
    monkeypatch.setenv("FASTMNIST_COMPILED", "0")
    ref, href = run(monkeypatch, dtype=dtype)
    assert href.config["step"] == "ThreadedStep"
    assert_agree(net.params, ref.params, steps=4, batch=BATCH, dtype=dtype)
    monkeypatch.delenv("FASTMNIST_COMPILED")
    _, serial = run(monkeypatch, threads=1, dtype=dtype)  # one core: the serial compiled step
    assert serial.config["step"] == "CompiledStep"


def test_uint8_pixels_are_scaled_as_they_are_gathered():
    x, t = small_problem(n=3_000, d=784, seed=2)
    pixels = (x * 255).round().astype(np.uint8)
    rows = np.random.default_rng(0).integers(0, 3_000, (3, 600))
    params = []
    for data in (pixels, pixels.astype(np.float32) / 255):
        net = TwoLayerNet(seed=0, device="cpu")
        step = TiledStep(net.params, data, t, 0.5, 600, threads=2, tile=64)
        losses = np.zeros((3, 600), np.float32)
        for i in range(3):
            step(rows[i], losses, i)
        assert step.compiled
        step.close()
        params.append(net.params)
    assert_agree(params[0], params[1], steps=3, batch=600)


@pytest.mark.parametrize("fault", ["disagrees", "raises"])
def test_a_tiled_step_that_goes_wrong_on_its_first_step_is_dropped(monkeypatch, fault):
    real = tiled.grads_kernel("float32")
    holder = {}

    def off(*args):
        if fault == "raises":
            raise OSError("a broken library")
        real.step.call(*args)
        holder["gW1"] *= 1.01  # 1% off: far beyond rounding

    monkeypatch.setattr(tiled, "grads_kernel",
                        lambda name: real._replace(step=real.step._replace(call=off)))
    x, t = small_problem(n=2_000, d=784, seed=1)
    x = x.astype(np.float32)
    rows = np.random.default_rng(0).integers(0, 2_000, (5, 500))
    before = blas_threads()
    results = []
    for make in (lambda p: TiledStep(p, x, t, 0.5, 500, threads=2),
                 lambda p: ThreadedStep(p, x, t, 0.5, 500, threads=2)):
        net = TwoLayerNet(seed=0, device="cpu")
        step = make(net.params)
        holder["gW1"] = step.gW1
        losses = np.zeros((5, 500), np.float32)
        if isinstance(step, TiledStep):
            why = "gradients of 500 rows differ from NumPy" if fault == "disagrees" else "broken"
            with pytest.warns(RuntimeWarning, match=why):
                step(rows[0], losses, 0)
            assert not step.compiled and blas_threads() == before
        else:
            step(rows[0], losses, 0)
        for i in range(1, 5):
            step(rows[i], losses, i)
        step.close()
        results.append((net.params, losses))
    (got, got_losses), (expected, expected_losses) = results
    for k in expected:  # the threaded NumPy step took every step, the first one included
        np.testing.assert_array_equal(got[k], expected[k])
    np.testing.assert_array_equal(got_losses, expected_losses)


def test_a_training_set_it_cannot_gather_is_refused_saying_why():
    """An OSError, which make_step takes as 'unavailable': the threaded NumPy step then runs."""
    x, t = small_problem(n=1_000, d=784, seed=1)
    net = TwoLayerNet(seed=0, device="cpu")
    with pytest.raises(OSError, match="not C-ordered"):
        TiledStep(net.params, np.asfortranarray(x.astype(np.float32)), t, 0.1, 500, threads=2)
    with pytest.raises(OSError, match="int16"):
        TiledStep(net.params, x.astype(np.int16), t, 0.1, 500, threads=2)


@pytest.mark.parametrize("threads,rows", [(1, 300), (2, 1_001), (3, 7)])
def test_the_tiled_count_is_the_buffered_count(threads, rows):
    from fastmnist.agreement import terms_per_step, tolerance, uncertain_rows
    from fastmnist.steps import BufferedCount
    from fastmnist.steps.threaded import Team
    from fastmnist.steps.tiled import TiledCount

    x, t = small_problem(n=rows, d=784, seed=4)
    net = TwoLayerNet(seed=1, weight_init_std=0.3, device="cpu")
    team = Team(threads)
    count = TiledCount(net.params, team, tile=64)
    tol = tolerance("float32", terms_per_step((784, 50, 10), 1))
    floats, pixels = x.astype(np.float32), (x * 255).round().astype(np.uint8)
    for data in (floats, pixels, None):
        if data is None:
            net.params["W2"] *= -1  # it reads the weights as they are at each call
            data = floats
        expected = int(BufferedCount(net.params, np)(data, t))
        assert abs(int(count(data, t)) - expected) <= uncertain_rows(net.params, data, tol)
    team.close()


@pytest.mark.filterwarnings("error")
def test_large_batch_training_scores_with_the_tiled_count(monkeypatch):
    """The scores of the run: the tiled count, checked on its first call against the buffered
    one (a disagreement would warn, which this test makes an error)."""
    import fastmnist.steps.tiled as tiled_module

    calls = []
    real = tiled_module.TiledCount.__call__
    monkeypatch.setattr(tiled_module.TiledCount, "__call__",
                        lambda self, x, t: calls.append(x.shape[0]) or real(self, x, t))
    net, h = run(monkeypatch)
    assert h.config["step"] == "TiledStep" and calls
    x, t = small_problem(n=6_000, d=784, seed=1)
    plain = int(net.count_correct(x.astype(np.float32), t)) / 6_000
    assert h.train_acc[-1] == pytest.approx(plain, abs=2e-3)

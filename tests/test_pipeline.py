"""Overlapped training (a helper thread gathers batches and scores the sets) gives the serial
loop's results, hands errors from either side to the other, and leaves no thread behind."""
import threading

import numpy as np
import pytest

from fastmnist import TrainingDiverged, TwoLayerNet, train
from fastmnist.steps.pipeline import GROUP, SLOTS, single_threaded_blas
from tests.conftest import small_problem

threadpoolctl = pytest.importorskip("threadpoolctl")


def run(overlap, iters=157, n=300, batch=20, **kw):
    x, t = small_problem(n=n, d=784, seed=1)
    net = TwoLayerNet(seed=0, device="cpu")
    h = train(net, x.astype(np.float32), t, x[:70], t[:70], iters=iters, batch_size=batch,
              seed=0, quiet=True, overlap=overlap, **kw)
    return net, h


def helpers():
    return [t for t in threading.enumerate() if t.name == "fastmnist-pipeline"]


@pytest.mark.parametrize("iters", [1, 3, GROUP + 1, SLOTS + 5, 157])
def test_overlapped_training_equals_serial_training(iters):
    a, ha = run(True, iters)
    # the overlapped run holds BLAS to one thread; so does this serial one, so that both sum in
    # the same order and must agree exactly (two threads would differ by float rounding only,
    # which tests/test_steps.py bounds)
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        b, hb = run(False, iters)
    assert ha.config["overlap"] is True and hb.config["overlap"] is False
    assert ha.eval_steps == hb.eval_steps and len(ha.loss) == iters
    assert ha.train_acc == hb.train_acc and ha.test_acc == hb.test_acc
    assert ha.loss == hb.loss
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not helpers()


def test_auto_overlaps_small_batches_on_two_cores_only(monkeypatch):
    import fastmnist.steps.pipeline as pipeline

    monkeypatch.setattr(pipeline, "usable_cores", lambda: 2)
    assert run(None, 20)[1].config["overlap"] is True
    assert run(None, 20, batch=pipeline.OVERLAP_MAX_BATCH + 1, n=2000)[1].config["overlap"] is False
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 1)
    assert run(None, 20)[1].config["overlap"] is False


def test_blas_is_held_to_one_thread_inside_and_restored_after():
    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    with single_threaded_blas() as limited:
        assert limited and set(blas_threads()) == {1}
    assert blas_threads() == before


def test_divergence_stops_the_helper_too():
    with pytest.raises(TrainingDiverged, match="diverged"):
        run(True, 200, learning_rate=1e38)
    assert not helpers()


@pytest.mark.parametrize("where", ["gathering", "scoring"])
def test_a_failing_helper_is_reported_not_hung(monkeypatch, where):
    from fastmnist.steps.cpu import CpuBatch
    from fastmnist.steps import BufferedCount

    def broken(*args):
        raise MemoryError(f"no room for the {where}")

    if where == "gathering":
        monkeypatch.setattr(CpuBatch, "fill", broken)
    else:
        monkeypatch.setattr(BufferedCount, "chunks", broken)
    with pytest.raises(RuntimeError, match="helper thread .* failed: MemoryError.*overlap=False") as info:
        run(True, 50)
    assert isinstance(info.value.__cause__, MemoryError)
    assert not helpers()


def test_overlap_is_refused_where_it_cannot_run():
    with pytest.raises(ValueError, match="overlap=True is for the NumPy step on the CPU"):
        run(True, 5, fast=False)


def test_logged_lines_arrive_in_order_with_their_accuracies():
    lines = []
    x, t = small_problem(n=100, d=784)
    h = train(TwoLayerNet(device="cpu", seed=0), x, t, x[:30], t[:30], iters=60, batch_size=10,
              log=lines.append, progress=False, overlap=True)
    assert [int(line.split()[3]) for line in lines] == h.eval_steps == [0, 10, 20, 30, 40, 50, 59]
    assert all(f"train acc {a:.4f}" in line for line, a in zip(lines, h.train_acc))

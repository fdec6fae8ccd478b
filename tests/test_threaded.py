"""The threaded large-batch step: exactly the serial CPU step's numbers, whatever the threads
and tiles; chosen by train() only where two or more cores are free to it; errors from any of its
threads reach the caller; no thread outlives it."""
import gc
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fastmnist.steps.threaded as threaded
from fastmnist import TwoLayerNet, train
from fastmnist.steps.cpu import CpuStep
from fastmnist.steps.threaded import Team, ThreadedStep, thread_budget
from tests.conftest import small_problem

ROOT = Path(__file__).resolve().parents[1]
SERIAL = ("CpuStep", "CompiledStep")  # the latter where it was built
THREADED = ("ThreadedStep", "TiledStep")  # likewise


def tile_threads():
    return {t for t in threading.enumerate() if t.name == "fastmnist-tile"}


def threads_back_to(before: set) -> bool:
    """Whether the tile threads are back to ``before`` within a second of a collection."""
    gc.collect()
    for _ in range(100):
        if tile_threads() <= before:
            return True
        threading.Event().wait(0.01)
    return False


@pytest.fixture(autouse=True)
def no_threads_left():
    """Every team a test starts is stopped by its end (closed, or dropped and collected)."""
    before = tile_threads()
    yield
    assert threads_back_to(before)


def steps(make, x, t, dtype, batch, n_steps=40):
    net = TwoLayerNet(784, 32, 10, seed=3, device="cpu", dtype=dtype)
    step = make(net.params, net.as_input(x, keep_uint8=True), net.as_labels(t, x.shape[0]), 0.3, batch)
    rows = np.random.default_rng(1).integers(0, x.shape[0], (n_steps, batch))
    losses = np.zeros((n_steps, batch), net.dtype)
    with np.errstate(all="ignore"):
        for i in range(n_steps):
            step(rows[i], losses, i)
    if hasattr(step, "close"):
        step.close()
    return net.params, losses


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads,batch,tile", [(2, 64, 1 << 18), (3, 50, 200), (4, 9, 33), (4, 5, 1 << 18)])
def test_threaded_step_is_the_serial_step_exactly(monkeypatch, dtype, threads, batch, tile):
    monkeypatch.setattr(threaded, "TILE_ITEMS", tile)  # small tiles: several per block
    x, t = small_problem(n=300, d=784, seed=2)
    pixels = (x * 255).astype(np.uint8)
    for data in (x.astype(dtype), pixels):
        serial, serial_losses = steps(CpuStep, data, t, dtype, batch)
        split, split_losses = steps(lambda *a: ThreadedStep(*a, threads=threads), data, t, dtype,
                                    batch)
        for k in serial:  # element-wise passes and per-column sums: no rounding may differ
            np.testing.assert_array_equal(split[k], serial[k])
        np.testing.assert_array_equal(split_losses, serial_losses)


def test_train_threads_large_batches_only_and_draws_the_same_batches(monkeypatch):
    monkeypatch.setenv("FASTMNIST_COMPILED", "0")  # the serial step: exactly CpuStep
    before = tile_threads()
    x, t = small_problem(n=500, d=784, seed=1)
    x = x.astype(np.float32)

    def run(**kw):
        net = TwoLayerNet(seed=0, device="cpu")
        h = train(net, x, t, x[:100], t[:100], iters=6, batch_size=threaded.THREADED_MIN_BATCH,
                  seed=0, quiet=True, **kw)
        return net, h

    training = sys.modules["fastmnist.train"]  # the module; fastmnist.train is the function
    monkeypatch.setattr(training, "thread_budget", lambda: 2)
    a, ha = run()
    assert ha.config["step"] == "ThreadedStep" and ha.config["overlap"] is False
    assert not tile_threads() - before  # train() closes the step it made
    monkeypatch.setattr(training, "thread_budget", lambda: 1)
    b, hb = run()
    assert hb.config["step"] == "CpuStep"
    assert ha.loss == hb.loss and ha.train_acc == hb.train_acc
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_thread_budget_follows_the_thread_settings(monkeypatch):
    for var in threaded.THREAD_SETTINGS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threaded, "usable_cores", lambda: 8)
    assert thread_budget() == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_budget() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert thread_budget() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "")
    assert thread_budget() == 8
    monkeypatch.setattr(threaded, "usable_cores", lambda: 1)
    assert thread_budget() == 1 and not threaded.worth_threading(100_000)


CHILD = """
import json, numpy as np
from fastmnist import TwoLayerNet, train
from fastmnist.steps.threaded import thread_budget
rng = np.random.default_rng(0)
t = rng.integers(0, 10, 600)
proto = rng.random((10, 784), dtype=np.float32)  # each class: its own image plus noise
x = (0.5 * proto[t] + 0.5 * rng.random((600, 784), dtype=np.float32)).astype(np.float32)
net = TwoLayerNet(seed=0, device="cpu")
h = train(net, x, t, iters=40, batch_size=5000, learning_rate=1.0, seed=0, quiet=True,
          eval_every=10)
print(json.dumps({"budget": thread_budget(), "step": h.config["step"], "loss": h.loss,
                  "acc": h.train_acc[-1]}))
"""


def train_in_child(env=None, prefix=()):
    out = subprocess.run([*prefix, sys.executable, "-c", CHILD], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)
    assert out.returncode == 0, out.stderr
    import json

    return json.loads(out.stdout.splitlines()[-1])


def check_trained(result):
    assert all(np.isfinite(result["loss"]))
    # 40 steps take the loss from 2.30 to 1.25 and the accuracy from chance to 0.45
    assert result["loss"][-1] < 0.7 * result["loss"][0] and result["acc"] > 0.3


def test_one_thread_settings_train_serially_in_a_fresh_process():
    result = train_in_child({"OMP_NUM_THREADS": "1"})
    assert result["budget"] == 1 and result["step"] in SERIAL
    check_trained(result)


@pytest.mark.skipif(not shutil.which("taskset"), reason="needs taskset (util-linux)")
def test_one_core_trains_serially_in_a_fresh_process():
    env = {var: "" for var in threaded.THREAD_SETTINGS}  # no limit but the core
    result = train_in_child(env, prefix=("taskset", "-c", "0"))
    assert result["budget"] == 1 and result["step"] in SERIAL
    check_trained(result)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_two_cores_train_threaded_in_a_fresh_process():
    env = {var: "" for var in threaded.THREAD_SETTINGS}
    result = train_in_child(env)
    assert result["budget"] >= 2 and result["step"] in THREADED
    check_trained(result)


@pytest.mark.parametrize("where", [0, 2])
def test_an_error_in_any_thread_reaches_the_caller(where):
    before = tile_threads()
    team = Team(3)
    done = []

    def work(j):
        if j == where:
            raise MemoryError(f"thread {j}")
        done.append(j)

    with pytest.raises(MemoryError, match=f"thread {where}"):
        team.run(work)
    assert sorted(done) == [j for j in range(3) if j != where]  # the others finished first
    team.run(done.append)  # and the team still works
    assert sorted(done[-3:]) == [0, 1, 2]
    team.close()
    assert tile_threads() <= before


def test_a_dropped_step_stops_its_threads():
    x, t = small_problem(n=100, d=784)
    net = TwoLayerNet(seed=0, device="cpu")
    before = tile_threads()
    step = ThreadedStep(net.params, net.as_input(x), net.as_labels(t, 100), 0.1, 40, threads=2)
    step(np.arange(40), np.zeros((1, 40), np.float32), 0)
    assert len(tile_threads() - before) == 1
    del step  # its batch points back at it: a cycle, which the collector frees
    assert threads_back_to(before)

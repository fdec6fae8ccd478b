"""The optional compiled step (Numba): picked by train() with FASTMNIST_COMPILED=1 where Numba is
installed, never otherwise; a Numba that fails to import or compile, or a kernel whose first step
disagrees with NumPy's, makes it warn once and train with the NumPy step. Its numbers against the
plain step are in tests/test_steps.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastmnist import TwoLayerNet, train
from fastmnist.steps import compiled
from fastmnist.steps.cpu import CpuStep
from tests.conftest import assert_agree, small_problem

ROOT = Path(__file__).resolve().parents[1]


def run(**kw):
    x, t = small_problem(n=300, d=784, seed=1)
    net = TwoLayerNet(seed=0, device="cpu")
    h = train(net, x.astype(np.float32), t, iters=30, batch_size=20, seed=0, quiet=True,
              overlap=False, **kw)
    return net, h


def test_train_picks_the_compiled_step_where_asked_and_numba_is(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setenv("FASTMNIST_COMPILED", "1")
    assert compiled.wanted()
    net, h = run()
    assert h.config["step"] == "CompiledStep"
    monkeypatch.setenv("FASTMNIST_COMPILED", "0")
    ref, href = run()
    assert href.config["step"] == "CpuStep"
    assert_agree(net.params, ref.params, steps=30, batch=20)


@pytest.mark.parametrize("value", [None, "0", "off", ""])
def test_it_is_off_unless_asked_for(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("FASTMNIST_COMPILED", raising=False)
    else:
        monkeypatch.setenv("FASTMNIST_COMPILED", value)
    assert not compiled.wanted()
    assert run()[1].config["step"] == "CpuStep"


def test_a_numba_that_fails_to_import_gives_one_warning_and_the_numpy_step(monkeypatch):
    def broken():
        raise ImportError("numba's llvmlite does not load")

    monkeypatch.setattr(compiled, "wanted", lambda: True)
    monkeypatch.setattr(compiled, "_import_numba", broken)
    compiled.kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="compiled CPU step is unavailable.*llvmlite") as w:
            net, h = run()
    finally:
        compiled.kernel.cache_clear()
    assert len(w) == 1 and h.config["step"] == "CpuStep"
    assert np.isfinite(h.loss).all()
    monkeypatch.setattr(compiled, "wanted", lambda: False)
    ref, _ = run()  # the same numbers as the NumPy step's
    for k in ref.params:
        np.testing.assert_array_equal(net.params[k], ref.params[k])


def numpy_ships_its_openblas() -> bool:
    """Whether this NumPy is a wheel that carries its own OpenBLAS (scipy-openblas)."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return "scipy-openblas" in str(blas.get("name", ""))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_whole_step_is_one_call_through_numpys_own_blas(dtype, monkeypatch):
    """Where NumPy ships its OpenBLAS, compiled code calls that same library (no second copy,
    one thread setting) and a step is one compiled call; its numbers are in test_steps.py."""
    pytest.importorskip("numba")
    from fastmnist.steps import numba_kernels

    path = numba_kernels.numpy_gemm_library()
    assert (path is not None) == numpy_ships_its_openblas()
    real = compiled.kernel(dtype)
    assert (real.step is not None) == (path is not None)
    if path is None:
        return
    calls = []
    spy = real._replace(step=lambda *a: calls.append(1) or real.step(*a))
    monkeypatch.setattr(compiled, "kernel", lambda name: spy)
    x, t = small_problem(n=300, d=784, seed=1)
    net = TwoLayerNet(seed=0, device="cpu", dtype=dtype)
    step = compiled.CompiledStep(net.params, net.as_input(x), net.as_labels(t, 300), 0.5, 20)
    losses = np.zeros((5, 20), net.dtype)
    for i in range(5):
        step(np.arange(20) + 20 * i, losses, i)
    assert step.compiled and len(calls) == 5 and np.isfinite(losses).all()
    net.params["W1"] = np.asfortranarray(net.params["W1"])  # gemm is called on C order only
    fortran = compiled.CompiledStep(net.params, net.as_input(x), net.as_labels(t, 300), 0.5, 20)
    fortran(np.arange(20), losses, 0)
    assert fortran.compiled and fortran.kernel.step is None and len(calls) == 5


def test_a_whole_step_that_disagrees_is_dropped_too(monkeypatch):
    pytest.importorskip("numba")
    real = compiled.kernel("float32")
    if real.step is None:
        pytest.skip("this NumPy does not ship OpenBLAS: there is no whole step to check")

    def off(x, W1, *rest):
        W1 *= 1.01  # weights off by 1% before the step: far beyond rounding
        real.step(x, W1, *rest)

    monkeypatch.setattr(compiled, "kernel", lambda name: real._replace(step=off))
    x, t = small_problem(n=300, d=784, seed=1)
    net = TwoLayerNet(seed=0, device="cpu")
    step = compiled.CompiledStep(net.params, net.as_input(x), net.as_labels(t, 300), 0.5, 20)
    with pytest.warns(RuntimeWarning, match="first step differs from the NumPy step"):
        step(np.arange(20), np.zeros((1, 20), np.float32), 0)
    assert not step.compiled


def wrong_kernels(dtype_name):
    """Python stand-ins for the compiled passes, with a sigmoid that is off."""
    def sigmoid(a1, b1a, za):
        za[:, :-1] = 1 / (1 + np.exp(-(a1 + b1a[:-1]))) * 1.01
        za[:, -1] = 1

    def softmax(y, flat, loss, scale):
        b = y.shape[0]
        target = (flat - np.arange(b)) // b
        y -= y.max(axis=1, keepdims=True)
        pt = y[np.arange(b), target]
        np.exp(y, out=y)
        s = y.sum(axis=1, keepdims=True)
        loss[...] = np.log(s[:, 0]) - pt
        y *= scale / s
        y[np.arange(b), target] -= scale

    def derivative(dz, za, gb1a):
        dz *= za[:, :-1] * (1 - za[:, :-1])
        gb1a[:-1] = dz.sum(axis=0)
        gb1a[-1] = 0

    return compiled.Kernels(sigmoid, softmax, derivative)  # no whole step: the passes are used


def test_a_kernel_that_disagrees_on_its_first_step_is_dropped(monkeypatch):
    monkeypatch.setattr(compiled, "kernel", wrong_kernels)
    x, t = small_problem(n=300, d=784, seed=1)
    rows = np.random.default_rng(0).integers(0, 300, (10, 20))
    params = {}
    for name, cls in (("compiled", compiled.CompiledStep), ("numpy", CpuStep)):
        net = TwoLayerNet(seed=0, device="cpu")
        step = cls(net.params, net.as_input(x), net.as_labels(t, 300), 0.5, 20)
        losses = np.zeros((10, 20), np.float32)
        if name == "compiled":
            with pytest.warns(RuntimeWarning, match="first step differs from the NumPy step"):
                step(rows[0], losses, 0)
            assert not step.compiled
        else:
            step(rows[0], losses, 0)
        for i in range(1, 10):
            step(rows[i], losses, i)
        params[name] = net.params
    for k in params["numpy"]:  # the fallback took every step, the first one included
        np.testing.assert_array_equal(params["compiled"][k], params["numpy"][k])


def test_the_right_kernels_in_python_pass_the_check(monkeypatch):
    """The check is not so strict that a correct implementation fails it: the stand-ins above,
    without their error, are accepted."""
    def right(dtype_name):
        def exact_sigmoid(a1, b1a, za):
            za[:, :-1] = 1 / (1 + np.exp(-(a1 + b1a[:-1])))
            za[:, -1] = 1

        return wrong_kernels(dtype_name)._replace(sigmoid=exact_sigmoid)

    monkeypatch.setattr(compiled, "kernel", right)
    x, t = small_problem(n=300, d=784, seed=1)
    net = TwoLayerNet(seed=0, device="cpu")
    step = compiled.CompiledStep(net.params, net.as_input(x), net.as_labels(t, 300), 0.5, 20)
    step(np.arange(20), np.zeros((1, 20), np.float32), 0)
    assert step.compiled and step.checked


CHILD = """
import json, sys, warnings
sys.modules["numba"] = None  # as if Numba were not installed
warnings.simplefilter("error")  # and no warning about it
import numpy as np
from fastmnist import TwoLayerNet, train
from fastmnist.steps import compiled
rng = np.random.default_rng(0)
x, t = rng.random((300, 784), dtype=np.float32), rng.integers(0, 10, 300)
h = train(TwoLayerNet(seed=0, device="cpu"), x, t, iters=20, batch_size=20, seed=0, quiet=True)
print(json.dumps({"wanted": compiled.wanted(), "step": h.config["step"], "loss": h.loss}))
"""


def test_without_numba_training_takes_the_numpy_step_silently():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASTMNIST_COMPILED": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["wanted"] is False and result["step"] == "CpuStep"
    assert np.isfinite(result["loss"]).all()

"""The compiled CPU step (C, built with the package): train() takes it by default where it was
built and NumPy ships its OpenBLAS, never with FASTMNIST_COMPILED=0; a step that is not built,
fails, or disagrees with NumPy's on its first step leaves training to the NumPy step, with a
warning where it was asked for or went wrong. Its numbers against the plain step are in
tests/test_steps.py."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from fastmnist import TwoLayerNet, train
from fastmnist.steps import compiled
from fastmnist.steps.cpu import CpuStep
from tests.conftest import assert_agree, small_problem

ROOT = Path(__file__).resolve().parents[1]


def run(dtype="float32", **kw):
    x, t = small_problem(n=300, d=784, seed=1)
    net = TwoLayerNet(seed=0, device="cpu", dtype=dtype)
    h = train(net, x.astype(dtype), t, iters=30, batch_size=20, seed=0, quiet=True,
              overlap=False, **kw)
    return net, h


def numpy_ships_its_openblas() -> bool:
    """Whether this NumPy is a wheel that carries its own OpenBLAS (scipy-openblas)."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return "scipy-openblas" in str(blas.get("name", ""))


def available() -> bool:
    return compiled.why_unavailable() is None


def test_the_package_build_compiles_it_where_there_is_a_c_compiler():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: the build leaves the compiled step out")
    assert compiled.library_file() is not None, "setup.py did not build fastmnist.steps._compiled_step"
    # and it calls NumPy's own gemm where NumPy ships OpenBLAS (its wheels do)
    assert (compiled.numpy_gemm_library() is not None) == numpy_ships_its_openblas()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_train_takes_the_compiled_step_by_default_and_not_when_switched_off(monkeypatch, dtype):
    if not available():
        pytest.skip("the compiled step is not available here (see the test above)")
    monkeypatch.delenv("FASTMNIST_COMPILED", raising=False)
    net, h = run(dtype)
    assert h.config["step"] == "CompiledStep"
    monkeypatch.setenv("FASTMNIST_COMPILED", "0")
    ref, href = run(dtype)
    assert href.config["step"] == "CpuStep"
    assert_agree(net.params, ref.params, steps=30, batch=20, dtype=dtype)


@pytest.mark.parametrize("value,expected", [(None, "auto"), ("", "auto"), ("0", "off"),
                                            ("off", "off"), ("1", "on"), ("yes", "on")])
def test_the_switch(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("FASTMNIST_COMPILED", raising=False)
    else:
        monkeypatch.setenv("FASTMNIST_COMPILED", value)
    assert compiled.setting() == expected


def not_built(monkeypatch):
    monkeypatch.setattr(compiled, "library_file", lambda: None)
    compiled.kernel.cache_clear()


@pytest.mark.filterwarnings("error")
def test_where_it_is_not_built_training_takes_the_numpy_step_silently(monkeypatch):
    not_built(monkeypatch)
    monkeypatch.delenv("FASTMNIST_COMPILED", raising=False)
    try:
        net, h = run()
    finally:
        compiled.kernel.cache_clear()
    assert h.config["step"] == "CpuStep" and np.isfinite(h.loss).all()


def test_asked_for_where_it_is_not_built_it_says_why_once_and_numpy_steps(monkeypatch):
    not_built(monkeypatch)
    monkeypatch.setenv("FASTMNIST_COMPILED", "1")
    try:
        with pytest.warns(RuntimeWarning, match="compiled CPU step is unavailable.*not built") as w:
            net, h = run()
    finally:
        compiled.kernel.cache_clear()
    assert len(w) == 1 and h.config["step"] == "CpuStep"
    monkeypatch.setenv("FASTMNIST_COMPILED", "0")
    ref, _ = run()  # the same numbers as the NumPy step's
    for k in ref.params:
        np.testing.assert_array_equal(net.params[k], ref.params[k])


def make_step(net, batch=20):
    x, t = small_problem(n=300, d=784, seed=1)
    return compiled.CompiledStep(net.params, net.as_input(x), net.as_labels(t, 300), 0.5, batch)


def numpy_steps(rows):
    x, t = small_problem(n=300, d=784, seed=1)
    net = TwoLayerNet(seed=0, device="cpu")
    step = CpuStep(net.params, net.as_input(x), net.as_labels(t, 300), 0.5, 20)
    losses = np.zeros((len(rows), 20), np.float32)
    for i, r in enumerate(rows):
        step(r, losses, i)
    return net.params


@pytest.mark.parametrize("fault", ["disagrees", "raises"])
def test_a_compiled_step_that_goes_wrong_on_its_first_step_is_dropped(monkeypatch, fault):
    if not available():
        pytest.skip("the compiled step is not available here")
    real = compiled.kernel("float32")
    holder = {}

    def off(*args):
        if fault == "raises":
            raise OSError("a broken library")
        real.call(*args)
        holder["W1"] *= 1.01  # 1% off: far beyond rounding

    monkeypatch.setattr(compiled, "kernel", lambda name: real._replace(call=off))
    net = TwoLayerNet(seed=0, device="cpu")
    step = make_step(net)
    holder["W1"] = step.params["W1"]
    rows = np.random.default_rng(0).integers(0, 300, (10, 20))
    losses = np.zeros((10, 20), np.float32)
    why = "first step differs from the NumPy step" if fault == "disagrees" else "broken library"
    with pytest.warns(RuntimeWarning, match=why):
        step(rows[0], losses, 0)
    assert not step.compiled
    for i in range(1, 10):
        step(rows[i], losses, i)
    expected = numpy_steps(rows)
    for k in expected:  # the fallback took every step, the first one included
        np.testing.assert_array_equal(net.params[k], expected[k])


def test_every_step_is_one_compiled_call_and_any_weight_layout_works(monkeypatch):
    if not available():
        pytest.skip("the compiled step is not available here")
    real = compiled.kernel("float32")
    calls = []
    monkeypatch.setattr(compiled, "kernel",
                        lambda name: real._replace(call=lambda *a: calls.append(1) or real.call(*a)))
    rows = np.random.default_rng(0).integers(0, 300, (10, 20))
    net = TwoLayerNet(seed=0, device="cpu")
    net.params["W1"] = np.asfortranarray(net.params["W1"])  # the C code takes C order: a copy
    step = make_step(net)
    losses = np.zeros((10, 20), np.float32)
    for i in range(10):
        step(rows[i], losses, i)
    assert step.compiled and len(calls) == 10 and net.params["W1"].flags.c_contiguous
    assert_agree(net.params, numpy_steps(rows), steps=10, batch=20)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("batch", [256, 257, 2_000])
def test_large_batches_step_compiled_and_pass_the_check(batch):
    """Above 256 rows the updates are not folded into their products (each addition into the
    weights would round at their scale): the first-step check must pass all the same."""
    if not available():
        pytest.skip("the compiled step is not available here")
    x, t = small_problem(n=3_000, d=784, seed=2)
    rows = np.random.default_rng(1).integers(0, 3_000, (3, batch))
    params, steps = {}, {}
    for cls in (compiled.CompiledStep, CpuStep):
        net = TwoLayerNet(seed=0, device="cpu")
        step = steps[cls.__name__] = cls(net.params, net.as_input(x), net.as_labels(t, 3_000),
                                         0.5, batch)
        losses = np.zeros((3, batch), np.float32)
        for i in range(3):
            step(rows[i], losses, i)
        params[cls.__name__] = net.params
    assert steps["CompiledStep"].compiled
    assert_agree(params["CompiledStep"], params["CpuStep"], steps=3, batch=batch)


CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from fastmnist import TwoLayerNet, train
rng = np.random.default_rng(0)
x, t = rng.random((300, 784), dtype=np.float32), rng.integers(0, 10, 300)
h = train(TwoLayerNet(seed=0, device="cpu"), x, t, iters=20, batch_size=20, seed=0, quiet=True)
print(json.dumps({"step": h.config["step"], "modules": sorted(m for m in sys.modules
                  if m.split(".")[0] in ("numba", "llvmlite", "cffi"))}))
"""


def test_a_fresh_process_takes_it_without_loading_a_compiler():
    """The reason it is C and not Numba: a new process pays nothing to load it."""
    if not available():
        pytest.skip("the compiled step is not available here")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FASTMNIST_COMPILED", None)
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result == {"step": "CompiledStep", "modules": []}


def test_an_unexpected_error_making_the_step_is_said_even_by_default(monkeypatch):
    """Not built or no OpenBLAS is silent by default; anything else is a bug worth a warning."""
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the step's set-up")

    monkeypatch.delenv("FASTMNIST_COMPILED", raising=False)
    monkeypatch.setattr(compiled, "CompiledStep", broken)
    with pytest.warns(RuntimeWarning, match="compiled CPU step is unavailable.*a bug"):
        net, h = run()
    assert h.config["step"] == "CpuStep" and np.isfinite(h.loss).all()

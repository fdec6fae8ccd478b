"""The CPU step as one compiled call: C built with the package, called through ctypes.

At batch 100, :class:`~fastmnist.steps.cpu.CpuStep` spends a good part of a step in the fixed
cost of its twenty-odd NumPy calls and in passes that only subtract an update from a weight.
:class:`CompiledStep` takes the whole step in one call of ``compiled_step.c``: its five
products call ``gemm`` in the very OpenBLAS that NumPy ships and calls (found through
threadpoolctl, its address handed to the C code, so both share one library and one thread
setting), each weight update is taken by its product itself (``W -= a b`` as BLAS's
``c = -a b + c``; above 256 rows it is subtracted once, see the C file), and everything
between the products runs as three fused loops. ctypes
releases the GIL around the call, so the pipeline's helper thread runs beside it.

It is the default wherever the package's build compiled it (``setup.py``; it needs a C compiler)
and NumPy carries its own OpenBLAS (its wheels do). Elsewhere, or with ``FASTMNIST_COMPILED=0``,
training takes the NumPy step; ``FASTMNIST_COMPILED=1`` insists, and warns where it cannot.

Large batches take :class:`~fastmnist.steps.tiled.TiledStep`, the same C split over the
cores.

Trust, but check: the first step of every :class:`CompiledStep` is also taken by the NumPy step
from the same weights, and results beyond float rounding make it warn once and step with NumPy
from then on.

Measured and dropped before: the same step compiled by Numba (as fast once loaded, but Numba's
import and its cached code's loading cost 0.7 to 1 s per process, more than a 10,000-step run
gains), and the products through SciPy's BLAS (10 to 18% slower than NumPy's on these shapes).
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from ..agreement import disagreement, terms_per_step, tolerance
from ..system import blas_libraries
from .cpu import CpuStep

ENV_SWITCH = "FASTMNIST_COMPILED"
LIBRARY = "_compiled_step"  # the extension module setup.py builds from compiled_step.c
OFF, ON = ("0", "off", "false", "no"), ("1", "on", "true", "yes")


def setting() -> str:
    """``"off"``, ``"on"`` (insisted on) or ``"auto"`` (the default), from FASTMNIST_COMPILED."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    return "off" if value in OFF else "on" if value in ON else "auto"


def unavailable(exc: BaseException) -> None:
    warnings.warn(f"fastmnist: the compiled CPU step is unavailable ({type(exc).__name__}: "
                  f"{exc}); training goes on with the NumPy step. Set {ENV_SWITCH}=0 to skip it "
                  "and this warning.", RuntimeWarning, stacklevel=3)


@lru_cache(maxsize=None)
def numpy_gemm_library() -> str | None:
    """The file of the OpenBLAS that NumPy's own wheels ship and call (``scipy_cblas_?gemm64_``),
    or None where NumPy uses another BLAS."""
    for info in blas_libraries():
        path = info.get("filepath") or ""
        if "numpy" in path.replace("\\", "/").split("/site-packages/")[-1]:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            if hasattr(lib, "scipy_cblas_sgemm64_") and hasattr(lib, "scipy_cblas_dgemm64_"):
                return path
    return None


def library_file() -> Path | None:
    """The built ``compiled_step.c`` beside this module, or None where it was not built."""
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (here / (LIBRARY + suffix)).is_file():
            return here / (LIBRARY + suffix)
    return None


class Step(NamedTuple):
    """A compiled function for one dtype and the address of the ``gemm`` it calls."""
    call: Callable
    gemm: int
    real: type  # ctypes.c_float or ctypes.c_double


def libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """The built ``compiled_step.c`` and NumPy's OpenBLAS; raises ``OSError`` saying why where
    either is missing."""
    path = library_file()
    if path is None:
        raise OSError(f"{LIBRARY} was not built (it needs a C compiler when fastmnist is "
                      "installed: reinstall with one, e.g. pip install --force-reinstall .)")
    blas = numpy_gemm_library()
    if blas is None:
        raise OSError("NumPy does not use the OpenBLAS its wheels ship, whose gemm the step calls")
    return ctypes.CDLL(str(path)), ctypes.CDLL(blas)


def compiled_function(name: str, dtype_name: str, argtypes: list, restype=None) -> Step:
    """``fastmnist_{name}_f32`` or ``_f64`` from the built library, typed; ``real`` in
    ``argtypes`` stands for the dtype's ctypes type."""
    if dtype_name not in ("float32", "float64"):
        raise TypeError(f"the compiled step is for float32 and float64, not {dtype_name}")
    lib, blas = libraries()
    f32 = dtype_name == "float32"
    real = ctypes.c_float if f32 else ctypes.c_double
    call = getattr(lib, f"fastmnist_{name}_{'f32' if f32 else 'f64'}")
    call.argtypes = [real if a == "real" else a for a in argtypes]
    call.restype = restype
    gemm = getattr(blas, "scipy_cblas_sgemm64_" if f32 else "scipy_cblas_dgemm64_")
    return Step(call, ctypes.cast(gemm, ctypes.c_void_p).value, real)


P, SIZE = ctypes.c_void_p, ctypes.c_int64  # a pointer and an int64_t, in argtypes lists


@lru_cache(maxsize=None)
def kernel(dtype_name: str) -> Step:
    """The compiled step for ``dtype_name``; raises ``OSError`` saying why where there is none."""
    # gemm, B, D, H, C, W1, b1a, W2a, a1, za, y, dz, gb1a, gW1, gW2a, scale, x, flat, loss
    return compiled_function("step", dtype_name, [P] + [SIZE] * 4 + [P] * 10 + ["real"] + [P] * 3)


def why_unavailable() -> str | None:
    """Why the float32 compiled step cannot be used here, or None where it can."""
    try:
        kernel("float32")
    except OSError as exc:
        return str(exc)
    return None


def describe() -> str:
    """Which CPU step training takes, and why, in one line (for ``fastmnist info``)."""
    if setting() == "off":
        return f"NumPy ({ENV_SWITCH}=0)"
    why = why_unavailable()
    if why:
        return f"NumPy (the compiled step is unavailable: {why})"
    return f"compiled ({library_file().name}, gemm from {Path(numpy_gemm_library()).name})"


def address(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def check_losses(losses: np.ndarray, dtype) -> None:
    """The compiled steps write each row's loss into a row of ``losses`` by its address."""
    if not (losses.dtype == dtype and losses.strides[-1] == losses.itemsize):
        raise TypeError(f"losses must be rows of contiguous {np.dtype(dtype).name}")


def loss_address(losses: np.ndarray, i: int, dtype) -> ctypes.c_void_p:
    """The address of ``losses[i]``, checked."""
    check_losses(losses, dtype)
    return address(losses[i])


class CompiledStep(CpuStep):
    """:class:`~fastmnist.steps.cpu.CpuStep`, computed by one compiled call per step (checked
    against the NumPy step on the first one; ``compiled`` says which one steps now).

    ``params["W1"]`` is rebound to a C-ordered copy when it is not one already."""

    def __init__(self, params: dict, x, labels, learning_rate: float, batch_size: int):
        params["W1"] = np.ascontiguousarray(params["W1"])
        super().__init__(params, x, labels, learning_rate, batch_size)
        b, (d, h) = batch_size, self.params["W1"].shape
        dt = self.dtype
        self.kernel = kernel(np.dtype(dt).name)  # OSError and the like: see make_step
        self.a1, self.dz1 = np.empty((b, h), dt), np.empty((b, h), dt)  # contiguous (B, H)
        self.y = np.empty((b, self.classes), dt)
        size = ctypes.c_int64
        buffers = (self.params["W1"], self.b1a, self.W2a, self.a1, self.za, self.y, self.dz1,
                   self.gb1a, self.gW1, self.gW2a)
        self.fixed = (ctypes.c_void_p(self.kernel.gemm), size(b), size(d), size(h),
                      size(self.classes), *map(address, buffers), self.kernel.real(self.scale))
        self.losses, self.loss_base = None, None
        self.compiled, self.checked = True, False

    def compute(self, batch, losses, i: int) -> None:
        if not self.compiled:
            return super().compute(batch, losses, i)
        if not self.checked:
            return self._checked_compute(batch, losses, i)
        self._kernel(batch, self.loss_row(losses, i))

    def loss_row(self, losses: np.ndarray, i: int) -> ctypes.c_void_p:
        """The address of ``losses[i]`` (B,), worked out once per ``losses`` array."""
        if losses is not self.losses:
            check_losses(losses, self.dtype)
            self.losses, self.loss_base = losses, losses.ctypes.data
        return ctypes.c_void_p(self.loss_base + i * losses.strides[0])

    def _kernel(self, batch, loss: ctypes.c_void_p) -> None:
        where = getattr(batch, "addresses", None)
        if where is None:  # a CpuBatch's buffers live as long as it does
            where = batch.addresses = (address(batch.x), address(batch.flat))
        self.kernel.call(*self.fixed, *where, loss)

    def _checked_compute(self, batch, losses, i: int) -> None:
        """The first step, taken by both steps from the same weights: NumPy's result is kept,
        and the compiled one is used from now on only if it agrees to float rounding."""
        self.checked = True
        W1, b1, W2a = self.params["W1"], self.params["b1"], self.W2a  # b1: b1a less its +inf
        before = {"W1": W1.copy(), "b1": b1.copy(), "W2": W2a.copy()}
        loss = np.zeros((1, self.batch_size), self.dtype)
        try:
            self._kernel(batch, address(loss))
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong, NumPy does the job
            problem = exc
        else:
            got = {"W1": W1.copy(), "b1": b1.copy(), "W2": W2a.copy()}
            W1[...], b1[...], W2a[...] = before["W1"], before["b1"], before["W2"]
            super().compute(batch, losses, i)
            expected = {"W1": W1, "b1": b1, "W2": W2a}
            sizes = (W1.shape[0], W1.shape[1], W2a.shape[1])
            tol = tolerance(np.dtype(self.dtype).name, terms_per_step(sizes, self.batch_size), 1)
            problem = (disagreement(got, expected, tol, before=before)
                       or disagreement({"loss": loss[0]}, {"loss": losses[i]}, tol))
            if problem is None:
                return
            problem = AssertionError(f"its first step differs from the NumPy step's: {problem}")
        W1[...], b1[...], W2a[...] = before["W1"], before["b1"], before["W2"]
        self.compiled = False
        unavailable(problem)
        super().compute(batch, losses, i)

"""The CPU step as one compiled call (Numba; ``pip install 'fastmnist[fast]'``).

At batch 100, :class:`~fastmnist.steps.cpu.CpuStep` spends a good part of a step in the fixed
cost of its twenty-odd NumPy calls and in passes that only subtract an update from a weight.
:class:`CompiledStep` takes the whole step in one compiled call (:func:`.numba_kernels.step`):
its five products call ``gemm`` in the very OpenBLAS that NumPy ships and calls (found through
threadpoolctl, linked by name, so compiled code and NumPy share one library and one thread
setting), each weight update is taken by its product itself (``W -= a b`` as BLAS's
``c = -a b + c``), and everything between the products runs as three fused loops: bias and
sigmoid; softmax, cross-entropy and the output gradient; the sigmoid's derivative and b1's
update. It releases the GIL, so the pipeline's helper thread runs beside it. Where NumPy uses
another BLAS, the products stay NumPy calls and only the three loops are compiled.

Measured and dropped before: the products through Numba's own ``np.dot``, which calls SciPy's
BLAS, 10 to 18% slower than NumPy's on these shapes.

The sigmoid's ``exp`` in float32 is a Cephes-style polynomial (within 1 ulp of ``exp``) that the
compiler vectorises; Numba's own ``exp`` is a scalar libm call per number, which costs more than
all of NumPy's call overhead. float64 uses the exact ``exp``. The passes live in
:mod:`.numba_kernels`, imported only here, on first use.

Trust, but check: the first step of every :class:`CompiledStep` is also taken by the NumPy step
from the same weights, and results beyond float rounding make it warn once and step with NumPy
from then on. So does a Numba that fails to import or to compile.

It is off unless ``FASTMNIST_COMPILED=1``. A step at batch 100 takes what its products alone
take (198 against 200 us on one thread, NumPy's step 247 us), and the article's workload in one
process runs 0.88x the NumPy step's time (median of 5 runs of ``bench_workload.py``: 1.35x the
matmul floor against 1.55x). But Numba's import and loading the cached step cost about 0.6 s
per process, which a fresh 10,000-step ``train()`` does not earn back; longer runs do. Without
Numba it is silently not used.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from functools import lru_cache
from typing import Callable, NamedTuple

import numpy as np

from ..agreement import disagreement, terms_per_step, tolerance
from .cpu import CpuStep

ENV_SWITCH = "FASTMNIST_COMPILED"


def wanted() -> bool:
    """Whether to try the compiled step: asked for (``FASTMNIST_COMPILED=1``) and Numba is
    installed."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # a numba module blocked or half-removed
        return False


def unavailable(exc: BaseException) -> None:
    warnings.warn(f"fastmnist: the compiled CPU step is unavailable ({type(exc).__name__}: "
                  f"{exc}); training goes on with the NumPy step. Unset {ENV_SWITCH} to skip it "
                  "and this warning.", RuntimeWarning, stacklevel=3)


def _import_numba():
    from . import numba_kernels

    return numba_kernels


class Kernels(NamedTuple):
    """The compiled passes, and the whole step in one call where NumPy's BLAS can be called
    from compiled code (else None)."""
    sigmoid: Callable
    softmax: Callable
    derivative: Callable
    step: Callable | None = None


@lru_cache(maxsize=None)
def kernel(dtype_name: str) -> Kernels:
    """The compiled passes and whole step (see :mod:`.numba_kernels`; Numba compiles them for
    ``dtype_name`` on their first call, or loads them from its cache)."""
    if dtype_name not in ("float32", "float64"):
        raise TypeError(f"the compiled step is for float32 and float64, not {dtype_name}")
    k = _import_numba()
    return Kernels(k.sigmoid, k.softmax, k.derivative, k.step if k.GEMM else None)


class CompiledStep(CpuStep):
    """:class:`~fastmnist.steps.cpu.CpuStep`, computed by one compiled call per step (checked
    against the NumPy step on the first one; ``compiled`` says which one steps now)."""

    def __init__(self, params: dict, x, labels, learning_rate: float, batch_size: int):
        super().__init__(params, x, labels, learning_rate, batch_size)
        b, h = batch_size, self.params["W1"].shape[1]
        dt = self.dtype
        self.kernel = kernel(np.dtype(dt).name)  # ImportError and the like: see make_step
        if not self.params["W1"].flags.c_contiguous:  # the whole step's gemm wants C order
            self.kernel = self.kernel._replace(step=None)
        self.a1, self.dz1 = np.empty((b, h), dt), np.empty((b, h), dt)  # contiguous (B, H)
        self.y = np.empty((b, self.classes), dt)
        self.compiled, self.checked = True, False

    def compute(self, batch, losses, i: int) -> None:
        if not self.compiled:
            return super().compute(batch, losses, i)
        if not self.checked:
            return self._checked_compute(batch, losses, i)
        self._kernel(batch, losses[i])

    def _kernel(self, batch, loss) -> None:
        sigmoid, softmax, derivative, whole = self.kernel
        W1, b1a, W2a, y, dz = self.params["W1"], self.b1a, self.W2a, self.y, self.dz1
        if whole is not None:  # batch.x is a C-ordered buffer of CpuBatch
            return whole(batch.x, W1, b1a, W2a, self.a1, self.za, y, dz, self.gb1a, batch.flat,
                         loss, self.scale)
        h = W1.shape[1]
        np.matmul(batch.x, W1, out=self.a1)
        sigmoid(self.a1, b1a, self.za)
        np.matmul(self.za, W2a, out=y)  # logits (B, C), b2 included
        softmax(y, batch.flat, loss, self.scale)
        np.matmul(self.za.T, y, out=self.gW2a)
        np.matmul(y, W2a[:h].T, out=dz)
        derivative(dz, self.za, self.gb1a)
        np.matmul(batch.x.T, dz, out=self.gW1)
        W1 -= self.gW1
        b1a -= self.gb1a  # its last entry stays +inf: gb1a's is 0
        W2a -= self.gW2a

    def _checked_compute(self, batch, losses, i: int) -> None:
        """The first step, taken by both steps from the same weights: NumPy's result is kept,
        and the compiled one is used from now on only if it agrees to float rounding."""
        self.checked = True
        W1, b1, W2a = self.params["W1"], self.params["b1"], self.W2a  # b1: b1a less its +inf
        before = {"W1": W1.copy(), "b1": b1.copy(), "W2": W2a.copy()}
        loss = losses[i].copy()
        try:
            self._kernel(batch, loss)
        except Exception as exc:  # noqa: BLE001 - a compile error surfaces on the first call
            problem = exc
        else:
            got = {"W1": W1.copy(), "b1": b1.copy(), "W2": W2a.copy()}
            W1[...], b1[...], W2a[...] = before["W1"], before["b1"], before["W2"]
            super().compute(batch, losses, i)
            expected = {"W1": W1, "b1": b1, "W2": W2a}
            sizes = (W1.shape[0], W1.shape[1], W2a.shape[1])
            tol = tolerance(np.dtype(self.dtype).name, terms_per_step(sizes, self.batch_size), 1)
            problem = (disagreement(got, expected, tol, before=before)
                       or disagreement({"loss": loss}, {"loss": losses[i]}, tol))
            if problem is None:
                return
            problem = AssertionError(f"its first step differs from the NumPy step's: {problem}")
        W1[...], b1[...], W2a[...] = before["W1"], before["b1"], before["W2"]
        self.compiled = False
        unavailable(problem)
        super().compute(batch, losses, i)

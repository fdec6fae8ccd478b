"""The CPU step with its element-wise work compiled (Numba; ``pip install 'fastmnist[fast]'``).

At batch 100, :class:`~fastmnist.steps.cpu.CpuStep` spends a good part of a step in the fixed
cost of its twenty-odd NumPy calls. :class:`CompiledStep` keeps the five products in NumPy
(``np.matmul``, NumPy's BLAS) and fuses everything between them into three compiled passes:
bias and sigmoid; softmax, cross-entropy and the output gradient; the sigmoid's derivative and
b1's update. Each releases the GIL, so the pipeline's helper thread runs beside it.

Measured and dropped: the whole step as one ``@njit`` call, its products through Numba's
``np.dot``, was slower than NumPy: Numba calls SciPy's BLAS, 10 to 18% slower than NumPy's on
these shapes, which cost more than the fused passes save.

The sigmoid's ``exp`` in float32 is a Cephes-style polynomial (within 1 ulp of ``exp``) that the
compiler vectorises; Numba's own ``exp`` is a scalar libm call per number, which costs more than
all of NumPy's call overhead. float64 uses the exact ``exp``. The passes live in
:mod:`.numba_kernels`, imported only here, on first use.

Trust, but check: the first step of every :class:`CompiledStep` is also taken by the NumPy step
from the same weights, and results beyond float rounding make it warn once and step with NumPy
from then on. So does a Numba that fails to import or to compile.

It is off unless ``FASTMNIST_COMPILED=1``: on the article's workload it did not pay. The
passes alone are about 10% faster than NumPy's at batch 100 (one BLAS thread, medians of
interleaved runs), but a whole ``train()`` of 10,000 steps in a fresh process was 5 to 15% slower
with it (Numba's import, about a second, and the first compile or cache load fall inside the
run; the overlapped steps gained nothing measurable). Without Numba it is silently not used.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from functools import lru_cache

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


@lru_cache(maxsize=None)
def kernel(dtype_name: str):
    """The three compiled passes ``(sigmoid, softmax, derivative)`` (see :mod:`.numba_kernels`;
    Numba compiles them for ``dtype_name`` on their first call, or loads them from its cache)."""
    if dtype_name not in ("float32", "float64"):
        raise TypeError(f"the compiled step is for float32 and float64, not {dtype_name}")
    k = _import_numba()
    return k.sigmoid, k.softmax, k.derivative


class CompiledStep(CpuStep):
    """:class:`~fastmnist.steps.cpu.CpuStep`, computed by one compiled call per step (checked
    against the NumPy step on the first one; ``compiled`` says which one steps now)."""

    def __init__(self, params: dict, x, labels, learning_rate: float, batch_size: int):
        super().__init__(params, x, labels, learning_rate, batch_size)
        b, h = batch_size, self.params["W1"].shape[1]
        dt = self.dtype
        self.kernel = kernel(np.dtype(dt).name)  # ImportError and the like: see make_step
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
        sigmoid, softmax, derivative = self.kernel
        W1, b1a, W2a, y, dz = self.params["W1"], self.b1a, self.W2a, self.y, self.dz1
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

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
all of NumPy's call overhead. float64 uses the exact ``exp``.

Trust, but check: the first step of every :class:`CompiledStep` is also taken by the NumPy step
from the same weights, and results beyond float rounding make it warn once and step with NumPy
from then on. So does a Numba that fails to import or to compile. ``FASTMNIST_COMPILED=0``
turns the compiled step off; without Numba installed it is silently not used.
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
    """Whether to try the compiled step: Numba is installed and ``FASTMNIST_COMPILED`` is not 0."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # a numba module blocked or half-removed
        return False


def unavailable(exc: BaseException) -> None:
    warnings.warn(f"fastmnist: the compiled CPU step is unavailable ({type(exc).__name__}: "
                  f"{exc}); training goes on with the NumPy step. Set {ENV_SWITCH}=0 to skip it "
                  "and this warning.", RuntimeWarning, stacklevel=3)


def _import_numba():
    import numba

    return numba


@lru_cache(maxsize=None)
def kernel(dtype_name: str):
    """The three compiled passes for float32 or float64 (compiled on first use of the dtype)."""
    numba = _import_numba()
    jit = numba.njit(nogil=True, fastmath=True, error_model="numpy", cache=False)
    inline = numba.njit(inline="always", fastmath=True)
    f = np.float32 if dtype_name == "float32" else np.float64

    @inline
    def exp32(x):
        # exp(x) = 2^i * exp(r), |r| <= ln2 / 2, exp(r) by Cephes' expf polynomial
        x = min(max(x, np.float32(-87.0)), np.float32(88.0))
        i = np.int32(x * np.float32(1.44269504088896341) + np.float32(127.5)) - np.int32(127)
        n = np.float32(i)
        r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * r * r + r + np.float32(1.0)
        return p * np.int32((i + np.int32(127)) << np.int32(23)).view(np.float32)

    @inline
    def exp64(x):
        return np.exp(x)

    exp = exp32 if dtype_name == "float32" else exp64

    @jit
    def sigmoid(a1, b1a, za):
        """za = [sigmoid(a1 + b1), 1]: ``a1`` ``(B, H)``, ``za`` ``(B, H + 1)``."""
        b, h = a1.shape
        one = f(1.0)
        for r in range(b):
            ar, zr = a1[r], za[r]
            for k in range(h):
                zr[k] = one / (one + exp(-(ar[k] + b1a[k])))
            zr[h] = one

    @jit
    def softmax(y, flat, loss, scale):
        """On the logits ``y`` ``(B, C)``: ``loss`` ``(B,)`` = log(sum(exp(s))) - s[target] and
        ``y`` = (softmax - onehot) lr / B (``scale``); ``flat`` as in CpuBatch."""
        b, c = y.shape
        for r in range(b):
            yr = y[r]
            m = yr[0]
            for j in range(1, c):
                m = max(m, yr[j])
            target = (flat[r] - r) // b
            pt = yr[target] - m
            s = f(0.0)
            for j in range(c):
                e = np.exp(yr[j] - m)
                yr[j] = e
                s += e
            loss[r] = np.log(s) - pt
            q = scale / s
            for j in range(c):
                yr[j] *= q
            yr[target] -= scale

    @jit
    def derivative(dz, za, gb1a):
        """dz ``(B, H)`` *= z (1 - z), and ``gb1a[:H]`` = its column sums (b1's update)."""
        b, h = dz.shape
        gb1a[:] = 0
        for r in range(b):
            zr, dr = za[r], dz[r]
            for k in range(h):
                d = dr[k] * (zr[k] - zr[k] * zr[k])
                dr[k] = d
                gb1a[k] += d

    return sigmoid, softmax, derivative


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

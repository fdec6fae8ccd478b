"""The compiled passes of :class:`~fastmnist.steps.compiled.CompiledStep` (imports Numba: load
this module only through :func:`fastmnist.steps.compiled.kernel`), and the whole step as one
compiled call, its products through the very BLAS library NumPy calls.

Compiled once per dtype and cached on disk (Numba's ``cache=True``), so a new process loads
them instead of compiling them again.
"""
from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from numba.extending import overload

from ..system import blas_libraries

FLAGS = {"nogil": True, "fastmath": True, "error_model": "numpy", "cache": True}


def fast_exp(x):
    """``exp``: in float32 a polynomial the compiler vectorises, the exact one in float64."""
    return np.exp(x)


@numba.njit(inline="always", fastmath=True, cache=True)
def exp32(x):
    # exp(x) = 2^i * exp(r), |r| <= ln2 / 2, exp(r) by Cephes' expf polynomial (within 1 ulp)
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


@overload(fast_exp, inline="always")
def _fast_exp(x):
    if x == numba.float32:
        return lambda x: exp32(x)
    return lambda x: np.exp(x)


@numba.njit(**FLAGS)
def sigmoid(a1, b1a, za):
    """za = [sigmoid(a1 + b1), 1]: ``a1`` ``(B, H)``, ``za`` ``(B, H + 1)``."""
    b, h = a1.shape
    one = za.dtype.type(1.0)
    for r in range(b):
        ar, zr = a1[r], za[r]
        for k in range(h):
            zr[k] = one / (one + fast_exp(-(ar[k] + b1a[k])))
        zr[h] = one


@numba.njit(**FLAGS)
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
        s = yr.dtype.type(0.0)
        for j in range(c):
            e = np.exp(yr[j] - m)
            yr[j] = e
            s += e
        loss[r] = np.log(s) - pt
        q = scale / s
        for j in range(c):
            yr[j] *= q
        yr[target] -= scale


@numba.njit(**FLAGS)
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


def link_gemm() -> bool:
    """Make NumPy's ``gemm`` callable from compiled code: True where that worked."""
    path = numpy_gemm_library()
    if path is None:
        return False
    try:
        llvm.load_library_permanently(path)  # already loaded by NumPy: the same code and threads
    except RuntimeError:  # llvmlite's error for a library it cannot open
        return False
    return True


GEMM = link_gemm()
ROW_MAJOR, N, T = 101, 111, 112  # CBLAS's order and transpose codes


def _cblas(name: str, real):
    p = types.CPointer(real)
    return types.ExternalFunction(name, types.void(types.int32, types.int32, types.int32,
                                                   types.int64, types.int64, types.int64, real,
                                                   p, types.int64, p, types.int64, real, p,
                                                   types.int64))


sgemm = _cblas("scipy_cblas_sgemm64_", types.float32)
dgemm = _cblas("scipy_cblas_dgemm64_", types.float64)


def gemm(ta, tb, alpha, a, b, beta, c):
    """c = alpha op(a) op(b) + beta c on C-ordered 2-D arrays; ``ta``, ``tb`` are N or T."""


@overload(gemm)
def _gemm(ta, tb, alpha, a, b, beta, c):
    call = sgemm if a.dtype == numba.float32 else dgemm

    def run(ta, tb, alpha, a, b, beta, c):
        m, n = c.shape
        k = a.shape[0] if ta == T else a.shape[1]
        call(ROW_MAJOR, ta, tb, m, n, k, alpha, a.ctypes, a.shape[1], b.ctypes, b.shape[1],
             beta, c.ctypes, n)
    return run


@numba.njit(**FLAGS)
def step(x, W1, b1a, W2a, a1, za, y, dz, gb1a, flat, loss, scale):
    """One SGD step of CompiledStep in one call; all arrays C-ordered. ``W2a`` ``(H + 1, C)``
    holds b2 as its last row; ``dz`` is ``(B, H)``. Each update is taken by its product itself:
    BLAS's ``c = alpha a b + beta c`` with alpha -1 and beta 1 is ``W -= a b`` in one pass."""
    h = W1.shape[1]
    one, zero, minus = W1.dtype.type(1.0), W1.dtype.type(0.0), W1.dtype.type(-1.0)
    gemm(N, N, one, x, W1, zero, a1)
    sigmoid(a1, b1a, za)
    gemm(N, N, one, za, W2a, zero, y)  # logits (B, C), b2 included
    softmax(y, flat, loss, scale)
    gemm(N, T, one, y, W2a[:h], zero, dz)  # from W2 before its update
    gemm(T, N, minus, za, y, one, W2a)
    derivative(dz, za, gb1a)
    gemm(T, N, minus, x, dz, one, W1)
    for k in range(h):
        b1a[k] -= gb1a[k]

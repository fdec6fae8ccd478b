"""The compiled passes of :class:`~fastmnist.steps.compiled.CompiledStep` (imports Numba: load
this module only through :func:`fastmnist.steps.compiled.kernel`).

Compiled once per dtype and cached on disk (Numba's ``cache=True``), so a new process loads
them instead of compiling them again.
"""
from __future__ import annotations

import numba
import numpy as np
from numba.extending import overload

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

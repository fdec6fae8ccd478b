"""When two computations of the same SGD agree: bounds on float rounding for comparing
parameters, losses and scores computed by different code (fused kernels against generic array
calls, one BLAS kernel or thread count against another, a GPU against the CPU).

Rounding, not luck, sets the bounds. A sum of ``K`` products, added in another order (another
BLAS kernel, another thread split, a GPU reduction tree), differs by about ``eps * sqrt(K)``
times the sum of its terms' magnitudes (``eps * K`` at the very worst). One step of the network
is a chain of such sums (over the 784 inputs, the hidden units, the batch rows) and a few
element-wise functions, each off by an ulp or two, so two implementations of one step give
updates that differ by a few ``eps * sqrt(K)`` relative to the parameters' scale. Over ``N``
steps these differences add up (and the later steps carry the earlier ones forward), so the
bound grows with ``N``:

    max |a - b|  <=  SAFETY * eps * sqrt(K) * N * max |b|      (per parameter array)

Every value here is on the host in float64; device arrays are copied once (a synchronisation:
for checks, never inside a training step). A wrong kernel, an unscaled uint8 batch or a wrong
derivative is off by a large fraction of an update, far outside these bounds.
"""
from __future__ import annotations

import math

import numpy as np

from . import functions as F
from .backend import to_numpy

SAFETY = 4  # ulps lost in the element-wise functions and the worst case's excess over sqrt(K)


def eps(dtype) -> float:
    """Machine epsilon of a float dtype (float32: 1.19e-7, float64: 2.22e-16)."""
    return float(np.finfo(np.dtype(getattr(dtype, "name", dtype))).eps)


def terms_per_step(sizes, batch_size: int) -> int:
    """The longest sum in one step of a ``(D, H, C)`` network at this batch size."""
    d, h, c = sizes
    return max(int(d), int(h) + 1, int(c), int(batch_size))


def tolerance(dtype, terms: int, steps: int = 1) -> float:
    """How far (relative to the parameters' scale) two implementations may drift apart."""
    return SAFETY * eps(dtype) * math.sqrt(terms) * max(int(steps), 1)


def host(a) -> np.ndarray:
    return np.asarray(to_numpy(a), dtype=np.float64)


def disagreement(got: dict, expected: dict, tol: float, before: dict | None = None) -> str | None:
    """None when every array of ``got`` is within ``tol`` of ``expected``, else what differs.

    Without ``before``, differences are measured against each array's scale ``max |expected|``
    (for runs of many steps). With ``before`` (the arrays both started from) they are measured
    on the updates, ``got - before`` against ``expected - before``, which is far more sensitive
    after a single step: then ``tol`` applies to the update's scale, and each side may also
    have rounded its own subtraction (half an ulp of ``max |before|``).
    """
    for name, want in expected.items():
        if name not in got:
            return f"{name} is missing"
        a, b = host(got[name]), host(want)
        if a.shape != b.shape:
            return f"{name} has shape {a.shape}, expected {b.shape}"
        if not np.all(np.isfinite(a)):
            return f"{name} holds NaN or infinite values"
        # below the smallest normal number, results differ by where they underflowed
        kind = np.dtype(getattr(want, "dtype", b.dtype))
        allowed = float(np.finfo(kind).tiny) if kind.kind == "f" else 0.0
        if before is None:
            allowed += tol * np.abs(b).max(initial=0.0)
        else:
            start = host(before[name])
            rounding = eps(kind) * max(np.abs(start).max(initial=0.0), np.abs(b).max(initial=0.0))
            allowed += tol * np.abs(b - start).max(initial=0.0) + rounding
        diff = np.abs(a - b).max(initial=0.0)
        if not diff <= allowed:
            return f"{name} differs by {diff:.3g} (float rounding allows {allowed:.3g})"
    return None


def logit_moves(params: dict, x, tol: float) -> np.ndarray:
    """How far each row's logits ``(N,)`` may move when every parameter array moves by up to
    ``tol`` of its scale, for host inputs ``x`` ``(N, D)`` in 0..1.

    A perturbation of ``tol * max|W1|`` per weight moves a hidden unit's input ``a`` by at most
    ``tol * (max|W1| * sum|x| + max|b1|)``, the unit itself by a quarter of that (the sigmoid's
    slope is at most 1/4), and each logit by those moves through ``|W2|`` plus
    ``tol * (max|W2| * sum z + max|b2|)``. Rounding inside one forward pass is such a
    perturbation too (a computed dot product is the exact one of inputs off by ``eps * K``
    relative at most).
    """
    p = {k: host(v) for k, v in params.items()}
    d = {k: tol * np.abs(v).max(initial=0.0) for k, v in p.items()}
    z = F.sigmoid(x @ p["W1"] + p["b1"])
    dz = (np.abs(x).sum(axis=1, keepdims=True) * d["W1"] + d["b1"]) / 4
    moved = dz * np.abs(p["W2"]).sum(axis=0) + z.sum(axis=1, keepdims=True) * d["W2"] + d["b2"]
    return moved.max(axis=1)


def uncertain_rows(params: dict, x, tol: float, chunk: int = 10_000) -> int:
    """How many rows of ``x`` ``(N, D)`` (floats in 0..1 or uint8 pixels, any device) two
    computations of the network may classify differently when their parameters differ by up
    to ``tol`` of each array's scale: rows whose two highest logits are closer than twice
    :func:`logit_moves`."""
    p = {k: host(v) for k, v in params.items()}
    count = 0
    for start in range(0, x.shape[0], chunk):
        xc = host(x[start:start + chunk])
        if str(x.dtype) == "uint8":
            xc /= 255
        logits = F.sigmoid(xc @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        top2 = np.partition(logits, -2, axis=1)[:, -2:]
        count += int(np.count_nonzero(top2[:, 1] - top2[:, 0] <= 2 * logit_moves(p, xc, tol)))
    return count

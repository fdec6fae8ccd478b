"""Activation, output and loss functions, and the numerical gradient, for any array namespace.

Each function finds its namespace from its input, so the same code runs on NumPy, CuPy and
strict array-API arrays. Shapes: ``(N, C)`` batches or single ``(C,)`` vectors.
"""
from __future__ import annotations

import itertools

from .backend import array_namespace

LOG_EPS = 1e-7  # keeps log() finite when a probability underflows to 0 (the article's constant)


def sigmoid(x):
    """Logistic function, elementwise; same shape and dtype as ``x``.

    Written as ``0.5 * tanh(x / 2) + 0.5``: identical in value to ``1 / (1 + exp(-x))`` but it
    never overflows for large negative inputs.
    """
    xp = array_namespace(x)
    return 0.5 * xp.tanh(0.5 * x) + 0.5


def sigmoid_grad(x):
    """Derivative of :func:`sigmoid` at ``x``: ``s * (1 - s)``."""
    s = sigmoid(x)
    return s * (1.0 - s)


def softmax(x):
    """Row-wise softmax of logits ``x`` with shape ``(N, C)`` or ``(C,)``.

    The row maximum is subtracted first, so huge logits do not overflow ``exp``.
    """
    xp = array_namespace(x)
    shifted = x - xp.max(x, axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / xp.sum(e, axis=-1, keepdims=True)


def labels_to_indices(t, num_classes: int):
    """Integer class indices ``(N,)`` from one-hot ``(N, C)`` or integer ``(N,)`` labels."""
    xp = array_namespace(t)
    if t.ndim == 2 and t.shape[1] == num_classes:
        return xp.argmax(t, axis=1)
    if t.ndim == 0:
        t = xp.reshape(t, (1,))
    return xp.astype(t, xp.int64)


def target_probabilities(y, t):
    """The entry of each row of ``y`` at its true class ``t`` (one-hot or integer labels)."""
    xp = array_namespace(y)
    y2 = xp.reshape(y, (1, -1)) if y.ndim == 1 else y
    if t.shape == y.shape:
        t2 = xp.reshape(t, y2.shape)
        return xp.sum(y2 * xp.astype(t2, y2.dtype), axis=1)
    idx = xp.reshape(labels_to_indices(t, y2.shape[1]), (-1, 1))
    return xp.reshape(xp.take_along_axis(y2, idx, axis=1), (-1,))


def cross_entropy_error(y, t):
    """Mean cross-entropy of probabilities ``y`` ``(N, C)`` against labels ``t``.

    ``t`` is one-hot ``(N, C)`` or integer ``(N,)``; a single ``(C,)`` row counts as a batch of
    one. Returns a 0-d array in ``y``'s dtype, left on ``y``'s device.
    """
    xp = array_namespace(y)
    p = target_probabilities(y, t)
    return -xp.sum(xp.log(p + LOG_EPS)) / p.shape[0]


def softmax_cross_entropy(logits, t):
    """Mean cross-entropy of ``softmax(logits)`` against labels ``t``, computed exactly.

    Uses ``log softmax = z - max - log(sum(exp(z - max)))``, so there is no ``1e-7`` fudge: its
    gradient with respect to the logits is exactly ``(softmax(logits) - onehot) / N``, which is
    what backprop computes. Returns a 0-d array on the logits' device.
    """
    xp = array_namespace(logits)
    z = xp.reshape(logits, (1, -1)) if logits.ndim == 1 else logits
    shifted = z - xp.max(z, axis=1, keepdims=True)
    log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    return -xp.sum(target_probabilities(log_probs, t)) / z.shape[0]


def numerical_gradient(f, x, h: float = 1e-4):
    """Central-difference gradient of the scalar function ``f`` at the array ``x``.

    ``f`` is called with ``x`` after each element is nudged by ``+h`` and ``-h`` in place (it is
    restored afterwards), so ``f`` may ignore its argument and read ``x`` by reference. Slow, one
    pair of calls per element; meant for checking backprop on small networks in float64.
    """
    xp = array_namespace(x)
    grad = xp.zeros_like(x)
    for idx in itertools.product(*(range(n) for n in x.shape)):
        original = xp.asarray(x[idx], copy=True)
        x[idx] = original + h
        f_plus = f(x)
        x[idx] = original - h
        f_minus = f(x)
        x[idx] = original
        grad[idx] = (f_plus - f_minus) / (2 * h)
    return grad

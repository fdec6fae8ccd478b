"""The training step on the CPU: NumPy calls arranged so that little runs besides BLAS.

At batch 100 a step's two big products take about 100 us each on one core and everything else
is some twenty NumPy calls on arrays of 1,000 to 5,000 numbers, where each call's fixed cost is
what counts. So, beyond :class:`~fastmnist.steps.generic.BufferedStep`'s folding of ``b2`` into ``W2``
and of ``lr / B`` into the output gradient:

- the hidden layer is one contiguous ``(B, H + 1)`` buffer whose last column is the constant 1
  that feeds ``b2``. ``b1`` carries a last entry of ``+inf`` there, so the sigmoid itself turns
  that column into 1 every step, and its derivative ``z (1 - z)`` turns its gradient into 0:
  every element-wise call runs over one contiguous block, none over a strided view;
- a batch arrives as its rows plus, per row, the flat position of its target in the ``(C, B)``
  logits and the scaled one-hot targets already laid out class-major (see :class:`CpuBatch`),
  so the loss reads one value per row instead of multiplying by the one-hot matrix;
- reductions call ``np.maximum.reduce``/``np.add.reduce`` directly, half the fixed cost of
  ``np.max``/``np.sum``.

The numbers are those of :class:`~fastmnist.steps.generic.PlainStep` to float32 rounding (tested).
"""
from __future__ import annotations

import numpy as np

from .generic import Rows


class CpuBatch:
    """One batch ready for :class:`CpuStep`.

    ``x`` ``(B, D)`` rows as floats in 0..1, ``flat`` ``(B,)`` the index of each row's target
    in the flattened ``(C, B)`` logits, ``tT`` ``(C, B)`` the one-hot targets times ``lr / B``.
    """

    def __init__(self, step: "CpuStep"):
        b = step.batch_size
        self.step, self.rows = step, Rows(step.source, b, step.dtype, np)
        self.x = self.rows.x
        self.flat = np.empty((b,), np.intp)
        self.tT = np.zeros((step.classes, b), step.dtype)

    def fill(self, idx, part=slice(None)) -> None:
        """Gather rows ``idx`` ``(B,)`` of the training set into this batch, or only the
        batch rows ``part`` (a slice: one thread's share, see :mod:`.threaded`)."""
        s = self.step
        self.rows.fill(idx, part)
        flat = self.flat[part]
        np.take(s.target_base, idx[part], out=flat, mode="clip")
        flat += s.offsets[part]
        self.tT[:, part] = 0
        np.put(self.tT, flat, s.scale, mode="clip")


class CpuStep:
    """SGD on NumPy; ``step(idx, losses, i)`` gathers and steps, ``compute`` steps on a
    :class:`CpuBatch` gathered elsewhere (see :mod:`fastmnist.steps.pipeline`).

    ``x`` ``(N, D)`` float or uint8 and ``labels`` ``(N,)`` integers are the training set;
    ``losses[i]`` ``(B,)`` receives the per-row losses of the batch before the update.
    ``params`` is rebound to views of the step's fused buffers.
    """

    def __init__(self, params: dict, x, labels, learning_rate: float, batch_size: int):
        d, h = params["W1"].shape
        c = params["W2"].shape[1]
        dt = params["W1"].dtype
        b = batch_size
        self.source, self.dtype, self.classes, self.batch_size = x, dt, c, b
        self.scale = dt.type(learning_rate / b)
        self.target_base = np.asarray(labels, dtype=np.intp) * b  # + row offset = flat index
        self.offsets = np.arange(b, dtype=np.intp)
        self.b1a = np.empty((h + 1,), dt)
        self.b1a[:h], self.b1a[h] = params["b1"], np.inf  # +inf: sigmoid makes the column 1
        self.W2a = np.empty((h + 1, c), dt)
        self.W2a[:h], self.W2a[h] = params["W2"], params["b2"]
        params["b1"], params["W2"], params["b2"] = self.b1a[:h], self.W2a[:h], self.W2a[h]
        self.params = params
        self.ones = np.ones((b,), dt)
        # zeros, not empty: the 1 column must start finite so that + inf makes it inf
        self.za, self.dz, self.zz = (np.zeros((b, h + 1), dt) for _ in range(3))
        self.yT = np.empty((c, b), dt)
        self.row, self.pt = np.empty((b,), dt), np.empty((b,), dt)
        self.gW1, self.gb1a, self.gW2a = np.empty((d, h), dt), np.empty((h + 1,), dt), np.empty_like(self.W2a)
        self.batch = self.new_batch()

    def new_batch(self) -> CpuBatch:
        return CpuBatch(self)

    def __call__(self, idx, losses, i: int) -> None:
        self.batch.fill(idx)
        self.compute(self.batch, losses, i)

    def compute(self, batch: CpuBatch, losses, i: int) -> None:
        """One SGD step on ``batch``."""
        W1, b1a, W2a = self.params["W1"], self.b1a, self.W2a
        za, dz, zz, yT, row, pt = self.za, self.dz, self.zz, self.yT, self.row, self.pt
        h = W1.shape[1]
        # forward: za = [sigmoid(x W1 + b1), 1] with sigmoid(a) = 1 / (1 + exp(-a))
        np.matmul(batch.x, W1, out=za[:, :h])
        za += b1a
        np.negative(za, out=za)
        np.exp(za, out=za)
        za += 1.0
        np.reciprocal(za, out=za)
        np.matmul(W2a.T, za.T, out=yT)  # logits, class-major (C, B), b2 included
        # per-row loss log(sum(exp(s))) - s[target] on the shifted logits s
        np.maximum.reduce(yT, axis=0, out=row)
        yT -= row
        np.take(yT, batch.flat, out=pt, mode="clip")
        np.exp(yT, out=yT)
        np.add.reduce(yT, axis=0, out=row)
        np.log(row, out=losses[i])
        losses[i] -= pt
        # backward: dy = (softmax - onehot) * lr / B, so the products below are the updates
        np.divide(self.scale, row, out=row)
        yT *= row
        yT -= batch.tT
        np.matmul(za.T, yT.T, out=self.gW2a)
        np.matmul(yT.T, W2a.T, out=dz)
        np.multiply(za, za, out=zz)
        np.subtract(za, zz, out=zz)  # z (1 - z): the sigmoid's derivative, 0 on the 1 column
        dz *= zz
        np.matmul(batch.x.T, dz[:, :h], out=self.gW1)
        np.matmul(self.ones, dz, out=self.gb1a)
        W1 -= self.gW1
        b1a -= self.gb1a
        W2a -= self.gW2a

"""One SGD step, written plainly and written for speed; more tuned versions build on these in
:mod:`.cpu` (NumPy) and :mod:`.cuda` (CuPy, float32).

:class:`PlainStep` is written against the array API alone (it runs under ``array_api_strict``) and
is the reference. :class:`BufferedStep` computes the same numbers on NumPy or CuPy with every
intermediate preallocated and written through ``out=``, the learning rate folded into the
output gradient, and the loss taken from the step's own forward pass: it is the GPU step's base
and runs CuPy in float64. :class:`BufferedCount` scores a whole set on the same terms.
"""
from __future__ import annotations

import warnings

from .. import agreement
from ..backend import array_namespace, to_numpy
from ..network import PARAM_NAMES, PIXEL_SCALE, as_float, backprop


class PlainStep:
    """SGD on any array-API namespace; ``step(idx, losses, i)`` updates ``params`` in place.

    ``onehot`` is ``(N, C)``; ``losses[i]`` receives the batch's loss (broadcast over its row).
    """

    def __init__(self, params: dict, x, onehot, learning_rate: float):
        self.params, self.x, self.onehot, self.lr = params, x, onehot, learning_rate
        self.xp = array_namespace(x)

    def __call__(self, idx, losses, i: int) -> None:
        xp = self.xp
        dtype = self.params["W1"].dtype
        grads, loss = backprop(self.params, as_float(xp, xp.take(self.x, idx, axis=0), dtype),
                               xp.take(self.onehot, idx, axis=0))
        for k in PARAM_NAMES:
            self.params[k] -= self.lr * grads[k]
        losses[i, ...] = loss


class Rows:
    """Gathers rows of a device-resident image set into ``x`` ``(B, D)`` as floats in 0..1.

    uint8 images stay 4x smaller on the device; their rows pass through a uint8 buffer and
    are scaled as they are gathered. Nothing is allocated per call.
    """

    def __init__(self, source, batch_size: int, dtype, xp):
        self.source, self.xp = source, xp
        self.x = xp.empty((batch_size, source.shape[1]), dtype)
        self.raw = xp.empty(self.x.shape, source.dtype) if source.dtype != dtype else None
        self.pixel_scale = dtype.type(PIXEL_SCALE)
        self.take_mode = {"mode": "clip"} if xp.__name__ == "numpy" else {}  # no bounds buffer

    def fill(self, idx, part=slice(None)) -> None:
        """Gather rows ``idx`` ``(B,)``, or only the rows ``part`` (a slice) of the batch, which
        lets several threads fill one batch (NumPy's take releases the GIL)."""
        xp = self.xp
        x = self.x[part]
        if self.raw is None:
            xp.take(self.source, idx[part], axis=0, out=x, **self.take_mode)
        else:
            raw = self.raw[part]
            xp.take(self.source, idx[part], axis=0, out=raw, **self.take_mode)
            xp.multiply(raw, self.pixel_scale, out=x)


class Batch:
    """Buffers for one batch: ``x`` ``(B, D)`` rows as floats in 0..1 and ``t`` ``(B, C)``
    their one-hot labels, both in the labels' dtype, filled without allocating."""

    def __init__(self, x, onehot, batch_size: int, xp):
        self.rows, self.onehot = Rows(x, batch_size, onehot.dtype, xp), onehot
        self.x = self.rows.x
        self.t = xp.empty((batch_size, onehot.shape[1]), onehot.dtype)

    def fill(self, idx) -> None:
        """Copy rows ``idx`` ``(B,)`` of the set into ``x`` and their one-hot labels into ``t``."""
        self.rows.fill(idx)
        self.rows.xp.take(self.onehot, idx, axis=0, out=self.t, **self.rows.take_mode)


class BufferedStep:
    """The same step for NumPy/CuPy, allocation-free after construction.

    Shapes: ``x`` ``(N, D)`` and ``onehot`` ``(N, C)``, both C-contiguous and resident on the
    device, ``idx`` ``(B,)`` rows of one batch, ``losses`` ``(steps, B)`` per-row losses.
    Nothing here copies to the host, so on CUDA a step only queues work.

    Layout choices that the measurements justified (see benchmarks/): the second layer's bias is
    an extra row of ``W2`` fed by a constant-1 column of the hidden activations, so its gradient
    and update ride along the matrix products; the logits are kept class-major ``(C, B)`` so the
    softmax reductions run along contiguous rows; the learning rate and the 1/B of the mean are
    folded into the output gradient once. ``params`` is rebound to views of the fused buffers.
    """

    def __init__(self, params: dict, x, onehot, learning_rate: float, batch_size: int, xp):
        self.xp = xp
        d, h = params["W1"].shape
        c = params["W2"].shape[1]
        dt = params["W1"].dtype
        b = batch_size
        self.scale = dt.type(learning_rate / b)
        # W2 with b2 as its last row; params["W2"], params["b2"] become views of it
        self.W2a = xp.empty((h + 1, c), dt)
        self.W2a[:h], self.W2a[h] = params["W2"], params["b2"]
        params["W2"], params["b2"] = self.W2a[:h], self.W2a[h]
        self.params = params
        self.ones = xp.ones((b,), dt)
        self.batch = Batch(x, onehot, b, xp)
        self.a1, self.dz1, self.zz = (xp.empty((b, h), dt) for _ in range(3))
        self.za = xp.ones((b, h + 1), dt)  # hidden activations plus the constant-1 column
        self.yT, self.tT_s = xp.empty((c, b), dt), xp.empty((c, b), dt)
        self.row, self.pt = xp.empty((1, b), dt), xp.empty((b,), dt)
        self.gW1, self.gb1, self.gW2a = xp.empty((d, h), dt), xp.empty((h,), dt), xp.empty_like(self.W2a)

    def __call__(self, idx, losses, i: int) -> None:
        self.batch.fill(idx)
        self.compute(self.batch, losses, i)

    def compute(self, batch: Batch, losses, i: int) -> None:
        """The step on an already gathered batch (its one-hot rows are overwritten)."""
        xp, p = self.xp, self.params
        xb, a1, dz1, zz, za, yT, row, pt = (batch.x, self.a1, self.dz1, self.zz, self.za,
                                             self.yT, self.row, self.pt)
        tT = batch.t.T
        h = a1.shape[1]
        z1 = za[:, :h]
        # forward: z1 = sigmoid(x W1 + b1) = 1 / (1 + exp(-a)), into za's first h columns.
        # exp is SIMD in NumPy and tanh is not; exp(-a) = inf gives 1 / inf = 0 as it should.
        xp.matmul(xb, p["W1"], out=a1)
        a1 += p["b1"]
        xp.negative(a1, out=a1)
        xp.exp(a1, out=a1)
        a1 += 1.0
        xp.reciprocal(a1, out=z1)
        xp.matmul(self.W2a.T, za.T, out=yT)  # logits, class-major (C, B), bias included
        xp.max(yT, axis=0, keepdims=True, out=row)
        yT -= row
        # per-row loss log(sum(exp(s))) - s[target] on the shifted logits s
        xp.multiply(yT, tT, out=self.tT_s)
        xp.sum(self.tT_s, axis=0, out=pt)
        xp.exp(yT, out=yT)
        xp.sum(yT, axis=0, keepdims=True, out=row)
        xp.log(row[0], out=losses[i])
        losses[i] -= pt
        # backward: dy = (softmax - onehot) * lr / B, so the products below are the updates
        xp.divide(self.scale, row, out=row)
        yT *= row
        tT *= self.scale
        yT -= tT
        xp.matmul(za.T, yT.T, out=self.gW2a)
        xp.matmul(yT.T, p["W2"].T, out=dz1)
        xp.multiply(z1, z1, out=zz)
        xp.subtract(z1, zz, out=zz)  # z (1 - z): the sigmoid's derivative
        dz1 *= zz
        xp.matmul(xb.T, dz1, out=self.gW1)
        xp.matmul(self.ones, dz1, out=self.gb1)
        p["W1"] -= self.gW1
        p["b1"] -= self.gb1
        self.W2a -= self.gW2a


class BufferedCount:
    """How many rows of a device set a network classifies correctly, for NumPy/CuPy.

    Works through the set in chunks on preallocated buffers. Only the argmax of the logits
    matters, so the sigmoid's affine part is folded into the output layer: with
    ``u = tanh(a / 2)`` the hidden units are ``(u + 1) / 2`` and
    ``argmax(z W2 + b2) = argmax(u W2 + (1 W2 + 2 b2))``, which saves three passes per chunk.
    """

    def __init__(self, params: dict, xp, chunk: int = 10_000):
        self.params, self.xp, self.chunk = params, xp, chunk
        d, h = params["W1"].shape
        dt = params["W1"].dtype
        self.a = xp.empty((chunk, h), dt)
        self.xf = None  # a float buffer for uint8 chunks, made on first use
        self.d, self.pixel_scale = d, dt.type(PIXEL_SCALE)
        self.y = xp.empty((chunk, params["W2"].shape[1]), dt)

    def __call__(self, x, t_idx):
        """Correct rows of ``x`` ``(N, D)`` against labels ``t_idx`` ``(N,)`` (0-d device array)."""
        correct = self.xp.zeros((), dtype=self.xp.int64)
        for part in self.chunks(x, t_idx):
            correct += part
        return correct

    def chunks(self, x, t_idx):
        """Yield the correct count of each chunk of rows in turn, from the parameters as they
        are when the first chunk is asked for."""
        xp, p = self.xp, self.params
        shift = xp.sum(p["W2"], axis=0) + 2 * p["b2"]
        half_W1, half_b1 = 0.5 * p["W1"], 0.5 * p["b1"]
        n = x.shape[0]
        for start in range(0, n, self.chunk):
            rows = min(self.chunk, n - start)
            a, y = self.a[:rows], self.y[:rows]
            xc = x[start:start + rows]
            if xc.dtype != a.dtype:
                if self.xf is None:
                    self.xf = xp.empty((self.chunk, self.d), a.dtype)
                xc = xp.multiply(xc, self.pixel_scale, out=self.xf[:rows])
            xp.matmul(xc, half_W1, out=a)
            a += half_b1
            xp.tanh(a, out=a)
            xp.matmul(a, p["W2"], out=y)
            y += shift
            yield xp.count_nonzero(xp.argmax(y, axis=1) == t_idx[start:start + rows])


class CheckedCount:
    """A full-set scorer checked on its first call against a plain one.

    ``fast`` and ``plain`` are ``count(x, t_idx)`` callables returning 0-d device counts (on a
    GPU: :class:`BufferedCount` and ``TwoLayerNet.count_correct``; on the CPU at large batches:
    :class:`~fastmnist.steps.tiled.TiledCount` and :class:`BufferedCount`). Their first
    counts may differ only by rows whose class float rounding can flip
    (:func:`fastmnist.agreement.uncertain_rows`); beyond that, or if ``fast`` fails, it warns
    once and scores with ``plain`` from then on. With ``rows``, only a set's first ``rows``
    rows are scored both ways.
    """

    def __init__(self, fast, plain, params: dict, rows: int | None = None):
        self.fast, self.plain, self.params, self.rows = fast, plain, params, rows
        self.checked, self.reason = False, None

    def __call__(self, x, t_idx):
        if not self.checked:
            self.checked = True
            if self.rows is None or x.shape[0] <= self.rows:
                return self._check(x, t_idx)
            self._check(x[:self.rows], t_idx[:self.rows])  # then the whole set, as from now on
        return (self.plain if self.reason else self.fast)(x, t_idx)

    def _check(self, x, t_idx):
        """The plain count of ``x``, after comparing the fast one with it."""
        expected = self.plain(x, t_idx)
        try:
            got = int(to_numpy(self.fast(x, t_idx)))
        except Exception as exc:
            self.reason = f"it failed ({type(exc).__name__}: {first_line(exc)})"
        else:
            want = int(to_numpy(expected))
            if got != want:
                (d, h), c = self.params["W1"].shape, self.params["W2"].shape[1]
                tol = agreement.tolerance(self.params["W1"].dtype,
                                          agreement.terms_per_step((d, h, c), 1))
                flips = agreement.uncertain_rows(self.params, x, tol)
                if abs(got - want) > flips:
                    self.reason = (f"it counted {got} correct rows where the plain scorer "
                                   f"counted {want} (rounding could change {flips})")
        if self.reason:
            warnings.warn(f"the fast full-set scoring was not used: {self.reason}; scoring "
                          "with the plain forward pass", RuntimeWarning, stacklevel=3)
        return expected


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (compiler logs run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

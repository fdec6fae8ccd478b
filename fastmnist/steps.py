"""One SGD step, two ways.

:class:`PlainStep` is written against the array API alone (it runs under ``array_api_strict``) and
is the reference. :class:`BufferedStep` computes the same numbers on NumPy or CuPy with every
intermediate preallocated and written through ``out=``, the learning rate folded into the
output gradient, and the loss taken from the step's own forward pass: it is what training uses
on those backends.
"""
from __future__ import annotations

from .backend import array_namespace
from .network import PARAM_NAMES, backprop


class PlainStep:
    """SGD on any array-API namespace; ``step(idx, losses, i)`` updates ``params`` in place."""

    def __init__(self, params: dict, x, onehot, learning_rate: float):
        self.params, self.x, self.onehot, self.lr = params, x, onehot, learning_rate
        self.xp = array_namespace(x)

    def __call__(self, idx, losses, i: int) -> None:
        xp = self.xp
        grads, loss = backprop(self.params, xp.take(self.x, idx, axis=0),
                               xp.take(self.onehot, idx, axis=0))
        for k in PARAM_NAMES:
            self.params[k] -= self.lr * grads[k]
        losses[i] = loss


class BufferedStep:
    """The same step for NumPy/CuPy, allocation-free after construction.

    Shapes: ``x`` ``(N, D)`` and ``onehot`` ``(N, C)`` resident on the device, ``idx`` ``(B,)``
    integer rows of one batch. Nothing here copies to the host, so on CUDA a step only queues work.
    """

    def __init__(self, params: dict, x, onehot, learning_rate: float, batch_size: int, xp):
        self.params, self.x, self.onehot, self.xp = params, x, onehot, xp
        d, h = params["W1"].shape
        c = params["W2"].shape[1]
        dt = params["W1"].dtype
        b = batch_size
        self.scale = dt.type(learning_rate / b)  # lr and the 1/B of the mean, applied once to dy
        self.xb, self.tb = xp.empty((b, d), dt), xp.empty((b, c), dt)
        self.z1, self.dz1, self.zz = xp.empty((b, h), dt), xp.empty((b, h), dt), xp.empty((b, h), dt)
        self.y, self.yt, self.col = xp.empty((b, c), dt), xp.empty((b, c), dt), xp.empty((b, 1), dt)
        self.pt = xp.empty((b,), dt)
        self.grads = {k: xp.empty_like(v) for k, v in params.items()}

    def __call__(self, idx, losses, i: int) -> None:
        xp, p, g = self.xp, self.params, self.grads
        xb, tb, z1, dz1, zz, y, col, pt = (self.xb, self.tb, self.z1, self.dz1, self.zz,
                                           self.y, self.col, self.pt)
        xp.take(self.x, idx, axis=0, out=xb)
        xp.take(self.onehot, idx, axis=0, out=tb)
        # forward: z1 = sigmoid(x W1 + b1) as 0.5 tanh(a / 2) + 0.5, in place
        xp.matmul(xb, p["W1"], out=z1)
        z1 += p["b1"]
        z1 *= 0.5
        xp.tanh(z1, out=z1)
        z1 *= 0.5
        z1 += 0.5
        xp.matmul(z1, p["W2"], out=y)
        y += p["b2"]
        xp.max(y, axis=1, keepdims=True, out=col)
        y -= col
        # loss = mean(log(sum(exp(s))) - s[target]) on shifted logits s, kept on the device
        xp.multiply(y, tb, out=self.yt)
        xp.sum(self.yt, axis=1, out=pt)
        xp.exp(y, out=y)
        xp.sum(y, axis=1, keepdims=True, out=col)
        y /= col
        losses[i] = xp.mean(xp.log(col)) - xp.mean(pt)
        # backward: dy = (y - t) * lr / B, so the products below are the updates themselves
        y -= tb
        y *= self.scale
        xp.matmul(z1.T, y, out=g["W2"])
        xp.sum(y, axis=0, out=g["b2"])
        xp.matmul(y, p["W2"].T, out=dz1)
        xp.multiply(z1, z1, out=zz)
        z1 -= zz  # z1 (1 - z1): the sigmoid's derivative
        dz1 *= z1
        xp.matmul(xb.T, dz1, out=g["W1"])
        xp.sum(dz1, axis=0, out=g["b1"])
        for k in PARAM_NAMES:
            p[k] -= g[k]

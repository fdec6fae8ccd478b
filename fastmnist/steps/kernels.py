"""The GPU step's CUDA C kernels, in one place: the sources CuPy compiles at run time (and that
tests/test_nvcc.py compiles with nvcc for the GPUs we target), and what each one computes,
written in NumPy.

Three kernels cover the step's element-wise work (see :class:`~fastmnist.steps.cuda.FusedStep`):

- ``bias_sigmoid(a, b, z)``: ``z = sigmoid(a + b)`` for the hidden layer, ``b`` broadcast over rows;
- ``softmax_xent(yT, t, loss, scale)``: logits ``yT`` ``(C, B)`` class-major and one-hot rows
  ``t`` ``(B, C)``; leaves ``(softmax - onehot) * scale`` in ``yT`` and each row's cross-entropy
  in ``loss`` ``(B,)``;
- ``sigmoid_backward(z, dz)``: ``dz *= z (1 - z)``.

:class:`CudaKernels` launches the CUDA versions (``xp`` is CuPy: nothing here imports it) and
:class:`NumpyKernels` is their reference, with the same calls: the CUDA tests hold each kernel
to it, and the CPU tests run :class:`~fastmnist.steps.cuda.FusedStep` on it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Elementwise(NamedTuple):
    """The arguments of ``cupy.ElementwiseKernel``: CuPy wraps ``operation`` in a loop over
    the elements, with each input bound as ``const T &name`` and each output as ``T &name``."""

    in_params: str
    out_params: str
    operation: str
    name: str


class Raw(NamedTuple):
    """A whole CUDA C source for ``cupy.RawKernel`` and the ``extern "C"`` function it defines."""

    source: str
    name: str


BIAS_SIGMOID = Elementwise("T a, T b", "T z", "z = 1 / (1 + exp(-(a + b)))",
                           "fastmnist_bias_sigmoid")
SIGMOID_BACKWARD = Elementwise("T z", "T dz", "dz = dz * z * (1 - z)",
                               "fastmnist_sigmoid_backward")
SOFTMAX_XENT = Raw(r"""
extern "C" __global__ void fastmnist_softmax_xent(float* y, const float* t, float* loss,
                                                  const float scale, const int classes,
                                                  const int batch) {
    // y: logits, class-major (classes, batch); t: one-hot rows (batch, classes).
    // Leaves (softmax - onehot) * scale in y and each row's cross-entropy in loss.
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= batch) return;
    float m = y[r];
    for (int c = 1; c < classes; ++c) m = fmaxf(m, y[c * batch + r]);
    float total = 0.f, target = 0.f;
    for (int c = 0; c < classes; ++c) {
        float s = y[c * batch + r] - m;
        target += t[r * classes + c] * s;
        float e = expf(s);
        total += e;
        y[c * batch + r] = e;
    }
    loss[r] = logf(total) - target;
    float inv = scale / total;
    for (int c = 0; c < classes; ++c)
        y[c * batch + r] = y[c * batch + r] * inv - t[r * classes + c] * scale;
}
""", "fastmnist_softmax_xent")

ELEMENTWISE = (BIAS_SIGMOID, SIGMOID_BACKWARD)
RAW = (SOFTMAX_XENT,)
THREADS = 128  # threads per block of the softmax kernel: one thread per batch row


class CudaKernels:
    """The kernels compiled by CuPy for float32 device arrays; each call queues one launch.

    CuPy compiles a kernel on its first call, so a compiler error surfaces there (as a
    ``cupy.cuda.compiler.CompileException``), where the step's self-check catches it.
    """

    def __init__(self, xp):
        self.xp = xp
        self._bias_sigmoid = xp.ElementwiseKernel(*BIAS_SIGMOID)
        self._sigmoid_backward = xp.ElementwiseKernel(*SIGMOID_BACKWARD)
        self._softmax_xent = xp.RawKernel(*SOFTMAX_XENT)

    def bias_sigmoid(self, a, b, z) -> None:
        self._bias_sigmoid(a, b, z)

    def sigmoid_backward(self, z, dz) -> None:
        self._sigmoid_backward(z, dz)

    def softmax_xent(self, yT, t, loss, scale) -> None:
        c, b = yT.shape
        blocks = (b + THREADS - 1) // THREADS
        self._softmax_xent((blocks,), (THREADS,), (yT, t, loss, np.float32(scale),
                                                   np.int32(c), np.int32(b)))


class NumpyKernels:
    """What each kernel computes, on NumPy arrays, in place like the kernels."""

    def bias_sigmoid(self, a, b, z) -> None:
        np.add(a, b, out=z)
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1
        np.reciprocal(z, out=z)

    def sigmoid_backward(self, z, dz) -> None:
        dz *= z * (1 - z)

    def softmax_xent(self, yT, t, loss, scale) -> None:
        s = yT - yT.max(axis=0)
        e = np.exp(s)
        total = e.sum(axis=0)
        np.subtract(np.log(total), (s * t.T).sum(axis=0), out=loss)
        np.subtract(e * (scale / total), t.T * yT.dtype.type(scale), out=yT)

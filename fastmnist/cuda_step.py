"""The training step on a CUDA GPU: fused CuPy kernels and an optional CUDA-graph replay.

A step of this small network is launch-bound on a GPU: the arithmetic takes microseconds, each
kernel launch several. :class:`CudaStep` keeps :class:`~fastmnist.steps.BufferedStep`'s buffers
and layout but runs each element-wise stretch as one kernel (bias + sigmoid; softmax +
cross-entropy + output gradient; sigmoid derivative), then records the whole step once as a CUDA
graph and replays it, one launch per step. The graph is checked against an eager step on the
first batch; if capture fails or the results differ, it says so and stays eager.

CuPy reaches this module only as ``backend.xp``: nothing here imports it.
"""
from __future__ import annotations

import warnings

from .steps import BufferedStep

SOFTMAX_XENT = r"""
extern "C" __global__ void softmax_xent(float* y, const float* t, float* loss,
                                        const float scale, const int classes, const int batch) {
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
"""


class CudaStep(BufferedStep):
    """:class:`BufferedStep` with fused kernels and graph replay (float32 on CuPy only)."""

    def __init__(self, params, x, onehot, learning_rate, batch_size, xp, graph: bool = True):
        super().__init__(params, x, onehot, learning_rate, batch_size, xp)
        self.bias_sigmoid = xp.ElementwiseKernel(
            "T a, T b", "T z", "z = 1 / (1 + exp(-(a + b)))", "fastmnist_bias_sigmoid")
        self.sigmoid_backward = xp.ElementwiseKernel(
            "T z", "T dz", "dz = dz * z * (1 - z)", "fastmnist_sigmoid_backward")
        self.softmax_xent = xp.RawKernel(SOFTMAX_XENT, "softmax_xent")
        b = batch_size
        self.idx = xp.zeros((b,), xp.int64)  # the graph reads its batch from these fixed buffers
        self.loss_rows = xp.zeros((b,), self.W2a.dtype)
        self.use_graph, self.graph, self.stream = graph, None, None  # capture needs its own stream

    def eager(self) -> None:
        """One step from ``self.idx``, leaving per-row losses in ``self.loss_rows``."""
        xp, p = self.xp, self.params
        h = self.a1.shape[1]
        c, b = self.yT.shape
        z1 = self.za[:, :h]
        self.batch.fill(self.idx)
        xp.matmul(self.batch.x, p["W1"], out=self.a1)
        self.bias_sigmoid(self.a1, p["b1"], z1)
        xp.matmul(self.W2a.T, self.za.T, out=self.yT)
        threads = 128
        self.softmax_xent(((b + threads - 1) // threads,), (threads,),
                          (self.yT, self.batch.t, self.loss_rows, self.scale, xp.int32(c), xp.int32(b)))
        xp.matmul(self.za.T, self.yT.T, out=self.gW2a)
        xp.matmul(self.yT.T, p["W2"].T, out=self.dz1)
        self.sigmoid_backward(z1, self.dz1)
        xp.matmul(self.batch.x.T, self.dz1, out=self.gW1)
        xp.matmul(self.ones, self.dz1, out=self.gb1)
        p["W1"] -= self.gW1
        p["b1"] -= self.gb1
        self.W2a -= self.gW2a

    def __call__(self, idx, losses, i: int) -> None:
        self.idx[...] = idx
        if self.use_graph and self.graph is None:
            self.graph = self.capture_checked()
            if self.graph is None:
                self.use_graph = False
            losses[i] = self.loss_rows  # capture_checked has already taken this step
            return
        if self.graph is not None:
            self.graph.launch()  # on the current stream, in order with the copies around it
        else:
            self.eager()
        losses[i] = self.loss_rows

    def capture_checked(self):
        """Capture :meth:`eager` as a CUDA graph and check it on the current batch.

        Takes the step once eagerly and once through the graph from the same parameters; keeps
        the graph only when both agree. Either way the parameters end one step further on.
        """
        xp = self.xp
        before = {k: v.copy() for k, v in self._state().items()}
        self.eager()
        expected = {k: v.copy() for k, v in self._state().items()}
        expected_loss = self.loss_rows.copy()
        try:
            self.stream = xp.cuda.Stream(non_blocking=True)
            with self.stream:
                self.stream.begin_capture()
                try:
                    self.eager()
                finally:
                    graph = self.stream.end_capture()
            for k, v in self._state().items():
                v[...] = before[k]
            graph.launch()
            xp.cuda.Device().synchronize()
        except Exception as exc:  # capture unsupported by this driver/CuPy/allocator
            self._restore(expected, expected_loss)
            warnings.warn(f"CUDA graph capture failed ({exc}); running the step eagerly",
                          RuntimeWarning, stacklevel=3)
            return None
        same = all(bool(xp.allclose(v, expected[k], rtol=1e-5, atol=1e-7))
                   for k, v in self._state().items())
        if not same:
            self._restore(expected, expected_loss)
            warnings.warn("the CUDA graph's step differed from the eager step; running eagerly",
                          RuntimeWarning, stacklevel=3)
            return None
        return graph

    def _state(self) -> dict:
        return {"W1": self.params["W1"], "b1": self.params["b1"], "W2a": self.W2a}

    def _restore(self, state: dict, loss) -> None:
        for k, v in self._state().items():
            v[...] = state[k]
        self.loss_rows[...] = loss

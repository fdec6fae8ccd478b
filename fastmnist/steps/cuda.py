"""The training step on a CUDA GPU: fused kernels and a CUDA-graph replay, each checked at run
time against code that the tests run, and left for that code when they disagree.

A step of this small network is launch-bound on a GPU: the arithmetic takes microseconds, each
kernel launch several. :class:`FusedStep` keeps :class:`~fastmnist.steps.generic.BufferedStep`'s buffers
and layout but runs each element-wise stretch as one kernel (:mod:`fastmnist.steps.kernels`), and
:class:`CudaStep` records the whole step once as a CUDA graph and replays it, one launch a step.

Neither is trusted blindly. On its first batch :class:`FusedStep` takes the step twice from the
same parameters, once with the fused kernels and once with BufferedStep's generic array calls
(the code the CPU tests check against the reference step), and compares the updates and losses
(:mod:`fastmnist.agreement`). If they differ beyond float32 rounding, or a kernel fails to
compile or launch, it warns once with the reason and keeps the generic step. The CUDA graph is
checked the same way against the eager fused step. :class:`~fastmnist.steps.generic.CheckedCount`
does the same for the full-set scoring. These checks copy to the host once, on the first step
or scoring only.

CuPy reaches this module only as ``backend.xp``: nothing here imports it.
"""
from __future__ import annotations

import warnings

from .. import agreement
from ..backend import to_numpy
from .kernels import CudaKernels
from .generic import BufferedStep, first_line


class FusedStep(BufferedStep):
    """:class:`BufferedStep` with its element-wise work in three kernels, self-checked.

    ``kernels`` provides ``bias_sigmoid``, ``softmax_xent`` and ``sigmoid_backward``
    (:class:`~fastmnist.steps.kernels.CudaKernels` on a GPU; :class:`~fastmnist.steps.kernels.NumpyKernels`
    or a deliberately broken one in tests). After the first step, ``fused`` says which path
    runs (True: the kernels; False: the generic calls) and ``reason`` why not the kernels.
    """

    def __init__(self, params, x, onehot, learning_rate, batch_size, xp, kernels):
        super().__init__(params, x, onehot, learning_rate, batch_size, xp)
        self.kernels = kernels
        self.idx = xp.zeros((batch_size,), xp.int64)  # the graph reads its batch from here
        self.loss_rows = xp.zeros((1, batch_size), self.W2a.dtype)  # one step's per-row losses
        self.tol = agreement.tolerance(self.W2a.dtype, agreement.terms_per_step(
            (self.gW1.shape[0], self.a1.shape[1], self.yT.shape[0]), batch_size))
        self.fused, self.reason = None, None

    def __call__(self, idx, losses, i: int) -> None:
        self.idx[...] = idx
        if self.fused is None:
            self.fused = self.check_fused()
        elif self.fused:
            self.eager()
        else:
            self.generic()
        losses[i] = self.loss_rows[0]

    def eager(self) -> None:
        """One fused step from the rows in ``self.idx``; per-row losses into ``loss_rows``."""
        xp, p, k = self.xp, self.params, self.kernels
        h = self.a1.shape[1]
        z1 = self.za[:, :h]
        self.batch.fill(self.idx)
        xp.matmul(self.batch.x, p["W1"], out=self.a1)
        k.bias_sigmoid(self.a1, p["b1"], z1)
        xp.matmul(self.W2a.T, self.za.T, out=self.yT)
        k.softmax_xent(self.yT, self.batch.t, self.loss_rows[0], self.scale)
        xp.matmul(self.za.T, self.yT.T, out=self.gW2a)
        xp.matmul(self.yT.T, p["W2"].T, out=self.dz1)
        k.sigmoid_backward(z1, self.dz1)
        xp.matmul(self.batch.x.T, self.dz1, out=self.gW1)
        xp.matmul(self.ones, self.dz1, out=self.gb1)
        p["W1"] -= self.gW1
        p["b1"] -= self.gb1
        self.W2a -= self.gW2a

    def generic(self) -> None:
        """The same step with BufferedStep's generic array calls."""
        self.batch.fill(self.idx)
        self.compute(self.batch, self.loss_rows, 0)

    def check_fused(self) -> bool:
        """Take this step generically and fused from the same parameters; keep the fused kernels
        only if both agree. Either way the parameters end one (correct) step further on."""
        before = self.state()
        self.generic()
        expected = self.state()
        self.restore(before)
        try:
            self.eager()
            problem = self.differs_from(expected, before)
            problem = problem and f"it disagrees with the generic step: {problem}"
        except Exception as exc:  # a kernel that does not compile or launch
            problem = f"a fused kernel failed ({type(exc).__name__}: {first_line(exc)})"
        if problem is None:
            return True
        self.restore(expected)
        self.reason = f"the fused CUDA step was not used: {problem}"
        warnings.warn(f"{self.reason}; training with the generic step (slower, same results)",
                      RuntimeWarning, stacklevel=3)
        return False

    def differs_from(self, expected: dict, before: dict) -> str | None:
        """What in the current parameters and losses differs from ``expected`` beyond the
        rounding of one step taken from ``before``; None when nothing does."""
        now = self.state()

        def params(state: dict) -> dict:
            return {k: state[k] for k in ("W1", "b1", "W2a")}

        return (agreement.disagreement(params(now), params(expected), self.tol, params(before))
                or agreement.disagreement({"loss": now["loss"]}, {"loss": expected["loss"]},
                                          self.tol))

    def state(self) -> dict:
        """Copies of what a step changes: parameters (``b2`` is ``W2a``'s last row) and losses."""
        return {"W1": self.params["W1"].copy(), "b1": self.params["b1"].copy(),
                "W2a": self.W2a.copy(), "loss": self.loss_rows.copy()}

    def restore(self, state: dict) -> None:
        for k, v in (("W1", self.params["W1"]), ("b1", self.params["b1"]),
                     ("W2a", self.W2a), ("loss", self.loss_rows)):
            v[...] = state[k]


class CudaStep(FusedStep):
    """:class:`FusedStep` on CuPy in float32, replayed as a CUDA graph (unless ``graph`` is
    False) once the fused kernels have passed their check; ``graph_reason`` says why not, when
    the graph was tried and left out."""

    def __init__(self, params, x, onehot, learning_rate, batch_size, xp, graph: bool = True):
        super().__init__(params, x, onehot, learning_rate, batch_size, xp, CudaKernels(xp))
        self.use_graph, self.graph, self.stream = graph, None, None  # capture needs its own stream
        self.graph_reason = None
        self.graph_unsupported = False  # this CuPy refuses to capture the step (no fault in it)

    def __call__(self, idx, losses, i: int) -> None:
        if not (self.fused and self.use_graph):
            super().__call__(idx, losses, i)
            return
        self.idx[...] = idx
        if self.graph is None:
            self.graph = self.capture_checked()  # takes this step
            self.use_graph = self.graph is not None
        else:
            self.graph.launch()  # on the current stream, in order with the copies around it
        losses[i] = self.loss_rows[0]

    def capture_checked(self):
        """Capture :meth:`eager` as a CUDA graph and check it on the current batch.

        Takes the step once eagerly and once through the graph from the same parameters; keeps
        the graph only when both agree. Either way the parameters end one step further on.
        """
        xp = self.xp
        before = self.state()
        self.eager()
        expected = self.state()
        try:
            self.stream = xp.cuda.Stream(non_blocking=True)
            with self.stream:
                self.stream.begin_capture()
                try:
                    self.eager()
                finally:
                    graph = self.stream.end_capture()
            self.restore(before)
            graph.launch()
            xp.cuda.Device().synchronize()
            problem = self.differs_from(expected, before)
        except NotImplementedError as exc:  # CuPy 14 refuses cuBLAS calls while capturing
            self.graph_unsupported = True
            problem = f"CuPy cannot capture it ({first_line(exc)})"
        except Exception as exc:  # capture unsupported by this driver/CuPy/allocator
            problem = f"capture failed ({type(exc).__name__}: {first_line(exc)})"
        if problem is None:
            return graph
        self.restore(expected)
        self.graph_reason = f"the CUDA graph of the step was not used: {problem}"
        if not self.graph_unsupported:  # a limit of CuPy's is no fault to warn about
            warnings.warn(f"{self.graph_reason}; running the fused step eagerly", RuntimeWarning,
                          stacklevel=3)
        return None

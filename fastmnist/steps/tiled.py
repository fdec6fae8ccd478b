"""Large batches compiled: each core takes its share of the batch's rows in one C call.

:class:`~fastmnist.steps.threaded.ThreadedStep` walks a batch of 10,000 rows as whole arrays:
it gathers the rows into a ``(B, 784)`` buffer (31 MB in float32), and BLAS reads that buffer
again for ``x W1`` and once more for ``x.T dz``, all from memory. Nothing in this network mixes
rows until the weight gradients are summed, so :class:`TiledStep` hands each core a block of
the batch's rows instead, and ``fastmnist_grads_*`` in ``compiled_step.c`` walks it 256 rows
at a time: gather the tile's rows, both products and every pass between them, while the tile
sits in the core's cache. Each core's products run on that core alone (BLAS is held to one
thread meanwhile), each core sums its block's gradients, and the step adds those up and
subtracts them from the weights. Measured against ThreadedStep in one process on 2 cores, about
half the time at batch 10,000 and 60,000, hidden 50 and 256 (see README).

Before its first step, the kernel's gradients of the batch's first 512 rows are checked against
NumPy's; a disagreement, or a kernel that is not there, leaves the threaded NumPy step in charge.
:class:`TiledCount` scores a whole set the same way on the step's threads, so that training
never wakes OpenBLAS's own threads, which spin for a while after each multi-threaded product
and would take a core from the tiles (measured: 40% slower right after one).
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, NamedTuple

import numpy as np

from ..agreement import disagreement, terms_per_step, tolerance
from ..network import PIXEL_SCALE, as_float, backprop, one_hot
from . import compiled
from .compiled import P, SIZE, address
from .threaded import THREADED_MIN_BATCH, Team, ThreadedStep, thread_budget, worth_threading

TILE_ROWS = 256  # 256 x 784 float32 rows are 800 KB: in a core's L2 with the tile's products
CHECK_ROWS = 512  # rows of the first batch the kernel is checked on: two tiles


class Kernel(NamedTuple):
    """``fastmnist_grads_*`` for one dtype, and OpenBLAS's (global) thread count get and set."""
    step: compiled.Step
    get_threads: Callable[[], int]
    set_threads: Callable[[int], None]


@lru_cache(maxsize=None)
def grads_kernel(dtype_name: str) -> Kernel:
    """The tiled kernel for ``dtype_name``; raises ``OSError`` saying why where there is none."""
    # gemm, lo, hi, T, D, H, C, W1, b1a, W2a, src, pixel_scale, labels, scale,
    # xt, a1, za, y, dz, gb1a, gW1, gW2a, idx, loss
    step = compiled.compiled_function("grads", dtype_name,
                                      [P] + [SIZE] * 6 + [P] * 4 + ["real", P, "real"] + [P] * 10)
    _, blas = compiled.libraries()
    get, put = blas.scipy_openblas_get_num_threads64_, blas.scipy_openblas_set_num_threads64_
    get.argtypes, get.restype = [], ctypes.c_int
    put.argtypes, put.restype = [ctypes.c_int], None
    return Kernel(step, get, put)


@lru_cache(maxsize=None)
def count_kernel(dtype_name: str) -> Kernel:
    """``fastmnist_count_*`` for ``dtype_name``, as :func:`grads_kernel`."""
    # gemm, lo, hi, T, D, H, C, W1, b1a, W2a, src, pixel_scale, labels, xt, a1, za, y
    step = compiled.compiled_function("count", dtype_name,
                                      [P] + [SIZE] * 6 + [P] * 4 + ["real"] + [P] * 5,
                                      restype=ctypes.c_int64)
    return grads_kernel(dtype_name)._replace(step=step)


@contextmanager
def one_blas_thread(kernel: Kernel):
    """BLAS held to one thread per call inside the block (so that each of our threads'
    products stays on its own core, and OpenBLAS's own threads stay asleep), then put back.
    It is OpenBLAS's only setting: its "per-thread" one, ``openblas_set_num_threads_local``,
    sets the same global count."""
    threads = kernel.get_threads()
    kernel.set_threads(1)
    try:
        yield
    finally:
        kernel.set_threads(threads)


def describe() -> str:
    """Which step training takes for large batches here, in one line (``fastmnist info``)."""
    threads = thread_budget()
    if not worth_threading(THREADED_MIN_BATCH, threads):
        return f"the serial step (this process may use {threads} thread: taskset, OMP_NUM_THREADS)"
    kind = "the NumPy step threaded"
    if compiled.setting() != "off":
        try:
            grads_kernel("float32")
        except OSError:
            pass
        else:
            kind = "the tiled compiled step"
    return f"{kind}, from {THREADED_MIN_BATCH:,} rows a batch, on {threads} threads"


class TiledStep(ThreadedStep):
    """SGD on a large batch, one ``fastmnist_grads_*`` call per thread over its block of rows
    (``compiled`` says whether it still steps compiled; the threaded NumPy step otherwise).

    ``x`` ``(N, D)`` the training set, in the weights' dtype or uint8 pixels, C-ordered;
    ``params["W1"]`` is rebound to a C-ordered copy when it is not one already."""

    def __init__(self, params: dict, x, labels, learning_rate: float, batch_size: int,
                 threads: int, tile: int = TILE_ROWS):
        dt = params["W1"].dtype
        self.kernel = grads_kernel(dt.name)  # before any thread starts: OSError where none
        if not (x.flags.c_contiguous and x.dtype in (np.uint8, dt)):
            order = "" if x.flags.c_contiguous else ", not C-ordered"
            raise OSError(f"the training set is {x.dtype}{order}: the compiled step gathers "
                          f"C-ordered uint8 or {dt.name} rows")
        params["W1"] = np.ascontiguousarray(params["W1"])
        super().__init__(params, x, labels, learning_rate, batch_size, threads)
        self.labels = np.ascontiguousarray(labels, dtype=np.intp)
        (d, h), c = self.params["W1"].shape, self.classes
        pixel_scale = PIXEL_SCALE if x.dtype == np.uint8 else 0.0
        real = self.kernel.step.real
        self.sums, self.fixed, self.scratch = [], [], []  # the buffers behind the addresses
        for j, block in enumerate(self.blocks):
            rows = min(tile, block.stop - block.start)
            scratch = [np.empty(shape, dt) for shape in
                       ((rows, d), (rows, h), (rows, h + 1), (rows, c), (rows, h))]
            # block 0 sums into the NumPy step's own gradient buffers; the others into their own
            sums = ((self.gb1a, self.gW1, self.gW2a) if j == 0 else
                    (np.empty_like(self.gb1a), np.empty_like(self.gW1), np.empty_like(self.gW2a)))
            self.sums.append(sums)
            self.scratch.append(scratch)
            # every argument but the batch's rows and its losses' row (see grads_kernel)
            self.fixed.append((
                ctypes.c_void_p(self.kernel.step.gemm), SIZE(block.start), SIZE(block.stop),
                *map(SIZE, (rows, d, h, c)),
                *map(address, (self.params["W1"], self.b1a, self.W2a, x)), real(pixel_scale),
                address(self.labels), real(self.scale), *map(address, scratch + list(sums))))
        self.idx_at, self.loss_at = None, None
        self.compiled, self.checked = True, False

    def __call__(self, idx, losses, i: int) -> None:
        if not self.compiled:
            return super().__call__(idx, losses, i)
        idx = np.ascontiguousarray(idx, dtype=np.intp)
        if not self.checked:
            self.checked = True
            try:
                problem = self.kernel_disagrees(idx)
            except Exception as exc:  # noqa: BLE001 - whatever goes wrong, NumPy does the job
                problem = exc
            if problem is not None:
                self.compiled = False
                compiled.unavailable(problem)
                return super().__call__(idx, losses, i)
        self.idx_at, self.loss_at = address(idx), compiled.loss_address(losses, i, self.dtype)
        with one_blas_thread(self.kernel):
            self.team.run(self._grads)
        gb1a, gW1, gW2a = self.sums[0]
        for more in self.sums[1:]:
            gb1a += more[0]
            gW1 += more[1]
            gW2a += more[2]
        self.params["W1"] -= gW1
        self.b1a[:-1] -= gb1a[:-1]  # the last entry stays +inf
        self.W2a -= gW2a

    def kernel_disagrees(self, idx: np.ndarray) -> AssertionError | None:
        """Check the kernel before its first step: its gradients of the batch's first
        ``CHECK_ROWS`` rows (one call on this thread) against NumPy's backprop of the same
        rows. Cheaper than a whole second step, and no product wakes OpenBLAS's threads."""
        n = min(CHECK_ROWS, idx.shape[0])
        (d, h), c = self.params["W1"].shape, self.classes
        loss = np.zeros((n,), self.dtype)
        first = self.fixed[0]  # block 0's arguments, its rows (lo, hi) replaced by (0, n)
        with one_blas_thread(self.kernel):
            self.kernel.step.call(first[0], SIZE(0), SIZE(n), *first[3:], address(idx),
                                  address(loss))
            rows = as_float(np, self.source[idx[:n]], self.dtype)
            p = {"W1": self.params["W1"], "b1": self.b1a[:h], "W2": self.W2a[:h],
                 "b2": self.W2a[h]}
            grads, mean_loss = backprop(p, rows, one_hot(self.labels[idx[:n]], c, self.dtype))
        gb1a, gW1, gW2a = self.sums[0]
        per_row = n * self.scale  # the kernel sums each row's gradient times lr / B
        got = {"W1": gW1, "b1": gb1a[:h], "W2": gW2a[:h], "b2": gW2a[h]}
        tol = tolerance(np.dtype(self.dtype).name, terms_per_step((d, h, c), n))
        problem = (disagreement(got, {k: v * per_row for k, v in grads.items()}, tol)
                   or disagreement({"loss": loss.mean()}, {"loss": mean_loss}, tol))
        return None if problem is None else AssertionError(
            f"its gradients of {n} rows differ from NumPy's: {problem}")

    def _grads(self, j: int) -> None:
        self.kernel.step.call(*self.fixed[j], self.idx_at, self.loss_at)


class TiledCount:
    """How many rows of a set the network classifies correctly, each thread of ``team`` (a
    :class:`~fastmnist.steps.threaded.Team`, e.g. a :class:`TiledStep`'s) counting its block
    of rows in one ``fastmnist_count_*`` call: the step's forward pass, tile by tile in cache.

    ``count(x, t_idx)`` takes ``x`` ``(N, D)`` floats in the weights' dtype or uint8 pixels,
    C-ordered, and ``t_idx`` ``(N,)`` integer labels, and reads ``params`` as they are at the
    call. Like :class:`TiledStep` it leaves OpenBLAS's own threads asleep: woken by a
    multi-threaded product, they spin for a while after it and slow the tiles by about 40%.
    Raises ``OSError`` where the kernel is not there."""

    def __init__(self, params: dict, team: Team, tile: int = TILE_ROWS):
        dt = params["W1"].dtype
        self.kernel, self.params, self.team, self.tile = count_kernel(dt.name), params, team, tile
        (d, h), c = params["W1"].shape, params["W2"].shape[1]
        self.b1a, self.W2a = np.empty((h + 1,), dt), np.empty((h + 1, c), dt)
        self.scratch = [[np.empty(shape, dt) for shape in
                         ((tile, d), (tile, h), (tile, h + 1), (tile, c))]
                        for _ in range(team.threads)]
        self.counts, self.jobs = [0] * team.threads, None

    def __call__(self, x, t_idx):
        p, dt = self.params, self.params["W1"].dtype
        if not (x.flags.c_contiguous and x.dtype in (np.uint8, dt)):
            raise TypeError(f"TiledCount reads C-ordered uint8 or {dt.name} rows, not {x.dtype}")
        W1 = np.ascontiguousarray(p["W1"])
        self.b1a[:-1], self.b1a[-1] = p["b1"], np.inf  # +inf: the sigmoid's constant 1 column
        self.W2a[:-1], self.W2a[-1] = p["W2"], p["b2"]
        labels = np.ascontiguousarray(t_idx, dtype=np.intp)
        (d, h), c, real = W1.shape, self.W2a.shape[1], self.kernel.step.real
        common = (SIZE(self.tile), SIZE(d), SIZE(h), SIZE(c),
                  *map(address, (W1, self.b1a, self.W2a, x)),
                  real(PIXEL_SCALE if x.dtype == np.uint8 else 0.0), address(labels))
        n, threads = x.shape[0], self.team.threads
        edges = [n * j // threads for j in range(threads + 1)]
        self.jobs = [(ctypes.c_void_p(self.kernel.step.gemm), SIZE(lo), SIZE(hi), *common,
                      *map(address, self.scratch[j]))
                     for j, (lo, hi) in enumerate(zip(edges, edges[1:]))]
        try:
            with one_blas_thread(self.kernel):
                self.team.run(self._count)
        finally:
            self.jobs = None
        return np.int64(sum(self.counts))

    def _count(self, j: int) -> None:
        self.counts[j] = self.kernel.step.call(*self.jobs[j])

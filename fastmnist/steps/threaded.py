"""The CPU step for large batches: the element-wise work split over the cores.

At batch 10,000 and up a step is two big products (``x W1`` and ``x.T dz``, which BLAS already
spreads over every core) and, besides them, the batch gather, the sigmoid, the softmax and the
sigmoid's derivative: passes over ``(B, H + 1)`` arrays that NumPy runs on one core, a fifth to
a third of the step. NumPy's ufuncs and ``take`` release the GIL, so :class:`ThreadedStep` cuts
the batch's rows into one block per core and has a small team of threads (the caller plus one
per other core) run each of those passes on its own block, while every product still runs on
the whole batch with all of BLAS's threads. Each block is walked in tiles of about 1 MB so that
the several passes over a tile hit the cache.

Full-set scoring is left to :class:`~fastmnist.steps.generic.BufferedCount`: split the same
way it measured no faster on two cores (4 interleaved rounds of 60,000 rows, within noise).

The numbers are exactly :class:`~fastmnist.steps.cpu.CpuStep`'s: every pass is element by
element, or a reduction along one column of the class-major logits, so splitting the rows
changes no sum (tested).
"""
from __future__ import annotations

import os
import queue
import threading
import weakref

import numpy as np

from .cpu import CpuStep
from .pipeline import usable_cores

THREADED_MIN_BATCH = 4096  # below this a fork/join (tens of us) costs what it saves
TILE_ITEMS = 1 << 18  # numbers per tile in the element-wise passes: 1 MB of float32
THREAD_SETTINGS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_budget() -> int:
    """Threads a step may use: the cores this process may run on (``taskset``,
    ``os.sched_getaffinity``), held to ``OMP_NUM_THREADS`` (or OpenBLAS's, MKL's) when set."""
    n = usable_cores()
    for var in THREAD_SETTINGS:
        try:
            n = min(n, int(os.environ.get(var, "").split(",")[0]))
        except ValueError:  # unset or not a number: no limit from it
            pass
    return max(n, 1)


def worth_threading(batch_size: int, threads: int | None = None) -> bool:
    """Whether ``train`` picks :class:`ThreadedStep`: batches of ``THREADED_MIN_BATCH`` rows or
    more, with two or more threads to use."""
    threads = thread_budget() if threads is None else threads
    return threads >= 2 and batch_size >= THREADED_MIN_BATCH


def _serve(inbox: queue.SimpleQueue, done: queue.SimpleQueue) -> None:
    with np.errstate(all="ignore"):  # errstate is per thread; the caller's step ignores them too
        while True:
            job = inbox.get()
            if job is None:
                return
            fn, j = job
            try:
                fn(j)
            except BaseException as exc:  # handed to the caller, which raises it
                done.put(exc)
            else:
                done.put(None)
            del job, fn  # holding the last job would keep its step, and so this thread, alive


def _stop(inboxes, workers) -> None:
    for inbox in inboxes:
        inbox.put(None)
    for w in workers:
        if w is not threading.current_thread():
            w.join()


class Team:
    """``threads - 1`` helper threads and the caller; ``run(fn)`` calls ``fn(j)`` for each
    ``j`` in ``range(threads)``, ``fn(0)`` on the caller, and returns when all are done
    (raising the first error any of them met). ``close()`` stops the helpers; so does
    garbage-collecting the team."""

    def __init__(self, threads: int):
        self.threads = threads
        self.inboxes = [queue.SimpleQueue() for _ in range(threads - 1)]
        self.done = queue.SimpleQueue()
        self.workers = [threading.Thread(target=_serve, args=(inbox, self.done), daemon=True,
                                         name="fastmnist-tile") for inbox in self.inboxes]
        for w in self.workers:
            w.start()
        self.close = weakref.finalize(self, _stop, self.inboxes, self.workers)

    def run(self, fn) -> None:
        for j, inbox in enumerate(self.inboxes, 1):
            inbox.put((fn, j))
        error = None
        try:
            fn(0)
        except BaseException as exc:
            error = exc
        for _ in self.inboxes:  # every helper finishes before any buffer is touched again
            exc = self.done.get()
            error = error or exc
        if error is not None:
            raise error


class ThreadedStep(CpuStep):
    """:class:`~fastmnist.steps.cpu.CpuStep` with its element-wise passes and its batch gather
    run by ``threads`` threads, one block of rows each. Call ``close()`` when done with it (or
    drop it) to stop its helper threads."""

    def __init__(self, params: dict, x, labels, learning_rate: float, batch_size: int,
                 threads: int):
        super().__init__(params, x, labels, learning_rate, batch_size)
        b, width = batch_size, self.za.shape[1]
        # at least 2 columns a block: NumPy sums a lone column of the logits in another order
        threads = max(1, min(threads, b // 2))
        self.team = Team(threads)
        edges = [b * j // threads for j in range(threads + 1)]
        self.blocks = [slice(lo, hi) for lo, hi in zip(edges, edges[1:])]
        rows = max(16, TILE_ITEMS // width)
        self.tiles = [[slice(s, min(s + rows, blk.stop)) for s in range(blk.start, blk.stop, rows)]
                      for blk in self.blocks]
        self.idx, self.loss, self.current = None, None, None  # what the passes below work on

    def close(self) -> None:
        self.team.close()

    def __call__(self, idx, losses, i: int) -> None:
        self.idx = idx
        self.team.run(self._gather)
        self.compute(self.batch, losses, i)

    def compute(self, batch, losses, i: int) -> None:
        """One SGD step on ``batch``: :meth:`CpuStep.compute` with the passes threaded."""
        W1, b1a, W2a = self.params["W1"], self.b1a, self.W2a
        za, dz, yT = self.za, self.dz, self.yT
        h = W1.shape[1]
        self.current, self.loss = batch, losses[i]
        np.matmul(batch.x, W1, out=za[:, :h])
        self.team.run(self._sigmoid)
        np.matmul(W2a.T, za.T, out=yT)
        self.team.run(self._softmax)
        np.matmul(za.T, yT.T, out=self.gW2a)
        np.matmul(yT.T, W2a.T, out=dz)
        self.team.run(self._derivative)
        np.matmul(batch.x.T, dz[:, :h], out=self.gW1)
        np.matmul(self.ones, dz, out=self.gb1a)
        W1 -= self.gW1
        b1a -= self.gb1a
        W2a -= self.gW2a

    # -- one thread's share of each pass: block j of the rows ---------------------------------
    def _gather(self, j: int) -> None:
        self.batch.fill(self.idx, self.blocks[j])

    def _sigmoid(self, j: int) -> None:
        b1a = self.b1a
        for t in self.tiles[j]:  # za = [sigmoid(x W1 + b1), 1], as in CpuStep
            z = self.za[t]
            z += b1a
            np.negative(z, out=z)
            np.exp(z, out=z)
            z += 1.0
            np.reciprocal(z, out=z)

    def _softmax(self, j: int) -> None:
        c = self.blocks[j]  # columns of the class-major logits
        y, row, pt, loss = self.yT[:, c], self.row[c], self.pt[c], self.loss[c]
        np.maximum.reduce(y, axis=0, out=row)
        y -= row
        np.take(self.yT, self.current.flat[c], out=pt, mode="clip")
        np.exp(y, out=y)
        np.add.reduce(y, axis=0, out=row)
        np.log(row, out=loss)
        loss -= pt
        np.divide(self.scale, row, out=row)
        y *= row
        y -= self.current.tT[:, c]

    def _derivative(self, j: int) -> None:
        for t in self.tiles[j]:
            z, zz, d = self.za[t], self.zz[t], self.dz[t]
            np.multiply(z, z, out=zz)
            np.subtract(z, zz, out=zz)  # z (1 - z), 0 on the 1 column
            d *= zz

"""Training on the CPU with the second core busy: a helper thread gathers the batches ahead of
the step and scores the evaluation snapshots while the calling thread takes SGD steps.

At batch 100 the step's matrix products are small, so BLAS threads buy little there (1.5x from
two threads on 2 cores) and everything else in a step runs on one core. What does not depend on
the step in flight can run beside it instead: copying the next batches out of the training set
(a random gather over the whole set, a third of a step's time outside BLAS) and scoring the full
train and test sets from a copy of the parameters. BLAS is held to one thread per caller while
this runs, so the two threads never fight over one BLAS thread pool.

Results are those of the serial loop: the same batches in the same order, the same counts.
"""
from __future__ import annotations

import os
import queue
import threading
from collections import deque
from contextlib import contextmanager

import numpy as np

from .generic import BufferedCount

SLOTS = 32  # batches gathered ahead (32 x 318 KB at batch 100)
GROUP = 4  # slots handed over together: one queue message, one thread wake-up per 4 steps
# Rows scored between two looks at the queue: 1.3 ms on one core. 5,000 rows took 5.9 ms, about
# what the training loop takes at batch 100 to use up the SLOTS batches gathered ahead, and it
# waited for batches: the article's workload took 2.59 s against 2.22 s (medians of 5).
SCORE_CHUNK = 1_000
OVERLAP_MAX_BATCH = 1_000  # above this the step's products want every BLAS thread
_STOP, _ABORT = "stop", "abort"


def worth_overlapping(backend, batch_size: int) -> bool:
    """The default of ``train(overlap=None)``: NumPy on two or more cores, at batch sizes where
    a step's products gain little from BLAS threads."""
    return backend.xp is np and usable_cores() >= 2 and batch_size <= OVERLAP_MAX_BATCH


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def single_threaded_blas():
    """Hold BLAS to one thread per call inside the block; yields False (and changes nothing)
    when threadpoolctl cannot see a BLAS library to limit."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        yield False
        return
    controller = ThreadpoolController().select(user_api="blas")
    if not controller.lib_controllers:
        yield False
        return
    with controller.limit(limits=1):
        yield True


def helper_failed(exc: BaseException) -> RuntimeError:
    error = RuntimeError(f"training's helper thread (batch gathering and scoring) failed: {exc!r}; "
                         "train(..., overlap=False) runs without it")
    error.__cause__ = exc
    return error


class Pipeline:
    """The helper thread and the queues between it and the training loop.

    ``new_batch()`` makes an empty batch (an object whose ``fill(idx)`` gathers rows ``idx``),
    ``sampler(i)`` gives step ``i``'s row indices, ``sets`` is a list of ``(x, t_idx)`` NumPy
    pairs to score at each evaluation. Use as a context manager; inside it, per step:
    ``batch, slot = next_batch()``, step on ``batch``, ``release(slot)``; at an evaluation
    point ``score(step, params)``; ``finished()`` hands back ``(step, counts)`` for the
    scorings done so far, in order. A failure on the helper thread is raised on the caller's.
    """

    def __init__(self, new_batch, sampler, iters: int, sets, slots: int = SLOTS,
                 chunk: int = SCORE_CHUNK):
        self.batches = [new_batch() for _ in range(slots)]
        self.sampler, self.iters, self.sets, self.chunk = sampler, iters, sets, chunk
        self.inbox, self.ready, self.scores = queue.SimpleQueue(), queue.SimpleQueue(), queue.SimpleQueue()
        self.next_step, self.counter = 0, None
        self.local, self.released = deque(), []  # the training loop's side of the handover
        self.thread = threading.Thread(target=self._serve, name="fastmnist-pipeline", daemon=True)

    def __enter__(self) -> "Pipeline":
        for first in range(0, len(self.batches), GROUP):
            self.inbox.put(list(range(first, min(first + GROUP, len(self.batches)))))
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.inbox.put(_ABORT if exc_type else _STOP)
        self.thread.join()

    # -- the training loop's side -----------------------------------------------------------
    def next_batch(self) -> tuple:
        """The next step's batch and its slot (waits for the helper only when it is behind)."""
        if not self.local:
            group = self.ready.get()
            if isinstance(group, BaseException):
                raise helper_failed(group)
            self.local.extend(group)
        slot = self.local.popleft()
        return self.batches[slot], slot

    def release(self, slot: int) -> None:
        """Hand a used slot back for refilling."""
        self.released.append(slot)
        if len(self.released) == GROUP:
            self.inbox.put(self.released)
            self.released = []

    def score(self, step: int, params: dict) -> None:
        """Queue a scoring of every set with a copy of ``params`` as they are now."""
        self.inbox.put((step, {k: v.copy() for k, v in params.items()}))

    def finished(self, wait_for: int = 0) -> list:
        """``(step, [correct count per set])`` of the scorings done, at least ``wait_for`` of them."""
        done = []
        while True:
            try:
                item = self.scores.get(block=len(done) < wait_for)
            except queue.Empty:
                return done
            if isinstance(item, BaseException):
                raise helper_failed(item)
            done.append(item)

    # -- the helper thread ------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            with np.errstate(all="ignore"):  # as in the training loop: NaN is caught there
                self._loop()
        except BaseException as exc:  # hand it to the training loop rather than dying silently
            self.ready.put(exc)
            self.scores.put(exc)

    def _loop(self) -> None:
        work, stopping = deque(), False
        while True:
            # a waiting message (a slot to refill, a scoring to start) goes first;
            # scoring moves on one chunk at a time while there is none
            try:
                msg = self.inbox.get(block=not work)
            except queue.Empty:
                msg = None
            if msg == _ABORT:
                return
            if msg == _STOP:
                stopping = True
            elif isinstance(msg, list):
                self._fill(msg)
            elif msg is not None:
                work.append(self._scoring(*msg))
            elif next(work[0], None) is None:
                work.popleft()
            if stopping and not work:
                return

    def _fill(self, slots: list) -> None:
        filled = []
        for slot in slots:
            if self.next_step < self.iters:
                self.batches[slot].fill(self.sampler(self.next_step))
                self.next_step += 1
                filled.append(slot)
        if filled:
            self.ready.put(filled)

    def _scoring(self, step: int, params: dict):
        """A generator that scores every set a chunk per ``next()``, then posts the counts."""
        if self.counter is None:
            self.counter = BufferedCount(params, np, self.chunk)
        counter = self.counter
        counter.params = params  # its buffers serve every scoring, one at a time
        counts = []
        for x, t in self.sets:
            total = 0
            for part in counter.chunks(x, t):
                total += int(part)
                yield True
            counts.append(total)
        self.scores.put((step, counts))

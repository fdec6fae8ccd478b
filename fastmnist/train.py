"""Mini-batch SGD training with periodic full-set evaluation, recorded in a :class:`History`."""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np

from .backend import to_numpy
from .network import EVAL_CHUNK, TwoLayerNet, on_device, one_hot
from .steps.cpu import CpuStep
from .steps import compiled
from .steps.pipeline import Pipeline, single_threaded_blas, worth_overlapping
from .steps.threaded import ThreadedStep, thread_budget, worth_threading
from .steps.tiled import TiledCount, TiledStep
from .steps import BufferedCount, BufferedStep, CheckedCount, PlainStep

SAMPLING = ("replacement", "epoch")
INDEX_BLOCK = 1000  # batches of indices drawn at once (device memory: block x batch x 8 bytes)
INDEX_ROWS = 100_000  # ...but no more indices than this at once: at batch 60,000 a block of 1,000
# batches was 480 MB drawn before the first step (0.4 s), for a run of perhaps a dozen steps


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to try."""


@dataclass
class History:
    """What a run recorded.

    ``loss[i]`` is the mean cross-entropy of step ``i``'s batch (before its update);
    ``train_acc[k]``/``test_acc[k]`` are accuracies over the full sets after step
    ``eval_steps[k]``. Times are wall seconds; ``config`` holds the run's settings.
    ``status`` is ``"complete"``, or ``"interrupted"`` (Ctrl-C) or ``"failed"`` (``error``
    says why) for a run that stopped early: it then holds the steps that ran.
    """

    loss: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    config: dict = field(default_factory=dict)
    status: str = "complete"
    error: str | None = None

    def __repr__(self) -> str:
        test = self.test_acc[-1] if self.test_acc else None
        return (f"History({self.status}, {len(self.loss)} steps, {len(self.eval_steps)} "
                f"evaluations" + ("" if test is None else f", test acc {test:.4f}")
                + f", {self.total_seconds:.2f} s)")

    @property
    def total_seconds(self) -> float:
        return self.train_seconds + self.eval_seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "total_seconds": self.total_seconds}

    def to_json(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def from_json(cls, path) -> "History":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        data.pop("total_seconds", None)
        return cls(**data)

    def to_csv(self, path) -> None:
        """One row per step: ``step,loss,train_acc,test_acc`` (accuracies only at eval steps)."""
        acc = {s: (a, b) for s, a, b in zip(self.eval_steps, self.train_acc, self.test_acc)}
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss", "train_acc", "test_acc"])
            for step, loss in enumerate(self.loss):
                a, b = acc.get(step, ("", ""))
                w.writerow([step, repr(loss), a, "" if b is None else b])

    def save(self, path) -> None:
        """Write JSON or CSV, chosen by the file's extension."""
        (self.to_csv if str(path).lower().endswith(".csv") else self.to_json)(path)


class BatchSampler:
    """Row indices for each step, drawn on the device in blocks.

    ``"replacement"`` draws every batch independently (the article's ``np.random.choice``);
    ``"epoch"`` shuffles the set once per epoch and walks through it, dropping the remainder.
    """

    def __init__(self, backend, n: int, batch_size: int, mode: str, seed):
        self.backend, self.n, self.b, self.mode = backend, n, batch_size, mode
        rng_module = backend.xp.random if backend.is_cuda else np.random
        self.rng = rng_module.default_rng(seed)
        self.per_epoch = max(n // batch_size, 1)
        self.block, self.start = None, 0
        self.block_steps = max(1, min(INDEX_BLOCK, INDEX_ROWS // batch_size))

    def _draw(self, first_step: int):
        if self.mode == "replacement":
            rows = self.rng.integers(0, self.n, size=(self.block_steps, self.b))
            self.start = first_step
        else:
            order = self._permutation()[: self.per_epoch * self.b]
            rows = order.reshape(self.per_epoch, self.b)
            self.start = first_step - first_step % self.per_epoch
        self.block = self.backend.asarray(rows)

    def _permutation(self):
        if hasattr(self.rng, "permutation"):
            return self.rng.permutation(self.n)
        return self.backend.xp.argsort(self.rng.random(self.n))

    def __call__(self, step: int):
        if self.block is None or step - self.start >= self.block.shape[0]:
            self._draw(step)
        return self.block[step - self.start, ...]


def check_hyperparameters(iters, batch_size, learning_rate, sampling, n) -> None:
    if not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"iters must be a positive whole number, got {iters!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
    if not isinstance(learning_rate, (int, float)) or not (math.isfinite(learning_rate)
                                                           and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    if sampling == "epoch" and batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training rows; "
                         "use a smaller batch or sampling='replacement'")


def check_finite(x, name: str) -> None:
    """Refuse host inputs holding NaN or infinity (device arrays are trusted: no sync).

    The sum of squares ``x . x`` (one BLAS pass on every core, no temporary array) is finite
    exactly when every value is, unless large values overflow it; only then is each value
    looked at."""
    if not (isinstance(x, np.ndarray) and x.dtype.kind == "f"):
        return
    flat = x.reshape(-1)
    if not np.isfinite(np.dot(flat, flat)) and not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean the data first")


def progress_bar(total: int, enabled: bool):
    """A tqdm bar over the training steps (a widget in notebooks); disabled when not asked for."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", leave=False, dynamic_ncols=True)


@on_device
def train(net: TwoLayerNet, x_train, t_train, x_test=None, t_test=None, *, iters: int = 10_000,
          batch_size: int = 100, learning_rate: float = 0.1, sampling: str = "replacement",
          seed=None, eval_every: int | None = None, quiet: bool = False, progress=None,
          fast: bool | None = None, overlap: bool | None = None, cuda_graph: bool = True,
          log=print, on_eval=None) -> History:
    """Train ``net`` in place by mini-batch SGD and return the :class:`History`.

    ``x_*`` are ``(N, D)`` inputs (NumPy or device arrays; copied to the net's device once):
    floats in 0..1, or uint8 pixels 0..255, which stay uint8 on the device (4x less memory
    and memory traffic) and are scaled to 0..1 as each batch is gathered. ``t_*`` are one-hot
    or integer labels. Accuracy over the FULL train and test sets is measured
    after step 0, every ``eval_every`` steps (default: one epoch, ``N // batch_size``) and after
    the last step; those are the only moments results cross to the host. A NaN or infinite loss
    stops the run with :class:`TrainingDiverged`. ``seed`` fixes the batches (and, on the CPU,
    makes runs identical). ``fast`` picks the tuned NumPy/CuPy step (the default there);
    False runs the plain array-API step. ``overlap`` (NumPy only; default: on with two or more
    cores at batch sizes up to 1,000) gathers batches and scores the sets on a helper thread
    beside the steps, with BLAS held to one thread each: the same batches and scores, and the
    same weights to float32 rounding (one BLAS thread sums in another order than two). On a
    GPU (float32) the step runs as fused kernels and, unless ``cuda_graph`` is False, is
    replayed as a CUDA graph after a check against the eager step. ``on_eval(step, train_acc,
    test_acc)`` is called after each evaluation is recorded (``test_acc`` None without a test
    set); what it raises stops the run.

    Whatever stops a run early (Ctrl-C, a divergence, an error) is raised with the History of
    the steps that ran attached as its ``history`` attribute (``status`` "interrupted" or
    "failed"); ``net`` holds the weights as they were.
    """
    xp, backend = net.xp, net.backend
    check_finite(x_train, "x_train")
    check_finite(x_test, "x_test")
    x = net.as_input(x_train, keep_uint8=True)
    n = x.shape[0]
    check_hyperparameters(iters, batch_size, learning_rate, sampling, n)
    t = net.as_labels(t_train, n)
    test = None
    if x_test is not None:
        xt = net.as_input(x_test, keep_uint8=True)
        test = (xt, net.as_labels(t_test, xt.shape[0]))
    per_epoch = max(n // batch_size, 1)
    eval_every = per_epoch if eval_every is None else int(eval_every)
    if eval_every < 1:
        raise ValueError(f"eval_every must be a positive whole number, got {eval_every!r}")
    if fast is None:
        fast = backend.has_ufuncs
    step = make_step(fast, net, x, t, learning_rate, batch_size, cuda_graph)
    sampler = BatchSampler(backend, n, batch_size, sampling, seed)
    # per-row losses of the steps since the last evaluation, averaged on the host there
    losses = xp.zeros((min(eval_every, iters), batch_size), dtype=net.dtype)
    history = History(config={
        "iters": int(iters), "batch_size": int(batch_size), "learning_rate": float(learning_rate),
        "sampling": sampling, "seed": seed, "device": net.device, "dtype": net.dtype_name,
        "sizes": list(net.sizes), "train_rows": n, "test_rows": None if test is None else test[0].shape[0],
        "eval_every": eval_every, "step": type(step).__name__})
    bar = progress_bar(iters, not quiet and (sys.stderr.isatty() if progress is None else progress))
    sets = [(x, t)] + ([test] if test is not None else [])
    loop = Loop(history, step, sampler, losses, sets, eval_every, per_epoch, learning_rate,
                bar, None if quiet else log, on_eval)
    if overlap is None:
        overlap = fast and worth_overlapping(backend, batch_size)
    elif overlap and not (fast and xp is np):
        raise ValueError("overlap=True is for the NumPy step on the CPU "
                         "(device='cpu', fast=True); leave it unset elsewhere")
    try:
        with np.errstate(all="ignore"):  # a diverging run is caught below, with a better message
            # One BLAS thread per call: for the pipeline's two threads, and for the tiled step,
            # whose threads each run their own products (a multi-threaded product anywhere
            # would wake OpenBLAS's threads, which then spin and take cores from the tiles).
            tiled = isinstance(step, TiledStep)
            with single_threaded_blas() if overlap or tiled else nullcontext(False) as limited:
                overlapped = limited and overlap
                history.config["overlap"] = bool(overlapped)
                count = make_count(fast, net, step)
                if overlapped:
                    with Pipeline(step.new_batch, sampler, iters, sets) as pipe:
                        loop.overlapped(iters, pipe)
                else:
                    loop.serial(iters, count)
            if overlapped:  # the last scoring has nothing to overlap: all BLAS threads take it
                loop.score(count)
    except BaseException as exc:  # Ctrl-C included: the caller gets what ran
        loop.keep_what_ran(exc)
        exc.history = history
        raise
    finally:
        bar.close()
        if hasattr(step, "close"):  # a threaded step's helper threads
            step.close()
    return history


class Loop:
    """The training loop, serial or overlapped with a :class:`~fastmnist.steps.pipeline.Pipeline`.

    Both record the same History: per-step losses (checked for NaN at each evaluation point)
    and accuracies at ``eval_steps``. Serially, ``eval_seconds`` is the time spent scoring;
    overlapped, scoring runs beside the steps and ``eval_seconds`` is only the wait for the
    last scorings after the last step, plus the last one, which the caller makes with
    :meth:`score` once BLAS has all its threads back.
    """

    def __init__(self, history, step, sampler, losses, sets, eval_every, per_epoch, lr, bar, log,
                 on_eval=None):
        self.history, self.step, self.sampler, self.losses = history, step, sampler, losses
        self.sets, self.eval_every, self.per_epoch, self.lr = sets, eval_every, per_epoch, lr
        self.bar, self.log, self.on_eval = bar, log, on_eval
        self.first = 0  # the first step whose loss is not yet on the host
        self.done, self.started = 0, time.perf_counter()  # steps whose update is complete

    def keep_what_ran(self, exc: BaseException) -> None:
        """Complete the History of a run stopped by ``exc``: the losses of every finished step,
        only the evaluations that were scored, the time so far, and why it stopped."""
        h = self.history
        if self.done > len(h.loss):
            rows = self.losses[len(h.loss) - self.first: self.done - self.first, ...]
            h.loss.extend(to_numpy(rows).astype(float).mean(axis=1).tolist())
        del h.eval_steps[len(h.train_acc):]
        if not h.train_seconds:
            h.train_seconds = time.perf_counter() - self.started - h.eval_seconds
        if isinstance(exc, KeyboardInterrupt):
            h.status = "interrupted"
        else:
            h.status, h.error = "failed", f"{type(exc).__name__}: {exc}"

    def take_losses(self, i: int) -> None:
        """Bring the losses of the steps up to ``i`` to the host and mark ``i`` an eval step."""
        record_losses(self.history, self.losses[: i - self.first + 1, ...], self.first, self.lr)
        self.first = i + 1
        self.history.eval_steps.append(i)

    def record_scores(self, counts) -> None:
        h = self.history
        accs = [float(to_numpy(c)) / x.shape[0] for c, (x, _) in zip(counts, self.sets)]
        h.train_acc.append(accs[0])
        h.test_acc.append(accs[1] if len(accs) > 1 else None)
        k = len(h.train_acc) - 1
        self.bar.set_postfix_str(f"loss {h.loss[h.eval_steps[k]]:.4f}", refresh=False)
        if self.log:
            with self.bar.external_write_mode():
                self.log(epoch_line(h, k, self.per_epoch))
        if self.on_eval:
            self.on_eval(h.eval_steps[k], h.train_acc[k], h.test_acc[k])

    def score(self, count) -> None:
        """Score every set with ``count`` on the calling thread."""
        t0 = time.perf_counter()
        self.record_scores([count(x, t) for x, t in self.sets])
        self.history.eval_seconds += time.perf_counter() - t0

    def serial(self, iters: int, count) -> None:
        h = self.history
        started = self.started = time.perf_counter()
        for i in range(iters):
            self.step(self.sampler(i), self.losses, i - self.first)
            self.done = i + 1
            if i % self.eval_every == 0 or i == iters - 1:
                self.take_losses(i)
                self.score(count)
            self.bar.update()
        h.train_seconds = time.perf_counter() - started - h.eval_seconds

    def overlapped(self, iters: int, pipe) -> None:
        h = self.history
        started = self.started = time.perf_counter()
        for i in range(iters):
            batch, slot = pipe.next_batch()
            self.step.compute(batch, self.losses, i - self.first)
            self.done = i + 1
            pipe.release(slot)
            if i % self.eval_every == 0 or i == iters - 1:
                self.take_losses(i)
                if i < iters - 1:
                    pipe.score(i, self.step.params)
                for _, counts in pipe.finished():
                    self.record_scores(counts)
            self.bar.update()
        t0 = time.perf_counter()
        h.train_seconds = t0 - started
        for _, counts in pipe.finished(wait_for=len(h.eval_steps) - 1 - len(h.train_acc)):
            self.record_scores(counts)
        h.eval_seconds = time.perf_counter() - t0


def make_step(fast, net, x, t, learning_rate, batch_size, cuda_graph=True):
    """The step for this backend, on training rows ``x`` with integer labels ``t``: fused kernels
    (and a CUDA graph) for float32 on a GPU, the buffered step elsewhere on CuPy; on the CPU the
    compiled step where it was built, else the tuned NumPy step, and for batches of 4,096 rows
    or more with two or more cores free to it their threaded kinds (each core its share of
    the rows); the plain array-API step when ``fast`` is False."""
    if fast and net.xp is np:
        threads = thread_budget()
        large = worth_threading(batch_size, threads)
        if compiled.setting() != "off":
            try:
                if large:
                    return TiledStep(net.params, x, t, learning_rate, batch_size, threads)
                return compiled.CompiledStep(net.params, x, t, learning_rate, batch_size)
            except OSError as exc:  # not built, or NumPy without its OpenBLAS: said if asked for
                if compiled.setting() == "on":
                    compiled.unavailable(exc)
            except Exception as exc:  # noqa: BLE001 - anything else is worth a word
                compiled.unavailable(exc)
        if large:
            return ThreadedStep(net.params, x, t, learning_rate, batch_size, threads)
        return CpuStep(net.params, x, t, learning_rate, batch_size)
    onehot = one_hot(t, net.sizes[2], net.dtype)
    if fast and net.backend.is_cuda and net.dtype_name == "float32":
        from .steps.cuda import CudaStep

        return CudaStep(net.params, x, onehot, learning_rate, batch_size, net.xp, cuda_graph)
    if fast:
        return BufferedStep(net.params, x, onehot, learning_rate, batch_size, net.xp)
    return PlainStep(net.params, x, onehot, learning_rate)


def memory_needed(sizes, batch_size: int, dtype) -> int:
    """Bytes a run of a ``sizes`` network takes beyond its data, roughly: ``W1`` five times
    over (the weights, their first draw, the gradient, a snapshot being scored, a scaled copy
    for scoring) and per hidden unit the batch's three buffers and two scoring chunks."""
    d, h, c = sizes
    return np.dtype(dtype).itemsize * (5 * d * h + h * (3 * batch_size + 2 * EVAL_CHUNK)
                                       + 3 * (h + 1) * c)


SCORER_CHECK_ROWS = 1024  # a compiled CPU scorer is checked on this many rows of its first set


def make_count(fast, net, step=None):
    """The full-set scorer: the buffered one when ``fast`` (on a GPU, checked on its first
    call against the plain forward pass), with a :class:`TiledStep` its compiled counterpart on
    the step's threads (checked against the buffered one), else the network's own."""
    if not fast:
        return net.count_correct
    if net.backend.is_cuda:
        return CheckedCount(BufferedCount(net.params, net.xp), net.count_correct, net.params)
    if isinstance(step, TiledStep):
        try:
            tiled = TiledCount(net.params, step.team)
        except OSError:  # a build without the count: the buffered one does the job
            pass
        else:
            return CheckedCount(tiled, BufferedCount(net.params, net.xp), net.params,
                                rows=SCORER_CHECK_ROWS)
    return BufferedCount(net.params, net.xp)


def record_losses(history: History, losses, first: int, lr: float) -> None:
    """Copy per-row losses of steps ``first, first + 1, ...`` to the host as batch means,
    stopping the run if any is NaN or infinite."""
    chunk = to_numpy(losses).astype(float).mean(axis=1)
    bad = np.flatnonzero(~np.isfinite(chunk))
    if bad.size:
        raise TrainingDiverged(
            f"training diverged: the loss became {chunk[bad[0]]} at step {first + bad[0]}. "
            f"Try a smaller learning rate (it was {lr}), check that the inputs are scaled to 0-1 "
            "(load_mnist(normalize=True)), or use dtype='float64'.")
    history.loss.extend(chunk.tolist())


def epoch_line(h: History, k: int, per_epoch: int) -> str:
    """The log line of evaluation ``k``."""
    step = h.eval_steps[k]
    test = "" if h.test_acc[k] is None else f"  test acc {h.test_acc[k]:.4f}"
    return (f"epoch {step / per_epoch:6.2f}  step {step:6d}  loss {h.loss[step]:.4f}  "
            f"train acc {h.train_acc[k]:.4f}{test}")

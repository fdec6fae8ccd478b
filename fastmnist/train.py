"""Mini-batch SGD training with periodic full-set evaluation, recorded in a :class:`History`."""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .backend import to_numpy
from .network import TwoLayerNet, on_device, one_hot
from .steps import BufferedCount, BufferedStep, PlainStep

SAMPLING = ("replacement", "epoch")
INDEX_BLOCK = 1000  # batches of indices drawn at once (device memory: block x batch x 8 bytes)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to try."""


@dataclass
class History:
    """What a run recorded.

    ``loss[i]`` is the mean cross-entropy of step ``i``'s batch (before its update);
    ``train_acc[k]``/``test_acc[k]`` are accuracies over the full sets after step
    ``eval_steps[k]``. Times are wall seconds; ``config`` holds the run's settings.
    """

    loss: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    config: dict = field(default_factory=dict)

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

    def _draw(self, first_step: int):
        if self.mode == "replacement":
            rows = self.rng.integers(0, self.n, size=(INDEX_BLOCK, self.b))
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
    """Refuse host inputs holding NaN or infinity (device arrays are trusted: no sync)."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean the data first")


class Progress:
    """A one-line progress bar on an interactive stderr; silent elsewhere."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.last = total, enabled, 0.0

    def update(self, step: int, losses: list) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.2 and step + 1 < self.total:
            return
        self.last = now
        bar = "#" * int(30 * (step + 1) / self.total)
        note = f"loss {losses[-1]:.4f}" if losses else ""
        sys.stderr.write(f"\r[{bar:<30}] {step + 1}/{self.total} {note}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


@on_device
def train(net: TwoLayerNet, x_train, t_train, x_test=None, t_test=None, *, iters: int = 10_000,
          batch_size: int = 100, learning_rate: float = 0.1, sampling: str = "replacement",
          seed=None, eval_every: int | None = None, quiet: bool = False, progress=None,
          fast: bool | None = None, cuda_graph: bool = True, log=print) -> History:
    """Train ``net`` in place by mini-batch SGD and return the :class:`History`.

    ``x_*`` are ``(N, D)`` inputs (NumPy or device arrays; copied to the net's device once):
    floats in 0..1, or uint8 pixels 0..255, which stay uint8 on the device (4x less memory
    and memory traffic) and are scaled to 0..1 as each batch is gathered. ``t_*`` are one-hot
    or integer labels. Accuracy over the FULL train and test sets is measured
    after step 0, every ``eval_every`` steps (default: one epoch, ``N // batch_size``) and after
    the last step; those are the only moments results cross to the host. A NaN or infinite loss
    stops the run with :class:`TrainingDiverged`. ``seed`` fixes the batches (and, on the CPU,
    makes runs identical). ``fast`` picks the buffered NumPy/CuPy step (the default there);
    False runs the plain array-API step. On a GPU (float32) the step runs as fused kernels and,
    unless ``cuda_graph`` is False, is replayed as a CUDA graph after a check against the eager step.
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
    onehot = one_hot(t, net.sizes[2], net.dtype)
    per_epoch = max(n // batch_size, 1)
    eval_every = per_epoch if eval_every is None else int(eval_every)
    if eval_every < 1:
        raise ValueError(f"eval_every must be a positive whole number, got {eval_every!r}")
    if fast is None:
        fast = backend.has_ufuncs
    step = make_step(fast, net, x, onehot, learning_rate, batch_size, cuda_graph)
    count = BufferedCount(net.params, xp) if fast else net.count_correct
    sampler = BatchSampler(backend, n, batch_size, sampling, seed)
    # per-row losses of the steps since the last evaluation, averaged on the host there
    losses = xp.zeros((min(eval_every, iters), batch_size), dtype=net.dtype)
    history = History(config={
        "iters": int(iters), "batch_size": int(batch_size), "learning_rate": float(learning_rate),
        "sampling": sampling, "seed": seed, "device": net.device, "dtype": net.dtype_name,
        "sizes": list(net.sizes), "train_rows": n, "test_rows": None if test is None else test[0].shape[0],
        "eval_every": eval_every, "step": type(step).__name__})
    bar = Progress(iters, (not quiet) and (sys.stderr.isatty() if progress is None else progress))
    started = time.perf_counter()
    first = 0  # the first step whose loss is not yet on the host
    with np.errstate(all="ignore"):  # a diverging run is caught below, with a better message
        for i in range(iters):
            step(sampler(i), losses, i - first)
            if i % eval_every == 0 or i == iters - 1:
                record_losses(history, losses[: i - first + 1, ...], first, learning_rate)
                first = i + 1
                t0 = time.perf_counter()
                history.eval_steps.append(i)
                history.train_acc.append(accuracy(count, x, t))
                history.test_acc.append(None if test is None else accuracy(count, *test))
                history.eval_seconds += time.perf_counter() - t0
                if not quiet:
                    bar.close()
                    log(epoch_line(history, i, per_epoch))
            bar.update(i, history.loss)
    bar.close()
    history.train_seconds = time.perf_counter() - started - history.eval_seconds
    return history


def make_step(fast, net, x, onehot, learning_rate, batch_size, cuda_graph=True):
    """The step for this backend: fused kernels (and a CUDA graph) for float32 on a GPU, the
    buffered step on NumPy/CuPy, or the plain array-API step when ``fast`` is False."""
    if fast and net.backend.is_cuda and net.dtype_name == "float32":
        from .cuda_step import CudaStep

        return CudaStep(net.params, x, onehot, learning_rate, batch_size, net.xp, cuda_graph)
    if fast:
        return BufferedStep(net.params, x, onehot, learning_rate, batch_size, net.xp)
    return PlainStep(net.params, x, onehot, learning_rate)


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


def accuracy(count, x, t) -> float:
    """Accuracy on device data from a correct-count function (one host synchronisation)."""
    return float(to_numpy(count(x, t))) / x.shape[0]


def epoch_line(h: History, step: int, per_epoch: int) -> str:
    test = "" if h.test_acc[-1] is None else f"  test acc {h.test_acc[-1]:.4f}"
    return (f"epoch {step / per_epoch:6.2f}  step {step:6d}  loss {h.loss[-1]:.4f}  "
            f"train acc {h.train_acc[-1]:.4f}{test}")

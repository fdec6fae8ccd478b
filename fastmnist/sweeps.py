"""Hyper-parameter sweeps: many ordinary training runs, one after another in this process
(``engine="local"``) or as Ray Tune trials over every core, GPU and machine of a Ray cluster
(``engine="ray"``), with live progress and the results a person wants.

    import fastmnist as fm
    result = fm.sweep({"hidden": [50, 100], "lr": "0.05:1:log", "epochs": 5}, samples=4,
                      dataset="fashion-mnist", out="sweep-results")
    print(result.table())

From the command line: ``fastmnist sweep --hidden 50,100 --lr 0.05:1:log --samples 4``.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .files import atomic_open
from .space import PARAMS, SweepSpecError, expand, flag, swept, value_label
from .trials import add_evaluation, new_record, resolve_iters, run_trial, train_command

ENGINES = ("local", "ray")
INSTALL_RAY = "pip install 'fastmnist[sweep]'"


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message gives the pip command."""


@dataclass
class SweepResult:
    """What a sweep found: ``trials`` (one record each, in trial order: ``config``, ``status``
    of ok/stopped/failed/interrupted, ``test_acc``, ``train_acc``, ``seconds``,
    ``stopped_early``, ``error``, ``history``), the ``best`` finished trial, and its model as
    ``.npz`` bytes (:meth:`best_model` loads it)."""

    engine: str
    trials: list
    best: dict | None
    swept: list
    dataset: str | None = None
    interrupted: bool = False
    seconds: float = 0.0
    startup_seconds: float = 0.0
    model: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"engine": self.engine, "dataset": self.dataset, "swept": self.swept,
                "interrupted": self.interrupted, "seconds": round(self.seconds, 3),
                "startup_seconds": round(self.startup_seconds, 3), "trials": self.trials,
                "best": self.best}

    def ranked(self) -> list:
        """Trials best first: finished ones by test accuracy, then stopped, failed, unfinished."""
        order = {s: k for k, s in enumerate(("ok", "stopped", "failed", "interrupted"))}
        return sorted(self.trials, key=lambda r: (order[r["status"]], -(r["test_acc"] or 0.0),
                                                  r["trial"]))

    def table(self, limit: int | None = None) -> str:
        """The ranked table as text."""
        names = self.swept or ["hidden", "lr"]
        head = ["rank", "trial", "test acc", "train acc", *names, "seconds", "status"]
        rows = []
        for rank, r in enumerate(self.ranked()[:limit], 1):
            status = r["status"] if r["status"] != "failed" else f"failed: {r['error']}"[:70]
            rows.append([str(rank), str(r["trial"]), acc_text(r["test_acc"]),
                         acc_text(r["train_acc"]),
                         *(value_label(r["config"].get(n)) for n in names),
                         f"{r['seconds']:.1f}", status])
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]
        lines = ["  ".join(c.rjust(w) if k < len(head) - 1 else c
                           for k, (c, w) in enumerate(zip(row, widths))) for row in [head, *rows]]
        return "\n".join(lines)

    def best_model(self, device="cpu"):
        """The best trial's network (None when no trial finished)."""
        if self.model is None:
            return None
        from .network import TwoLayerNet

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "best.npz"
            path.write_bytes(self.model)
            return TwoLayerNet.load(path, device=device)

    def save(self, out, plot: bool = True) -> Path:
        """Write ``results.json``, ``results.csv``, ``best.npz`` and ``sweep.png`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "results.json") as f:
            f.write(json_text(self.to_dict()).encode())
        write_csv(self, out / "results.csv")
        if self.model is not None:
            with atomic_open(out / "best.npz") as f:
                f.write(self.model)
        if plot and any(r["history"]["steps"] for r in self.trials):
            from .plots import plot_sweep

            plot_sweep(self, out / "sweep.png")
        return out


def json_text(data) -> str:
    """Indented JSON with lists of numbers kept on one line."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[[^\[\]{}\"]*\]", lambda m: " ".join(m.group(0).split()), text)


def acc_text(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_csv(result: SweepResult, path: Path) -> None:
    names = [n for n in PARAMS if any(n in r["config"] for r in result.trials)]
    columns = ["trial", "status", "test_acc", "train_acc", "seconds", "stopped_early", *names,
               "error"]
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(columns)
    for r in result.trials:
        w.writerow([r["trial"], r["status"], r["test_acc"], r["train_acc"],
                    round(r["seconds"], 3), r["stopped_early"],
                    *(r["config"].get(n, "") for n in names), r["error"] or ""])
    with atomic_open(path) as f:
        f.write(text.getvalue().encode())


class Tracker:
    """Follows the trials as they start, report and end: keeps their records and the best
    model, shows progress (a tqdm bar with the best so far and a line per finished trial), and
    rewrites ``results.json``/``.csv`` in ``out`` after every trial, so an interrupted sweep
    keeps what it finished."""

    def __init__(self, configs, engine, *, show=False, log=print, out=None, command=None,
                 dataset=None):
        from tqdm.auto import tqdm

        self.records = [{"trial": i, **new_record(c)} for i, c in enumerate(configs)]
        self.ended = [False] * len(configs)
        self.started_at, self.engine, self.log, self.out = {}, engine, log, out
        self.command, self.dataset = command, dataset
        self.swept = swept(configs)
        self.best, self.model = None, None
        self.startup_seconds = 0.0  # the Ray engine's start-up, when it starts Ray
        self.t0 = self.shown = time.perf_counter()
        self.bar = tqdm(total=len(configs), unit="trial", disable=not show, dynamic_ncols=True,
                        desc=f"sweep ({engine})")

    # -- events ------------------------------------------------------------------------------
    def started(self, i: int) -> None:
        self.started_at[i] = time.perf_counter()
        self.records[i]["status"] = "running"
        self.show_state()

    def evaluated(self, i: int, step: int, epoch: float, train_acc, test_acc) -> None:
        r = self.records[i]
        if not r["history"]["steps"] or step > r["history"]["steps"][-1]:
            add_evaluation(r, step, epoch, train_acc, test_acc)
        self.show_state(f"trial {i}: epoch {epoch:.1f} test {test_acc:.4f}")

    def finished(self, i: int, record: dict, model) -> None:
        if record["status"] == "ok" and (self.best is None or
                                         record["test_acc"] > self.records[self.best]["test_acc"]):
            self.best, self.model = i, model
        self.end(i, {"trial": i, **record})

    def stopped(self, i: int) -> None:
        """Trial ``i`` was ended early by the scheduler: its record is what it reported."""
        self.end(i, {**self.records[i], "status": "stopped", "stopped_early": True,
                     "seconds": time.perf_counter() - self.started_at.get(i, self.t0)})

    def failed(self, i: int, message: str) -> None:
        self.end(i, {**self.records[i], "status": "failed", "error": message,
                     "seconds": time.perf_counter() - self.started_at.get(i, self.t0)})

    def end(self, i: int, record: dict) -> None:
        self.records[i], self.ended[i] = record, True
        self.bar.update(1)
        self.say(self.trial_line(record))
        if self.out is not None:
            self.result().save(self.out, plot=False)
        self.show_state()

    # -- display -----------------------------------------------------------------------------
    def trial_line(self, r: dict) -> str:
        params = " ".join(f"{n}={value_label(r['config'].get(n))}" for n in self.swept)
        score = (f"test {acc_text(r['test_acc'])}" if r["status"] != "failed"
                 else f"failed: {r['error']}")
        if r["status"] == "stopped":
            score += f" (stopped early at epoch {r['history']['epochs'][-1]:g})"
        return f"trial {r['trial']:>3} {params}  {score}  [{r['seconds']:.1f} s]"

    def say(self, line: str) -> None:
        if self.log is not None:
            with self.bar.external_write_mode():
                self.log(line)

    def show_state(self, note: str = "") -> None:
        now = time.perf_counter()
        if self.bar.disable or (note and now - self.shown < 0.2):
            return
        self.shown = now
        running = sum(r["status"] == "running" and not e
                      for r, e in zip(self.records, self.ended))
        best = "" if self.best is None else \
            f", best {self.records[self.best]['test_acc']:.4f} (trial {self.best})"
        self.bar.set_postfix_str(f"running {running}{best}" + (f"; {note}" if note else ""))

    def close(self) -> None:
        self.bar.close()

    # -- results -----------------------------------------------------------------------------
    def result(self) -> SweepResult:
        trials = []
        now = time.perf_counter()
        for i, (r, ended) in enumerate(zip(self.records, self.ended)):
            if not ended:
                r = {**r, "status": "interrupted",
                     "seconds": now - self.started_at[i] if i in self.started_at else 0.0}
            r = {**r, "seconds": round(r["seconds"], 3)}
            r["command"] = self.command(r["config"]) if self.command else None
            r["history"] = r.pop("history")  # last: the long part
            trials.append(r)
        best = None
        if self.best is not None:
            best = {k: v for k, v in trials[self.best].items() if k != "history"}
        return SweepResult(self.engine, trials, best, self.swept, self.dataset,
                           interrupted=not all(self.ended),
                           seconds=time.perf_counter() - self.t0,
                           startup_seconds=self.startup_seconds,
                           model=self.model)


def run_local(configs, data, tracker, *, device=None, meta=None) -> None:
    """The trials one after another in this process (training uses every core)."""
    for i, config in enumerate(configs):
        tracker.started(i)
        record, model = run_trial(config, data, device=device, meta=meta,
                                  report=lambda *a, i=i: tracker.evaluated(i, *a))
        if record["status"] == "interrupted":  # training stopped short: Ctrl-C
            raise KeyboardInterrupt
        tracker.finished(i, record, model)


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def choose_engine(engine, address, early_stop, gpus_per_trial, cpus_per_trial, device) -> str:
    """The engine to use, after checking the options that only one engine takes."""
    if engine is None:
        engine = "ray" if address or ray_available() else "local"
    if engine not in ENGINES:
        raise SweepSpecError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine == "local":
        for name, value in (("--address", address), ("--early-stop", early_stop),
                            ("--gpus-per-trial", gpus_per_trial)):
            if value:
                raise SweepSpecError(f"{name} needs --engine ray (engine='ray'); the local engine "
                                     "runs trials one after another in this process")
    if not (isinstance(cpus_per_trial, (int, float)) and cpus_per_trial > 0):
        raise SweepSpecError(f"--cpus-per-trial must be a positive number, got {cpus_per_trial!r}")
    if not (isinstance(gpus_per_trial, (int, float)) and gpus_per_trial >= 0):
        raise SweepSpecError(f"--gpus-per-trial must be 0 or more (fractions share a GPU), "
                             f"got {gpus_per_trial!r}")
    if engine == "ray" and str(device or "").startswith("cuda") and not gpus_per_trial:
        raise SweepSpecError(f"--device {device} with the Ray engine needs --gpus-per-trial "
                             "(1 for a GPU per trial, 0.25 for four trials on one)")
    if engine == "ray" and not ray_available():
        raise MissingExtra(f"--engine ray needs Ray Tune, which is not installed: {INSTALL_RAY} "
                           "(or run with --engine local)")
    return engine


def load_data(dataset, data_dir, train_limit, offline):
    """The data set as ``fastmnist train`` loads it (float32 in 0..1: on the CPU a tenth faster
    per step than uint8 pixels, which cost a scaling pass per batch)."""
    from .datasets import load_mnist

    (x, t), (xt, tt) = load_mnist(normalize=True, dataset=dataset, data_dir=data_dir,
                                  download=False if offline else None,
                                  offline_reason="--offline")
    if train_limit:
        x, t = x[:train_limit], t[:train_limit]
    return (x, t), (xt, tt)


def sweep(space: dict, *, samples: int | None = None, search_seed: int = 0,
          dataset: str | None = None, data_dir=None, data=None, train_limit: int | None = None,
          offline: bool = False, engine: str | None = None, address: str | None = None,
          cpus: int | None = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
          early_stop: bool = False, device=None, out=None, progress: bool | None = None,
          log=print) -> SweepResult:
    """Train one network per config of ``space`` and return the :class:`SweepResult`.

    ``space`` maps parameters (``hidden lr batch_size iters epochs dtype sampling augment
    seed``) to a value, a list (grid) or a range (``"0.01:1:log"``, ``"32:256"``, or a
    :class:`~fastmnist.space.Range`); ``samples`` draws that many values of the ranges per grid
    point. Data: ``dataset`` ("mnist" unless named) from ``data_dir`` or the usual places
    (first ``train_limit`` training rows), or ``data=((x, t), (x_test, t_test))`` (floats in
    0..1 or uint8 pixels; ``dataset`` then only names them in the model file). ``engine``:
    "ray" (default when Ray is installed: a local Ray with ``cpus`` cores, or the cluster at
    ``address``; ``cpus_per_trial``, ``gpus_per_trial``, ``early_stop`` with ASHA) or "local"
    (one trial after another here). ``device``: as for ``train`` (Ray trials use the CPU
    unless given GPUs).
    ``out``: folder for results.json/.csv, best.npz, sweep.png. Ctrl-C stops the sweep and
    returns what finished (``interrupted`` is then True; the files are written).
    """
    configs = expand(space, samples, search_seed)
    engine = choose_engine(engine, address, early_stop, gpus_per_trial, cpus_per_trial, device)
    command = None
    if data is None:
        dataset = dataset or "mnist"
        data = load_data(dataset, data_dir, train_limit, offline)
        command = lambda c: train_command(c, dataset, data_dir, train_limit, device)  # noqa: E731
    configs = [resolve_iters(c, data[0][0].shape[0]) for c in configs]
    meta = {"dataset": dataset}
    if dataset is not None:
        from .datasets import get_dataset

        meta["classes"] = list(get_dataset(dataset).classes)
    show = sys.stderr.isatty() if progress is None else progress
    tracker = Tracker(configs, engine, show=show, log=log, out=out, command=command,
                      dataset=dataset)
    try:
        if engine == "ray":
            try:
                from . import sweep_ray
            except ImportError as exc:
                raise MissingExtra(f"--engine ray could not import Ray Tune ({exc}): "
                                   f"{INSTALL_RAY}") from exc
            sweep_ray.run(configs, data, tracker, address=address, cpus=cpus,
                          cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                          early_stop=early_stop, device=device, meta=meta)
        else:
            run_local(configs, data, tracker, device=device, meta=meta)
    except KeyboardInterrupt:
        pass  # the trials that finished are kept; the result says it was interrupted
    finally:
        tracker.close()
    result = tracker.result()
    if out is not None:
        result.save(out)
    return result


# -- command line ---------------------------------------------------------------------------------
SPACE_HELP = {
    "hidden": "hidden units: 50,100,200 or a range 32:512:log (default 50)",
    "lr": "learning rate: 0.05,0.1,0.5 or a range 0.01:1:log (default 0.1)",
    "batch_size": "batch size: 50,100 or a range 32:512:log (default 100)",
    "iters": "SGD steps per trial: 5000,10000 (default 10000)",
    "epochs": "epochs per trial instead of --iters",
    "dtype": "float32,float64 (default float32)",
    "sampling": "replacement,epoch (default replacement)",
    "augment": "train on augmented copies too: --augment alone, or --augment no,yes",
    "seed": "seeds of the network and batches: 0,1,2 or a range 0:1000 (default 0)",
}


def positive(kind):
    def read(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return read


def add_parser(sub) -> None:
    """The ``fastmnist sweep`` subcommand."""
    from .datasets import REGISTRY

    p = sub.add_parser(
        "sweep", help="hyper-parameter sweeps: a grid or random search, here or on a Ray cluster",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one network per combination of the listed values (comma-separated), "
                    "times --samples random draws of the ranges (LOW:HIGH or LOW:HIGH:log).",
        epilog="examples:\n"
               "  fastmnist sweep --dataset fashion-mnist --hidden 50,100 --lr 0.05,0.1,0.5\n"
               "  fastmnist sweep --lr 0.01:2:log --hidden 32:512:log --samples 20 --early-stop\n"
               "  fastmnist sweep --address auto --gpus-per-trial 0.25 --hidden 100,400 ...")
    space = p.add_argument_group("what to vary (each an ordinary `fastmnist train` setting)")
    for name, text in SPACE_HELP.items():
        extra = {"nargs": "?", "const": "yes"} if name == "augment" else {}
        space.add_argument(flag(name), dest=name, default=None, metavar="VALUES", help=text,
                           **extra)
    space.add_argument("--samples", type=positive(int), default=None, metavar="N",
                       help="random search: draws of the ranges per grid point")
    space.add_argument("--search-seed", type=int, default=0, metavar="S",
                       help="seed of those draws (0)")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="mnist", choices=sorted(REGISTRY),
                      help="which data set (default: %(default)s)")
    data.add_argument("--data-dir", default=None, help="folder holding the four IDX files")
    data.add_argument("--train-limit", type=positive(int), default=None,
                      help="use only the first N training rows")
    data.add_argument("--offline", action="store_true",
                      help="never download (also FASTMNIST_OFFLINE=1)")
    run = p.add_argument_group("where trials run")
    run.add_argument("--engine", choices=ENGINES, default=None,
                     help="ray: trials in parallel on a local Ray or a cluster (default when Ray "
                          f"is installed: {INSTALL_RAY}); local: one after another here")
    run.add_argument("--address", default=None,
                     help="join a Ray cluster: auto (this machine is in it) or ray://HOST:10001")
    run.add_argument("--cpus", type=positive(int), default=None,
                     help="cores a Ray started here may use (default: all)")
    run.add_argument("--cpus-per-trial", type=positive(float), default=1,
                     help="cores (and BLAS threads) per Ray trial (1)")
    run.add_argument("--gpus-per-trial", type=float, default=0,
                     help="GPUs per Ray trial; fractions share one, e.g. 0.25 (0)")
    run.add_argument("--early-stop", action="store_true",
                     help="end poor trials early (ASHA, on test accuracy each epoch; Ray engine)")
    run.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    show = p.add_argument_group("results")
    show.add_argument("--out", default="sweep-results", metavar="DIR",
                      help="folder for results.json, results.csv, best.npz, sweep.png "
                           "('' to skip; default sweep-results)")
    show.add_argument("--top", type=positive(int), default=20, help="rows of the ranked table")
    show.add_argument("--quiet", action="store_true", help="print only the ranked table")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from .outputs import output_dir

    space = {n: getattr(args, n) for n in PARAMS if getattr(args, n) is not None}
    out = output_dir(args.out, "--out") if args.out else None
    try:
        result = sweep(space, samples=args.samples, search_seed=args.search_seed,
                       dataset=args.dataset, data_dir=args.data_dir, train_limit=args.train_limit,
                       offline=args.offline, engine=args.engine, address=args.address,
                       cpus=args.cpus, cpus_per_trial=args.cpus_per_trial,
                       gpus_per_trial=args.gpus_per_trial, early_stop=args.early_stop,
                       device=args.device, out=out,
                       log=None if args.quiet else print)
    except MissingExtra as exc:
        print(f"fastmnist sweep: error: {exc}", file=sys.stderr)
        return 2
    n, done = len(result.trials), sum(r["status"] == "ok" for r in result.trials)
    print(f"\n{result.engine} engine: {done} of {n} trials finished in {result.seconds:.1f} s"
          + (f" (Ray start-up {result.startup_seconds:.1f} s)" if result.startup_seconds else "")
          + (" - interrupted" if result.interrupted else ""))
    print(result.table(args.top))
    if result.best:
        print(f"\nbest: trial {result.best['trial']}, test accuracy "
              f"{result.best['test_acc']:.4f}")
        if result.best.get("command"):
            print(f"  again by hand: {result.best['command']}")
    if out:
        print(f"results written to {out}/ (results.json, results.csv"
              + (", best.npz" if result.model else "") + ", sweep.png)")
    if result.interrupted:
        return 130
    return 0 if done else 1

"""The fastmnist command: train, predict, gradcheck, data, info, doctor, bench, sweep, serve.

Every mistake a user can make ends in one line on stderr and an exit status (2 for a setting or
file that cannot work, 1 for work that failed, 130 for Ctrl-C); ``--debug`` or
``FASTMNIST_DEBUG=1`` adds the traceback. :func:`main` is the one place that decides this.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import __version__
from .backend import DeviceError, get_backend
from .datasets import REGISTRY, DataError, cache_dir
from .doctor import add_parser as add_doctor
from .models import default_model, model_warnings, remember_model
from .outputs import HISTORY_FORMATS, MODEL_FORMATS, output_dir, output_file, plot_formats
from .sweeps import add_parser as add_sweep
from .web.server import add_parser as add_serve

ENV_DEBUG = "FASTMNIST_DEBUG"
DESCRIPTION = ("Train the classic 784-50-10 network on MNIST-format data (GPU through CuPy, or "
               "CPU), read your own handwriting with it, and check and time the install.")
# what a user's settings, files, data or machine can raise: one line each, no traceback
USER_ERRORS = (DataError, DeviceError, ValueError, ArithmeticError, OSError, MemoryError)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what it interrupted (``str()`` is the line to show)."""


@contextmanager
def interruptible(what: str):
    """Ctrl-C inside the block says ``interrupted {what}``."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted {what}") from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_device_args(p: argparse.ArgumentParser, dtype_default: str = "float32") -> None:
    p.add_argument("--device", default=None,
                   help="auto (default; a GPU when usable), cpu, cuda or cuda:N "
                        "(env FASTMNIST_DEVICE)")
    p.add_argument("--dtype", default=dtype_default, choices=("float32", "float64"),
                   help=f"floating-point type of weights and arithmetic ({dtype_default})")


# -- train ----------------------------------------------------------------------------------------
LEARNED_MARGIN = 0.05  # a run learned if its test accuracy beats always-one-class by this much


def train_outputs(args) -> dict:
    """``--save``, ``--plot`` and ``--history`` resolved and checked before anything runs."""
    return {"model": output_file(args.save, "--save", "model.npz", MODEL_FORMATS)
            if args.save else None,
            "plot": output_file(args.plot, "--plot", "curves.png", plot_formats())
            if args.plot else None,
            "history": output_file(args.history, "--history", "history.json", HISTORY_FORMATS)
            if args.history else None}


class NotEnoughMemory(MemoryError):
    """A run that would not fit in the device's memory, refused before allocating."""


def check_memory(backend, hidden: int, batch_size: int, dtype: str) -> None:
    from .train import memory_needed

    need = memory_needed((784, hidden, 10), batch_size, dtype)
    free = backend.available_memory()
    if free is not None and need > free:
        raise NotEnoughMemory(
            f"784-{hidden}-10 in {dtype} with batch {batch_size} needs about {need / 2**30:.1f} "
            f"GiB for its weights and training buffers, but "
            f"{f'GPU {backend.device}' if backend.is_cuda else 'this machine'} has "
            f"{free / 2**30:.1f} GiB available; use fewer hidden units (--hidden) or a smaller "
            "--batch-size")


def steps_for(args, rows: int) -> int:
    """``--iters``, or ``--epochs`` passes over the ``rows`` trained on (at least one step)."""
    if not args.epochs:
        return args.iters
    return max(1, round(args.epochs * max(rows // args.batch_size, 1)))


def chance_accuracy(labels) -> float:
    """The accuracy of always answering the commonest class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return float(counts.max() / counts.sum())


def cmd_train(args) -> int:
    from .datasets import load_mnist
    from .network import TwoLayerNet
    from .train import train

    outputs = train_outputs(args)
    backend = get_backend(args.device)
    check_memory(backend, args.hidden, args.batch_size, args.dtype)
    with interruptible("during data loading"):
        (x, t), (xt, tt) = load_mnist(normalize=True, dataset=args.dataset, data_dir=args.data_dir,
                                      download=False if args.offline else None,
                                      offline_reason="--offline")
    if args.train_limit:
        x, t = x[: args.train_limit], t[: args.train_limit]
    rows = x.shape[0]
    if args.augment:  # an epoch is a pass over the rows trained on, copies included
        from .augment import COPIES

        rows *= COPIES + 1
    iters = steps_for(args, rows)
    net = TwoLayerNet(784, args.hidden, 10, args.init_std, device=backend, dtype=args.dtype,
                      seed=args.seed)
    say = (lambda *a: None) if args.quiet else print
    reason = f" ({backend.reason})" if backend.reason else ""
    epochs = f" ({args.epochs:g} epoch{'s' * (args.epochs != 1)} of {rows} rows)" \
        if args.epochs else ""
    say(f"fastmnist {__version__}: {args.dataset}, {x.shape[0]} train / {xt.shape[0]} test rows, "
        f"784-{args.hidden}-10 {args.dtype} on {net.device}{reason}; {iters} steps of "
        f"{args.batch_size}{epochs}, lr {args.lr}, sampling {args.sampling}")
    if args.dry_run:
        say("dry run: data and network are ready; not training")
        return 0
    if args.augment:
        from .augment import augmented_training_set

        with interruptible("while augmenting the training set"):
            # straightening and writing styles only where the images are handwritten digits
            digits = args.dataset == "mnist"
            x, t = augmented_training_set(x, t, seed=args.seed, writing_styles=digits,
                                          straighten=digits)
        say(f"augmented: training on {x.shape[0]} rows (originals plus jittered copies)")
    try:
        history = train(net, x, t, xt, tt, iters=iters, batch_size=args.batch_size,
                        learning_rate=args.lr, sampling=args.sampling, seed=args.seed,
                        eval_every=args.eval_every, quiet=args.quiet, overlap=args.overlap)
    except BaseException as exc:  # Ctrl-C or a failure part-way: keep what was trained
        history = getattr(exc, "history", None)
        if history is None or not history.loss:
            raise
        write_results(args, outputs, net, history, iters, tt, say)
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"interrupted at step {len(history.loss)} of {iters}") from None
        raise
    evaluation = ("evaluation alongside, then " if history.config["overlap"] else "evaluation ")
    print(f"test accuracy {history.test_acc[-1]:.4f} after {iters} steps; training "
          f"{history.train_seconds:.2f} s, {evaluation}{history.eval_seconds:.2f} s")
    return write_results(args, outputs, net, history, iters, tt, say)


def write_results(args, outputs: dict, net, history, iters: int, t_test, say) -> int:
    """Write the model, plot and history asked for, each on its own, so that one failing never
    costs the others; a run that stopped early is marked so in them. 1 if any failed."""
    from .plots import plot_history

    acc = history.test_acc[-1] if history.test_acc else None
    chance = chance_accuracy(t_test)
    learned = acc is not None and acc >= chance + LEARNED_MARGIN
    if not learned:
        fix = (f"its learning rate (--lr {args.lr:g}) is likely too large; the article's is 0.1"
               if args.lr > 1 else "train it longer (--iters, --epochs) or check the data")
        print(f"WARNING: this run did not learn: test accuracy {acc or 0:.4f}, where always "
              f"answering one class scores {chance:.4f}; {fix}."
              + (" Its model is not made the default for `fastmnist predict`."
                 if outputs["model"] else ""), file=sys.stderr)
    note = "" if history.status == "complete" else \
        f" (marked {history.status} at step {len(history.loss)} of {iters})"
    writers = {"model": lambda p: save_model(args, net, p, history, iters, learned),
               "plot": lambda p: plot_history(history, p) or p,
               "history": lambda p: history.save(p) or p}
    said = {"model": "model saved to", "plot": "plot written to", "history": "history written to"}
    failed = 0
    for name, path in outputs.items():
        if path is None:
            continue
        try:
            written = writers[name](path)
        except (OSError, ValueError, MemoryError) as exc:
            print(f"fastmnist train: error: the {name} was not written to {path}: {exc}",
                  file=sys.stderr)
            failed = 1
            continue
        say(f"{said[name]} {written}{note}")
    return failed


def save_model(args, net, path, history, iters: int, learned: bool) -> Path:
    """Save ``net`` with what the run was, and remember it for ``predict`` if it learned."""
    from .datasets import get_dataset

    if not all(np.isfinite(v).all() for v in net.host_params().values()):
        raise ValueError("its weights are NaN or infinite (the run diverged), so there is no "
                         "model to keep")
    path = net.save(path, dataset=args.dataset, classes=list(get_dataset(args.dataset).classes),
                    test_accuracy=history.test_acc[-1] if history.test_acc else None,
                    train_accuracy=history.train_acc[-1] if history.train_acc else None,
                    iters=iters, steps=len(history.loss), status=history.status,
                    learned=learned, augment=args.augment)
    remember_model(path, learned)
    return path


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train the two-layer network (the article's settings)",
                       description="Train 784-H-10 by mini-batch SGD, evaluating on the full "
                                   "train and test sets every epoch. Output paths are checked "
                                   "before training; Ctrl-C keeps what was trained.")
    p.add_argument("--dataset", default="mnist", choices=sorted(REGISTRY),
                   help="which data set (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="folder holding the four IDX files")
    p.add_argument("--offline", action="store_true",
                   help="never download (also FASTMNIST_OFFLINE=1)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--iters", type=positive_int, default=10_000, help="SGD steps (10000)")
    steps.add_argument("--epochs", type=positive_float,
                       help="train for this many passes over the training rows instead "
                            "(augmented ones included; fractions allowed)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="rows per step (100)")
    p.add_argument("--lr", type=positive_float, default=0.1, help="learning rate (0.1)")
    p.add_argument("--hidden", type=positive_int, default=50, help="hidden units (50)")
    p.add_argument("--init-std", type=positive_float, default=0.01,
                   help="weight init scale (0.01)")
    p.add_argument("--sampling", default="replacement", choices=("replacement", "epoch"),
                   help="replacement (default): each batch drawn at random; epoch: shuffled "
                        "passes")
    p.add_argument("--eval-every", type=positive_int, default=None,
                   help="steps between full evaluations (default: one epoch)")
    p.add_argument("--train-limit", type=positive_int, default=None,
                   help="use only the first N training rows")
    p.add_argument("--augment", action="store_true",
                   help="add shifted/rotated/scaled/thickened copies of the training digits")
    add_device_args(p)
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the weights and batches (default: different every run)")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                   help="CPU: gather batches and score on a second thread beside the steps "
                        "(default: on with 2+ cores and batches up to 1000)")
    p.add_argument("--save", default="model.npz",
                   help="model file (.npz) or folder to write (default: model.npz; '' to skip)")
    p.add_argument("--plot", default=None,
                   help="write the loss/accuracy figure (.png, .pdf, .svg, ...)")
    p.add_argument("--history", default=None, help="write the history (.json or .csv)")
    p.add_argument("--quiet", action="store_true", help="print only the final result")
    p.add_argument("--dry-run", action="store_true", help="check settings and data, then stop")
    p.set_defaults(func=cmd_train)


# -- gradcheck -----------------------------------------------------------------------------------
def cmd_gradcheck(args) -> int:
    from .network import TwoLayerNet, gradient_check

    rng = np.random.default_rng(args.seed)
    x = rng.random((args.batch, args.inputs))
    t = rng.integers(0, 10, args.batch)
    net = TwoLayerNet(args.inputs, args.hidden, 10, 0.5, device=args.device, dtype=args.dtype,
                      seed=args.seed)
    # float32 has ~7 digits, so its differences need a larger step to rise above rounding
    errors = gradient_check(net, x, t, h=1e-4 if args.dtype == "float64" else 1e-2)
    print(f"backprop vs central differences ({args.inputs}-{args.hidden}-10, batch {args.batch}, "
          f"{args.dtype}, {net.device}): max relative error per parameter")
    for name, err in errors.items():
        print(f"  {name}: {err:.3e}")
    limit = 1e-6 if args.dtype == "float64" else 1e-2
    worst = max(errors.values())
    print(f"{'PASS' if worst < limit else 'FAIL'} (limit {limit:g})")
    return 0 if worst < limit else 1


def add_gradcheck(sub) -> None:
    p = sub.add_parser("gradcheck", help="compare backprop with numerical gradients")
    p.add_argument("--inputs", type=positive_int, default=20, help="input size (20)")
    p.add_argument("--hidden", type=positive_int, default=10, help="hidden units (10)")
    p.add_argument("--batch", type=positive_int, default=8, help="rows in the batch (8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and weights (0)")
    add_device_args(p, dtype_default="float64")
    p.set_defaults(func=cmd_gradcheck)


# -- info ---------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .steps import compiled, tiled
    from .system import blas_info, cuda_lines, cuda_report

    print(f"fastmnist {__version__}, Python {platform.python_version()} on {platform.platform()}")
    print(f"NumPy {np.__version__}; BLAS: {'; '.join(blas_info()) or 'unknown'}")
    print(f"CPU training step: {compiled.describe()}")
    print(f"large batches: {tiled.describe()}")
    print("\n".join(cuda_lines(cuda_report())))
    backend = get_backend(args.device)
    print(f"device used by default: {backend.device}"
          + (f" (CUDA not used: {backend.reason})" if backend.reason else ""))
    print(f"data cache: {cache_dir()}")
    return 0


def add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, BLAS, GPUs found and why CUDA is (not) used")
    p.add_argument("--device", default=None,
                   help="the device to describe (default: auto, or FASTMNIST_DEVICE)")
    p.set_defaults(func=cmd_info)


# -- data ------------------------------------------------------------------------------------------
def cmd_data(args) -> int:
    from .datasets import cache_file, get_dataset, load_split, mirror_list

    if args.action == "list":
        for name, ds in REGISTRY.items():
            cached = all(cache_file(ds, s).is_file() for s in ("train", "test"))
            print(f"{name:14s} {'cached' if cached else 'not cached':11s} "
                  f"mirrors: {', '.join(mirror_list(ds))}")
        return 0
    if not args.name:
        raise ValueError(f"name a dataset: fastmnist data {args.action} NAME "
                         f"({', '.join(REGISTRY)})")
    ds = get_dataset(args.name)
    if args.action == "path":
        print(cache_dir() / ds.name)
        return 0
    status = 0
    for split in ("train", "test"):
        if args.action == "verify":
            cache_file(ds, split).unlink(missing_ok=True)  # verify from the files, not the cache
        try:
            with interruptible(f"while loading the {ds.name} {split} set"):
                images, labels = load_split(
                    ds.name, split, data_dir=args.data_dir,
                    download=None if args.action == "fetch" else False,
                    offline_reason=f"`fastmnist data verify` reads local files only; `fastmnist "
                                   f"data fetch {ds.name}` downloads")
            print(f"{ds.name} {split}: {images.shape[0]} images verified "
                  f"(labels {np.bincount(labels, minlength=10).tolist()})")
        except DataError as exc:
            print(f"{ds.name} {split}: {exc}", file=sys.stderr)
            status = 1
    return status


def add_data(sub) -> None:
    p = sub.add_parser("data", help="list, fetch, verify or locate datasets")
    p.add_argument("action", choices=("list", "fetch", "verify", "path"),
                   help="list: every dataset and its mirrors; fetch: find or download and "
                        "verify; verify: check the local files; path: where the cache is")
    p.add_argument("name", nargs="?", help=f"one of {', '.join(REGISTRY)}")
    p.add_argument("--data-dir", default=None, help="folder holding the IDX files")
    p.set_defaults(func=cmd_data)


# -- predict -------------------------------------------------------------------------------------
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def image_paths(sources) -> list[str]:
    """Files as given; a folder stands for the image files inside it, in name order."""
    paths = []
    for src in sources:
        folder = Path(src)
        if folder.is_dir():
            found = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                print(f"{src}: warning: no image files in this folder", file=sys.stderr)
            paths.extend(found)
        else:
            paths.append(src)
    return paths


def warn_about_model(net, model_path) -> None:
    for line in model_warnings(net, model_path):
        print(f"warning: {line}", file=sys.stderr)


def result_json(src, r) -> dict:
    if r is None:
        return {"image": str(src), "error": True}
    digits = [{"digit": d["digit"], "label": d["label"], "probabilities": d["probabilities"],
               "top": [{"digit": k, "probability": p} for k, p in d["top"]]}
              for d in r["digits"]]
    return {"image": str(src), "number": r["number"], "digits": digits, **digits[0]} \
        if len(digits) == 1 else {"image": str(src), "number": r["number"], "digits": digits}


def result_line(src, r, names) -> str:
    """``src: 7   (7: 98.1%, 1: 1.2%)``, or a number with each digit's probability."""
    if len(r["digits"]) > 1:
        return f"{src}: {r['number']}   (" + ", ".join(
            f"{d['label']} {d['probabilities'][d['digit']]:.0%}" for d in r["digits"]) + ")"
    top = ", ".join(f"{names[k]}: {p:.1%}" for k, p in r["top"])
    return f"{src}: {r['label']}   ({top})"


def cmd_predict(args) -> int:
    from .images import predict_image
    from .network import TwoLayerNet

    plot = output_file(args.plot, "--plot", "predictions.png", plot_formats()) \
        if args.plot else None
    preprocessed = output_dir(args.save_preprocessed, "--save-preprocessed") \
        if args.save_preprocessed else None
    model_path = args.model or default_model()
    net = TwoLayerNet.load(model_path, device=args.device)
    warn_about_model(net, model_path)
    several = {"auto": None, "digit": False, "number": True}[args.read]
    paths = image_paths(args.images)
    results, errors = [], {}
    for src in paths:
        try:
            results.append(predict_image(src, net, top=args.top, several=several))
        except (OSError, ValueError) as exc:
            print(f"{src}: error: {exc}", file=sys.stderr)
            results.append(None)
            errors[src] = str(exc)
    done = [(src, r) for src, r in zip(paths, results) if r is not None]
    if preprocessed:
        from PIL import Image

        for src, r in done:
            Image.fromarray((r["image"] * 255).round().astype(np.uint8)).save(
                preprocessed / (Path(src).stem + "-28x28.png"))
    if args.json:
        rows = []
        for src, r in zip(paths, results):
            row = result_json(src, r)
            if r is None:
                row["error"] = errors[src]
            rows.append(row)
        print(json.dumps(rows, indent=1))
    else:
        from .images import class_names

        for src, r in done:
            print(result_line(src, r, class_names(net)))
    if plot and done:
        from .plots import plot_predictions

        plot_predictions([s for s, _ in done], [r for _, r in done], plot)
        if not args.json:
            print(f"plot written to {plot}")
    return 1 if errors or not paths else 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="read digits from your own photos or drawings",
                       description="Preprocess each image the way MNIST digits were made and "
                                   "print the network's answer.")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or folders of them")
    p.add_argument("--read", choices=("auto", "digit", "number"), default="auto",
                   help="auto (default): a row of several digits is read as a number; digit: "
                        "always one digit (the one nearest the centre); number: every digit")
    p.add_argument("--model", default=None,
                   help="model file (default: the last one `fastmnist train` saved that learned)")
    p.add_argument("--top", type=positive_int, default=3, help="show the K likeliest digits")
    p.add_argument("--json", action="store_true",
                   help="print JSON: every image, failed ones with their error")
    p.add_argument("--save-preprocessed", default=None, metavar="DIR",
                   help="write each 28x28 digit as the network sees it")
    p.add_argument("--plot", default=None,
                   help="write a figure (.png, .pdf, ...): input, 28x28 digit, probabilities")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N")
    p.set_defaults(func=cmd_predict)


# -- bench ---------------------------------------------------------------------------------------
def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def cmd_bench(args) -> int:
    import time

    from . import bench
    from .datasets import load_mnist

    out = output_dir(args.out, "--out")
    backend = get_backend(args.device)
    iters, batches, hiddens, rows = 10_000, (100, 1000, 10_000, 60_000), (50, 256, 1024), 60_000
    if args.quick:
        iters, batches, hiddens, rows = 300, (100, 1000), (50,), 5000
    started = time.perf_counter()

    def load():
        (x, t), (xt, tt) = load_mnist(normalize=True, dataset=args.dataset, data_dir=args.data_dir)
        return (x[:rows], t[:rows]), (xt, tt)

    torch = bench.torch_module(backend)
    if torch is None:
        print("PyTorch " + ("has no CUDA here" if bench.torch_module() else "is not installed")
              + ": its rows are left out (pip install torch to compare)")
    parts = bench.estimate_seconds(backend, iters, args.repeat, batches, hiddens, rows,
                                   torch is not None)
    estimate = sum(parts.values())
    print(f"estimated duration: about {minutes(estimate)} ({args.repeat} interleaved rounds of "
          f"the workload, then one step at {len(batches) * len(hiddens)} sizes; longer on a "
          "busy machine; --quick for a smoke run)")
    with interruptible("during data loading"):
        data = load()
    with interruptible("during the article's workload (nothing written yet)"):
        print(f"article workload ({iters} steps) on {args.dataset}, device {backend.device}:")
        results = bench.workload(data, backend, iters, repeat=args.repeat)
        results["workload"]["dataset"] = args.dataset
        print("peak memory: loading and one more fastmnist run ...")
        results["memory"] = bench.peak_host_memory(load, backend, iters)
    print(bench.workload_table(results))
    print(bench.memory_line(results["memory"]))
    bench.save(results, out / "workload.json", out / "workload.png", bench.workload_chart)
    pace = (time.perf_counter() - started) / (parts["workload"] + parts["memory"])
    with interruptible(f"during the one-step timings (workload results are in {out}/)"):
        print(f"one SGD step at each batch and hidden size (about "
              f"{minutes(pace * (parts['core'] + parts['evaluation']))} more at this pace):")
        steps = bench.core(backend, batches, hiddens, repeat=3, rows=rows, log=print)
        print("one full evaluation ...")
        evaluation = bench.evaluation(backend, rows=rows)
    print(bench.core_table(steps, evaluation))
    bench.save({"environment": results["environment"], "steps": steps, "evaluation": evaluation},
               out / "core.json", out / "core.png", bench.core_chart, steps)
    print(f"results written to {out}/ (workload.json/.png, core.json/.png) in "
          f"{minutes(time.perf_counter() - started)} (estimated {minutes(estimate)})")
    return 0


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="the standard benchmarks: the article's workload and one step",
                       description="Time fastmnist, the article's float64 code, PyTorch (if "
                                   "installed) and the matmul-only floor side by side. Takes "
                                   "several minutes; it prints an estimate first.")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(REGISTRY),
                   help="which data set (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="folder holding the four IDX files")
    p.add_argument("--repeat", type=positive_int, default=2,
                   help="interleaved rounds of the workload; each variant keeps its best (2)")
    p.add_argument("--quick", action="store_true", help="small sizes: a minute, for a smoke run")
    p.add_argument("--out", default="bench-results",
                   help="folder for JSON and PNG results (default: bench-results)")
    p.set_defaults(func=cmd_bench)


# -- entry point ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastmnist", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"fastmnist {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also {ENV_DEBUG}=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train(sub)
    add_gradcheck(sub)
    add_info(sub)
    add_doctor(sub)
    add_data(sub)
    add_predict(sub)
    add_bench(sub)
    add_sweep(sub)
    add_serve(sub)
    for command in sub.choices.values():  # `fastmnist train ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=f"show the traceback of an error (also {ENV_DEBUG}=1)")
    return parser


def error_line(exc: BaseException) -> str:
    """What went wrong, in one line for people."""
    if isinstance(exc, MemoryError) and not isinstance(exc, NotEnoughMemory):
        return f"out of memory: {exc or 'an allocation failed'}; try fewer hidden units " \
               "(--hidden) or a smaller --batch-size"
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def main(argv=None) -> int:
    """Run a command; the one place that decides how its errors reach the user."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(ENV_DEBUG, "").strip() not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        line = str(exc) if isinstance(exc, Interrupted) else "interrupted"
        print(f"fastmnist {args.command}: {line}", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        print(f"fastmnist {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except Exception:  # a bug: the traceback is what a report needs
        traceback.print_exc()
        print(f"fastmnist {args.command}: internal error: this is a bug in fastmnist; please "
              "report it with the traceback above and `fastmnist doctor --json`", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``fastmnist`` command: train, predict, gradcheck, data, info, doctor, bench, sweep."""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .backend import DeviceError, get_backend
from .datasets import REGISTRY, DataError, cache_dir
from .doctor import add_parser as add_doctor
from .sweeps import add_parser as add_sweep


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


def last_model_record() -> Path:
    return cache_dir() / "last-model.txt"


def add_device_args(p: argparse.ArgumentParser, dtype_default: str = "float32") -> None:
    p.add_argument("--device", default=None,
                   help="auto (default; a GPU when usable), cpu, cuda or cuda:N "
                        "(env FASTMNIST_DEVICE)")
    p.add_argument("--dtype", default=dtype_default, choices=("float32", "float64"))


# -- train ----------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .datasets import load_mnist
    from .network import TwoLayerNet
    from .plots import plot_history
    from .train import train

    (x, t), (xt, tt) = load_mnist(normalize=True, dataset=args.dataset, data_dir=args.data_dir,
                                  download=not args.offline)
    if args.train_limit:
        x, t = x[: args.train_limit], t[: args.train_limit]
    iters = args.iters
    if args.epochs:
        iters = args.epochs * max(x.shape[0] // args.batch_size, 1)
    net = TwoLayerNet(784, args.hidden, 10, args.init_std, device=args.device, dtype=args.dtype,
                      seed=args.seed)
    say = (lambda *a: None) if args.quiet else print
    reason = f" ({net.backend.reason})" if net.backend.reason else ""
    say(f"fastmnist {__version__}: {args.dataset}, {x.shape[0]} train / {xt.shape[0]} test rows, "
        f"784-{args.hidden}-10 {args.dtype} on {net.device}{reason}; {iters} steps of "
        f"{args.batch_size}, lr {args.lr}, sampling {args.sampling}")
    if args.dry_run:
        say("dry run: data and network are ready; not training")
        return 0
    if args.augment:
        from .augment import augmented_training_set

        x, t = augmented_training_set(x, t, seed=args.seed)
        say(f"augmented: training on {x.shape[0]} rows (originals plus jittered copies)")
    history = train(net, x, t, xt, tt, iters=iters, batch_size=args.batch_size,
                    learning_rate=args.lr, sampling=args.sampling, seed=args.seed,
                    eval_every=args.eval_every, quiet=args.quiet, overlap=args.overlap)
    acc = history.test_acc[-1]
    evaluation = ("evaluation alongside, then " if history.config["overlap"] else "evaluation ")
    print(f"test accuracy {acc:.4f} after {iters} steps; training {history.train_seconds:.2f} s, "
          f"{evaluation}{history.eval_seconds:.2f} s")
    if args.save:
        from .datasets import get_dataset

        path = net.save(args.save, dataset=args.dataset, test_accuracy=acc,
                        classes=list(get_dataset(args.dataset).classes),
                        train_accuracy=history.train_acc[-1], iters=iters, augment=args.augment)
        last_model_record().parent.mkdir(parents=True, exist_ok=True)
        last_model_record().write_text(str(path.resolve()))
        say(f"model saved to {path}")
    if args.plot:
        plot_history(history, args.plot)
        say(f"plot written to {args.plot}")
    if args.history:
        history.save(args.history)
        say(f"history written to {args.history}")
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train the two-layer network (the article's settings)",
                       description="Train 784-H-10 by mini-batch SGD, evaluating on the full "
                                   "train and test sets every epoch.")
    p.add_argument("--dataset", default="mnist", choices=sorted(REGISTRY))
    p.add_argument("--data-dir", default=None, help="folder holding the four IDX files")
    p.add_argument("--offline", action="store_true", help="never download")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--iters", type=positive_int, default=10_000, help="SGD steps (10000)")
    steps.add_argument("--epochs", type=positive_int, help="train for this many epochs instead")
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--lr", type=positive_float, default=0.1, help="learning rate (0.1)")
    p.add_argument("--hidden", type=positive_int, default=50, help="hidden units (50)")
    p.add_argument("--init-std", type=positive_float, default=0.01, help="weight init scale")
    p.add_argument("--sampling", default="replacement", choices=("replacement", "epoch"))
    p.add_argument("--eval-every", type=positive_int, default=None,
                   help="steps between full evaluations (default: one epoch)")
    p.add_argument("--train-limit", type=positive_int, default=None,
                   help="use only the first N training rows")
    p.add_argument("--augment", action="store_true",
                   help="add shifted/rotated/scaled/thickened copies of the training digits")
    add_device_args(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                   help="CPU: gather batches and score on a second thread beside the steps "
                        "(default: on with 2+ cores and batches up to 1000)")
    p.add_argument("--save", default="model.npz", help="model file to write ('' to skip)")
    p.add_argument("--plot", default=None, help="write the loss/accuracy figure (PNG)")
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
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    add_device_args(p, dtype_default="float64")
    p.set_defaults(func=cmd_gradcheck)


# -- info ---------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .system import blas_info, cuda_lines, cuda_report

    print(f"fastmnist {__version__}, Python {platform.python_version()} on {platform.platform()}")
    print(f"NumPy {np.__version__}; BLAS: {'; '.join(blas_info()) or 'unknown'}")
    print("\n".join(cuda_lines(cuda_report())))
    backend = get_backend(args.device)
    print(f"device used by default: {backend.device}"
          + (f" (CUDA not used: {backend.reason})" if backend.reason else ""))
    print(f"data cache: {cache_dir()}")
    return 0


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
        raise SystemExit(f"fastmnist data {args.action}: name a dataset ({', '.join(REGISTRY)})")
    ds = get_dataset(args.name)
    if args.action == "path":
        print(cache_dir() / ds.name)
        return 0
    status = 0
    for split in ("train", "test"):
        if args.action == "verify":
            cache_file(ds, split).unlink(missing_ok=True)  # verify from the files, not the cache
        try:
            images, labels = load_split(ds.name, split, data_dir=args.data_dir,
                                        download=args.action == "fetch")
            print(f"{ds.name} {split}: {images.shape[0]} images verified "
                  f"(labels {np.bincount(labels, minlength=10).tolist()})")
        except DataError as exc:
            print(f"{ds.name} {split}: {exc}", file=sys.stderr)
            status = 1
    return status


def add_data(sub) -> None:
    p = sub.add_parser("data", help="list, fetch, verify or locate datasets")
    p.add_argument("action", choices=("list", "fetch", "verify", "path"))
    p.add_argument("name", nargs="?", help=f"one of {', '.join(REGISTRY)}")
    p.add_argument("--data-dir", default=None, help="folder holding the IDX files")
    p.set_defaults(func=cmd_data)


# -- predict -------------------------------------------------------------------------------------
def default_model() -> str:
    record = last_model_record()
    if record.is_file():
        return record.read_text().strip()
    return "model.npz"


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


def warn_if_not_digits(net, model_path) -> None:
    dataset = net.metadata.get("dataset")
    if dataset and dataset != "mnist":
        print(f"warning: {model_path} was trained on {dataset}, not on handwritten digits, so it "
              f"answers with {dataset} classes; for digits train one with "
              "`fastmnist train --dataset mnist --augment`", file=sys.stderr)


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

    model_path = args.model or default_model()
    net = TwoLayerNet.load(model_path, device=args.device)
    warn_if_not_digits(net, model_path)
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
    if args.save_preprocessed:
        from PIL import Image

        out = Path(args.save_preprocessed)
        out.mkdir(parents=True, exist_ok=True)
        for src, r in done:
            Image.fromarray((r["image"] * 255).round().astype(np.uint8)).save(
                out / (Path(src).stem + "-28x28.png"))
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
    if args.plot and done:
        from .plots import plot_predictions

        plot_predictions([s for s, _ in done], [r for _, r in done], args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
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
                   help="model file (default: the last one `fastmnist train` saved)")
    p.add_argument("--top", type=positive_int, default=3, help="show the K likeliest digits")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--save-preprocessed", default=None, metavar="DIR",
                   help="write each 28x28 digit as the network sees it")
    p.add_argument("--plot", default=None, help="write a PNG: input, 28x28 digit, probabilities")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N")
    p.set_defaults(func=cmd_predict)


# -- bench ---------------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    from . import bench
    from .datasets import load_mnist

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    iters, batches, hiddens, rows = 10_000, (100, 1000, 10_000, 60_000), (50, 256, 1024), 60_000
    if args.quick:
        iters, batches, hiddens, rows = 300, (100, 1000), (50,), 5000

    def load():
        (x, t), (xt, tt) = load_mnist(normalize=True, dataset=args.dataset, data_dir=args.data_dir)
        return (x[:rows], t[:rows]), (xt, tt)

    print(f"article workload ({iters} steps) on {args.dataset}, device {args.device}:")
    results = bench.workload(load(), args.device, iters, repeat=args.repeat)
    results["workload"]["dataset"] = args.dataset
    results["memory"] = bench.peak_host_memory(load, args.device, iters)
    print(bench.workload_table(results))
    print(bench.memory_line(results["memory"]))
    bench.save(results, out / "workload.json", out / "workload.png", bench.workload_chart)
    steps = bench.core(args.device, batches, hiddens, repeat=3, rows=rows)
    evaluation = bench.evaluation(args.device, rows=rows)
    print(bench.core_table(steps, evaluation))
    bench.save({"environment": results["environment"], "steps": steps, "evaluation": evaluation},
               out / "core.json", out / "core.png", bench.core_chart, steps)
    print(f"results written to {out}/ (workload.json/.png, core.json/.png)")
    return 0


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="the standard benchmarks: the article's workload and one step",
                       description="Time fastmnist, the article's float64 code, PyTorch (if "
                                   "installed) and the matmul-only floor side by side.")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(REGISTRY))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--repeat", type=positive_int, default=2, help="interleaved rounds (2)")
    p.add_argument("--quick", action="store_true", help="small sizes: a minute, for a smoke run")
    p.add_argument("--out", default="bench-results", help="folder for JSON and PNG results")
    p.set_defaults(func=cmd_bench)


# -- entry point ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastmnist", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastmnist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train(sub)
    add_gradcheck(sub)
    p = sub.add_parser("info", help="versions, BLAS, GPUs found and why CUDA is (not) used")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_info)
    add_doctor(sub)
    add_data(sub)
    add_predict(sub)
    add_bench(sub)
    add_sweep(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, DeviceError, ValueError, FloatingPointError, OSError) as exc:
        print(f"fastmnist {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

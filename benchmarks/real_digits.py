"""How well real handwriting is read: photos, canvas drawings and tiny drawings by ~25 people.

A 784-50-10 net is trained with the article's settings (10,000 steps of 100, lr 0.1) on the
10,000 real MNIST digits, plainly and on ``augmented_training_set``; each is scored on
``../shared/data/real-digits`` through the article's pipeline and through fastmnist's, per kind
of image, per digit and per source, with a confusion matrix, a sheet of every misread image
beside the 28x28 digit the net saw, and the written numbers of ``numbers/``.

    python benchmarks/real_digits.py [--out real-digits-report] [--copies N] [--seeds 3] [--json r.json]

The set is for measuring, never for tuning on individual files.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from fastmnist import TwoLayerNet, to_numpy, train  # noqa: E402
from fastmnist.augment import augmented_training_set  # noqa: E402
from fastmnist.datasets import load_split  # noqa: E402
from fastmnist.images import preprocess_image, read_number  # noqa: E402
from photo_eval import article_preprocess  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data"
REAL_DIGITS = SHARED / "real-digits"
MNIST_DIR = SHARED / "mnist"


def load_manifest(folder: Path = REAL_DIGITS) -> list[dict]:
    """The rows of ``folder/manifest.tsv`` with ``path`` and integer ``label`` filled in."""
    with open(folder / "manifest.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        row["path"], row["label"] = folder / row["file"], int(row["label"])
    return rows


def load_numbers(folder: Path = REAL_DIGITS / "numbers") -> list[dict]:
    with open(folder / "manifest.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        row["path"] = folder / row["file"]
    return rows


def mnist_digits(data_dir: Path = MNIST_DIR):
    """The 10,000 real MNIST test digits as float32 rows (N, 784) in 0..1 and labels (N,)."""
    images, labels = load_split("mnist", "test", data_dir=data_dir, download=False)
    return images.reshape(-1, 784).astype(np.float32) / 255, labels


def train_article_net(x, t, *, augment: bool, copies=None, seed: int = 0,
                      iters: int = 10_000) -> TwoLayerNet:
    """784-50-10 trained with the article's settings, optionally on augmented copies."""
    if augment:
        kwargs = {} if copies is None else {"copies": copies}
        x, t = augmented_training_set(x, t, seed=seed, **kwargs)
    net = TwoLayerNet(784, 50, 10, device="cpu", seed=seed)
    train(net, x, t, iters=iters, batch_size=100, learning_rate=0.1, seed=seed, quiet=True)
    return net


def preprocess_all(rows, pipeline) -> np.ndarray:
    """``(N, 784)`` float32 inputs for every row; an image a pipeline refuses becomes zeros."""
    out = np.zeros((len(rows), 784), dtype=np.float32)
    for i, row in enumerate(rows):
        try:
            out[i] = pipeline(row["path"]).reshape(784)
        except ValueError:
            pass
    return out


def breakdown(rows, correct: np.ndarray, key: str) -> dict:
    groups = defaultdict(list)
    for row, ok in zip(rows, correct):
        groups[row[key]].append(bool(ok))
    return {str(k): [int(sum(v)), len(v)] for k, v in sorted(groups.items())}


def score(net, rows, inputs: np.ndarray) -> dict:
    """Accuracy overall and by kind, digit and source; the confusion matrix; the guesses."""
    guess = to_numpy(net.predict(inputs)).argmax(axis=1)
    truth = np.array([r["label"] for r in rows])
    correct = guess == truth
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (truth, guess), 1)
    return {"accuracy": float(correct.mean()), "correct": int(correct.sum()), "count": len(rows),
            "by_kind": breakdown(rows, correct, "kind"),
            "by_digit": breakdown(rows, correct, "label"),
            "by_source": breakdown(rows, correct, "repo"),
            "confusion": confusion.tolist(), "guess": guess.tolist()}


def read_numbers(net, rows) -> list[dict]:
    results = []
    for row in rows:
        try:
            found = read_number(row["path"], net)["number"]
        except ValueError as exc:
            found = f"error: {exc}"
        results.append({"file": row["file"], "number": row["number"], "read": found,
                        "correct": found == row["number"]})
    return results


def time_preprocessing(repeat: int = 3) -> dict:
    """Milliseconds per image for a 4000x3000 phone photo and a 280x280 canvas drawing."""
    rng = np.random.default_rng(0)
    digit = mnist_digits()[0][0].reshape(28, 28)
    sizes = {"photo_4000x3000": (3000, 4000), "canvas_280x280": (280, 280)}
    out = {}
    for name, (h, w) in sizes.items():
        from PIL import Image

        side = min(h, w) // 3
        ink = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((side, side)),
                         dtype=np.float32) / 255
        page = np.full((h, w), 0.92, dtype=np.float32) + rng.normal(0, 0.02, (h, w)).astype(
            np.float32)
        top, left = (h - side) // 2, (w - side) // 2
        page[top: top + side, left: left + side] -= 0.8 * ink
        img = Image.fromarray((np.clip(page, 0, 1) * 255).astype(np.uint8)).convert("RGB")
        preprocess_image(img)
        t0 = time.perf_counter()
        for _ in range(repeat):
            preprocess_image(img)
        out[name] = (time.perf_counter() - t0) / repeat * 1000
    return out


def misread_sheet(rows, inputs, result, path: Path, title: str) -> None:
    """Every misread image beside the 28x28 digit the net saw, labelled truth -> guess."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastmnist.images import load_rgb

    wrong = [i for i, g in enumerate(result["guess"]) if g != rows[i]["label"]]
    if not wrong:
        return
    cols = 6
    lines = (len(wrong) + cols - 1) // cols
    fig, axes = plt.subplots(lines, 2 * cols, figsize=(2 * cols * 1.1, lines * 1.35),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(wrong):
        a_in, a_net = axes[k // cols, 2 * (k % cols)], axes[k // cols, 2 * (k % cols) + 1]
        a_in.imshow(load_rgb(rows[i]["path"]))
        a_in.set_title(f"{rows[i]['label']} -> {result['guess'][i]}", fontsize=8, color="crimson")
        a_net.imshow(inputs[i].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        a_net.set_title(rows[i]["kind"], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def report_table(results: dict) -> str:
    lines = ["| pipeline | net | all | photo | canvas | tiny |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        kinds = " | ".join(f"{r['by_kind'].get(k, [0, 0])[0]}/{r['by_kind'].get(k, [0, 0])[1]}"
                           for k in ("photo", "canvas", "tiny"))
        pipeline, net = name.split("/")
        lines.append(f"| {pipeline} | {net} | {r['accuracy']:.1%} | {kinds} |")
    return "\n".join(lines)


def evaluate(nets: dict, out: Path | None = None, folder: Path = REAL_DIGITS) -> dict:
    """Score each ``{name: net}`` with both pipelines on the set in ``folder``."""
    rows = load_manifest(folder)
    inputs = {"article": preprocess_all(rows, lambda p: article_preprocess(p) / 255.0),
              "fastmnist": preprocess_all(rows, preprocess_image)}
    results = {}
    for net_name, net in nets.items():
        for pipe, x in inputs.items():
            r = score(net, rows, x)
            results[f"{pipe}/{net_name}"] = r
            if out is not None and pipe == "fastmnist":
                misread_sheet(rows, x, r, out / f"misread-{net_name}.png",
                              f"misread with fastmnist's preprocessing, {net_name} net "
                              f"({r['count'] - r['correct']} of {r['count']})")
    return results


def seed_spread(x, t, seeds, copies=None, folder: Path = REAL_DIGITS) -> dict:
    """Accuracy with fastmnist's pipeline of the plain and augmented nets trained with each of
    ``seeds``: ``{"plain": [...], "augmented": [...]}``. One seed's figure moves by a point or
    two with the seed; judge a change by the mean."""
    rows = load_manifest(folder)
    labels = np.array([r["label"] for r in rows])
    inputs = preprocess_all(rows, preprocess_image)
    spread = {"plain": [], "augmented": []}
    for seed in seeds:
        for name in spread:
            net = train_article_net(x, t, augment=name == "augmented", copies=copies, seed=seed)
            spread[name].append(float((to_numpy(net.predict(inputs)).argmax(1) == labels).mean()))
    return spread


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="real-digits-report", help="folder for sheets and JSON")
    p.add_argument("--copies", type=int, default=None, help="augmented copies (default: library's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1,
                   help="also train with this many seeds from --seed on and print the mean")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if not (REAL_DIGITS / "manifest.tsv").is_file():
        raise SystemExit(f"the real-digits set is not at {REAL_DIGITS}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, t = mnist_digits()
    t0 = time.perf_counter()
    nets = {"plain": train_article_net(x, t, augment=False, seed=args.seed)}
    t1 = time.perf_counter()
    nets["augmented"] = train_article_net(x, t, augment=True, copies=args.copies, seed=args.seed)
    t2 = time.perf_counter()
    results = evaluate(nets, out)
    numbers = {name: read_numbers(net, load_numbers()) for name, net in nets.items()}
    timing = time_preprocessing()
    print(report_table(results))
    for name in ("fastmnist/plain", "fastmnist/augmented"):
        r = results[name]
        print(f"\n{name}: by digit " + ", ".join(f"{d}: {c}/{n}" for d, (c, n) in r["by_digit"].items()))
        print("  by source " + ", ".join(f"{s.split('/')[0]}: {c}/{n}" for s, (c, n) in r["by_source"].items()))
        print("  confusion (rows: truth, columns: guess)")
        for d, line in enumerate(r["confusion"]):
            print(f"    {d}: " + " ".join(f"{v:3d}" for v in line))
    for name, found in numbers.items():
        print(f"\nnumbers, {name} net: " + ", ".join(f"{n['number']} -> {n['read']}" for n in found))
    print(f"\npreprocessing: {timing['photo_4000x3000']:.0f} ms per 4000x3000 photo, "
          f"{timing['canvas_280x280']:.1f} ms per 280x280 canvas")
    print(f"training: plain {t1 - t0:.1f} s, augmented {t2 - t1:.1f} s (augmenting included)")
    summary = {"results": {k: {kk: vv for kk, vv in v.items() if kk != "guess"}
                           for k, v in results.items()},
               "numbers": numbers, "ms_per_image": timing,
               "train_seconds": {"plain": t1 - t0, "augmented": t2 - t1}}
    if args.seeds > 1:
        seeds = range(args.seed, args.seed + args.seeds)
        summary["by_seed"] = seed_spread(x, t, seeds, args.copies)
        for name, accs in summary["by_seed"].items():
            print(f"{name} over seeds {seeds.start}-{seeds.stop - 1}: mean {100 * np.mean(accs):.1f}% "
                  f"(" + ", ".join(f"{100 * a:.1f}" for a in accs) + ")")
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(f"sheets and results.json written to {out}/")
    return summary


if __name__ == "__main__":
    main()

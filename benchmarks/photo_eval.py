"""How well "photos" of real MNIST digits are recovered and classified.

Each test digit becomes a realistic photo: scaled up to a few hundred pixels, dark ink on light
(sometimes coloured) paper or chalk on a board, off centre, with a lighting gradient and noise;
some are stored with an EXIF rotation, some as transparent PNGs. fastmnist's preprocessing and
the article's pipeline (resize, threshold, erode, invert, raw 0/255 values) are then scored on the
same photos with a network trained on other digits. The same digits are also written on ruled
and on squared notebook paper, whose printed lines cross them, and drawn again with round pens
from a 1-pixel canvas pen to a marker three times MNIST's width, and read by fastmnist.

    python benchmarks/photo_eval.py --count 300 [--out DIR] [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

HERE = Path(__file__).resolve().parent
SHARED_MNIST = HERE.parent.parent / "shared" / "data" / "mnist"  # this project's machines
sys.path.insert(0, str(HERE.parent))

from fastmnist import TwoLayerNet, to_numpy, train  # noqa: E402
from fastmnist.datasets import load_split  # noqa: E402
from fastmnist.images import preprocess_image  # noqa: E402
from fastmnist.strokes import skeleton, stroke_width  # noqa: E402

PAPERS = [(246, 244, 238), (250, 250, 250), (250, 235, 150), (190, 220, 245), (255, 210, 220)]
INKS = [(20, 20, 25), (25, 40, 140), (120, 20, 30), (40, 40, 40)]
EXIF_ORIENTATION = 0x0112
# Orientation tag -> the transpose that hides the upright picture in the stored pixels
HIDE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def make_photo(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A synthetic photo of a 28x28 uint8 MNIST digit, and the style it was given."""
    side = int(rng.integers(160, 360))
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC),
                     dtype=np.float32) / 255
    ink = np.clip(ink, 0, 1)
    h, w = int(side * rng.uniform(1.2, 1.8)), int(side * rng.uniform(1.2, 1.8))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    canvas = np.zeros((h, w), dtype=np.float32)
    canvas[top: top + side, left: left + side] = ink
    style = rng.choice(["paper", "paper", "paper", "coloured", "board", "alpha"])
    if style == "alpha":
        rgba = np.zeros((h, w, 4), dtype=np.uint8)
        rgba[..., :3] = INKS[int(rng.integers(len(INKS)))]
        rgba[..., 3] = (canvas * 255).astype(np.uint8)
        return Image.fromarray(rgba, "RGBA"), style
    if style == "board":
        paper, pen = np.array((40, 60, 50)), np.array((235, 235, 225))
    else:
        first, last = (2, len(PAPERS)) if style == "coloured" else (0, 2)
        paper = np.array(PAPERS[int(rng.integers(first, last))])
        pen = np.array(INKS[int(rng.integers(len(INKS)))])
    rgb = paper * (1 - canvas[..., None]) + pen * canvas[..., None]
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    light = 1 + rng.uniform(0.15, 0.4) * ((np.cos(angle) * xx + np.sin(angle) * yy) - 0.5)
    rgb = rgb * light[..., None] + rng.normal(0, 6, rgb.shape)
    photo = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))), str(style)


LINE_INKS = [(150, 180, 230), (165, 165, 170), (120, 160, 225), (230, 150, 150)]


def notebook_photo(digit: np.ndarray, rng: np.random.Generator, squared: bool) -> Image.Image:
    """A synthetic photo of a 28x28 uint8 MNIST digit written on ruled (or ``squared``)
    notebook paper: printed lines 1 to 3 pixels wide, a third to half the digit's height
    apart, crossing or touching the digit; the page turned up to 3 degrees."""
    side = int(rng.integers(120, 260))
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC),
                     dtype=np.float32) / 255
    h, w = int(side * rng.uniform(1.6, 2.5)), int(side * rng.uniform(1.6, 2.5))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    canvas = np.zeros((h, w), np.float32)
    canvas[top: top + side, left: left + side] = np.clip(ink, 0, 1)
    lines = np.zeros((h, w), np.float32)
    spacing, width = side * rng.uniform(0.35, 0.6), int(rng.integers(1, 4))
    for y in np.arange(rng.uniform(0, spacing), h, spacing):
        lines[int(y): int(y) + width] = 1
    if squared:
        for x in np.arange(rng.uniform(0, spacing), w, spacing):
            lines[:, int(x): int(x) + width] = 1
    paper = np.array(PAPERS[int(rng.integers(2))], np.float32)
    line_ink = np.array(LINE_INKS[int(rng.integers(len(LINE_INKS)))], np.float32)
    pen = np.array(INKS[int(rng.integers(len(INKS)))], np.float32)
    rgb = paper * (1 - lines[..., None]) + line_ink * lines[..., None]
    rgb = rgb * (1 - canvas[..., None]) + pen * canvas[..., None] + rng.normal(0, 5, (h, w, 3))
    photo = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    photo = photo.rotate(rng.uniform(-3, 3), Image.Resampling.BILINEAR,
                         fillcolor=tuple(int(v) for v in paper))
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))


PENS = (0.1, 1.0, 2.0, 2.5, 3.0)  # pen widths drawn, as multiples of MNIST's (2.6 of 20 px)


def pen_drawing(digit: np.ndarray, pen: float) -> tuple[np.ndarray, bool]:
    """A 28x28 uint8 MNIST digit drawn again as a canvas drawing: the centre lines of its
    strokes at 10x, inked dark on white with a round pen ``pen`` times MNIST's width (float32
    (H, W) in 0..1), and whether the drawing is fair: its centre lines drawn at the digit's
    own width cover the digit (not so for a loop MNIST's pen filled, whose centre line is a
    stroke), and the new pen leaves its loops open (a fat pen fills a small loop)."""
    mask = np.pad(ndimage.zoom(digit / 255.0, 10, order=1) > 0.5, 80)
    distance = ndimage.distance_transform_edt(~skeleton(mask))
    own = distance <= stroke_width(mask) / 2
    covers = (own & mask).sum() >= 0.8 * max((own | mask).sum(), 1)
    ink = np.clip(pen * 13 + 0.5 - distance, 0, 1)  # MNIST's pen: 2.6 of 20 px, so 13 at 10x
    return (1 - ink).astype(np.float32), bool(covers and holes(own) == holes(ink > 0.5))


def holes(mask: np.ndarray, smallest: int = 30) -> int:
    """How many background regions of at least ``smallest`` pixels ``mask`` encloses."""
    regions, count = ndimage.label(~mask)
    edge = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    sizes = np.bincount(regions.ravel(), minlength=count + 1)
    return int(sum(1 for k in range(1, count + 1) if k not in edge and sizes[k] >= smallest))


def pen_accuracy(images, labels, net, count: int, pens=PENS) -> dict:
    """Accuracy on ``images[:count]`` drawn with each pen of ``pens``, over every drawing and
    over the fair ones (see :func:`pen_drawing`), beside the digits themselves."""
    truth = labels[:count]

    def right(x):
        return to_numpy(net.predict(np.asarray(x, np.float32))).argmax(axis=1) == truth[:len(x)]

    def read(drawing):  # a drawing the pipeline refuses counts as misread
        try:
            return preprocess_image(drawing).reshape(784)
        except ValueError:
            return np.zeros(784, np.float32)

    clean = right(images[:count].reshape(count, 784) / 255.0)
    out = {"count": count, "accuracy_clean_originals": float(clean.mean())}
    for pen in pens:
        drawings = [pen_drawing(images[i], pen) for i in range(count)]
        ok = right([read(d) for d, _ in drawings])
        fair = np.array([kept for _, kept in drawings])
        out[f"pen_x{pen}"] = {"accuracy": float(ok.mean()), "fair": int(fair.sum()),
                              "accuracy_fair": float(ok[fair].mean()),
                              "accuracy_clean_fair": float(clean[fair].mean())}
    return out


def save_photo(photo: Image.Image, path: Path, rng: np.random.Generator) -> Path:
    """Store as PNG (alpha) or JPEG, a third of the JPEGs with an EXIF rotation to undo."""
    if photo.mode == "RGBA":
        path = path.with_suffix(".png")
        photo.save(path)
        return path
    path = path.with_suffix(".jpg")
    orientation = int(rng.choice([1, 1, 3, 6, 8]))
    exif = Image.Exif()
    if orientation != 1:
        photo = photo.transpose(HIDE[orientation])
        exif[EXIF_ORIENTATION] = orientation
    photo.save(path, quality=90, exif=exif)
    return path


def article_preprocess(path, threshold: int = 127) -> np.ndarray:
    """The article's step 8 with Pillow: whole photo to 28x28, gray, threshold, erode, invert.

    Returns 784 values of 0 or 255, unscaled, as the article feeds them to the network.
    """
    img = Image.open(path).convert("RGB").resize((28, 28), Image.Resampling.BILINEAR).convert("L")
    binary = (np.asarray(img) > threshold).astype(np.uint8) * 255
    eroded = np.asarray(Image.fromarray(binary).filter(ImageFilter.MinFilter(3)))
    return np.where(eroded > threshold, 0, 255).astype(np.float32).reshape(784)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 28x28 images (1.0 = same up to brightness)."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def evaluate(images, labels, net, out: Path, count: int, seed: int = 0,
             papers=("ruled", "squared")) -> dict:
    """Photos of ``images[:count]``; similarity and accuracy for both pipelines, and accuracy
    on each notebook paper of ``papers``."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    ours, article, sims, styles, framed = [], [], [], [], []
    t0 = time.perf_counter()
    for i in range(count):
        photo, style = make_photo(images[i], rng)
        path = save_photo(photo, out / f"digit{i:04d}_label{labels[i]}", rng)
        ours.append(preprocess_image(path).reshape(784))
        article.append(article_preprocess(path))
        # against the clean digit read the same way (the pipeline also moves slants)
        framed.append(preprocess_image(images[i]).reshape(784))
        sims.append(similarity(ours[-1], framed[-1]))
        styles.append(style)
    seconds = (time.perf_counter() - t0) / count
    clean = images[:count].reshape(count, 784).astype(np.float32) / 255
    truth = labels[:count]

    def acc(x):
        return float((to_numpy(net.predict(np.asarray(x))).argmax(axis=1) == truth).mean())

    styles = np.array(styles)
    notebook = {}
    for paper in papers:
        photos = [notebook_photo(images[i], rng, paper == "squared") for i in range(count)]
        notebook[paper] = acc([preprocess_image(p).reshape(784) for p in photos])
        photos[0].save(out / f"{paper}-paper-example.jpg", quality=90)
    return {
        "count": count,
        "accuracy_clean_originals": acc(clean),
        "accuracy_fastmnist_preprocessing": acc(ours),
        "accuracy_clean_through_preprocessing": acc(framed),
        "accuracy_article_pipeline": acc(article),
        **{f"accuracy_{paper}_paper": a for paper, a in notebook.items()},
        "similarity_mean": float(np.mean(sims)),
        "similarity_min": float(np.min(sims)),
        "similarity_by_style": {s: float(np.mean(np.array(sims)[styles == s])) for s in sorted(set(styles))},
        "seconds_per_photo_both_pipelines": seconds,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=300, help="photos to make (from digits 8000+)")
    p.add_argument("--iters", type=int, default=10_000, help="training steps on digits 0-7999")
    p.add_argument("--data-dir", default=str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None,
                   help="folder with the MNIST test files (default: ../shared/data/mnist where "
                        "it exists, else fastmnist's usual places and mirrors)")
    p.add_argument("--out", default="photo-eval", help="where the photos are written")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    images, labels = load_split("mnist", "test", data_dir=args.data_dir)
    x = images.reshape(-1, 784).astype(np.float32) / 255
    net = TwoLayerNet(seed=0, device="cpu")
    train(net, x[:8000], labels[:8000], iters=args.iters, seed=0, quiet=True)
    results = evaluate(images[8000:], labels[8000:], net, Path(args.out), args.count)
    results["pens"] = pen_accuracy(images[8000:], labels[8000:], net, args.count)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()

"""A photo or drawing of one digit, turned into a 28x28 image the way MNIST digits were made.

MNIST digits are light strokes on black, scaled so the longer side of the digit is 20 pixels
(aspect ratio kept, anti-aliased), then placed in a 28x28 frame with the centre of mass in the
middle. :func:`preprocess_image` rebuilds that from a real photo: it undoes EXIF rotation,
flattens transparency onto white paper, measures ink as colour distance from the (unevenly lit)
paper, so the polarity and the colours do not matter, and then crops, scales and centres.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

WORK_SIDE = 256  # photos are reduced to about this size first: plenty for a 20-pixel digit
DIGIT_BOX = 20
FRAME = 28


def load_rgb(source) -> np.ndarray:
    """``source`` (a path, a PIL image, or an array) as float32 RGB ``(H, W, 3)`` in 0..1.

    EXIF orientation is applied; transparent pixels become white paper.
    """
    if isinstance(source, np.ndarray):
        a = np.asarray(source, dtype=np.float32)
        if a.size == 0 or a.ndim not in (2, 3):
            raise ValueError(f"an image array must be (H, W) or (H, W, C), got shape {a.shape}")
        if a.max() > 1.0:
            a = a / 255.0
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.shape[2] == 4:
            alpha = a[..., 3:]
            a = a[..., :3] * alpha + (1.0 - alpha)
        return a[..., :3]
    image = source if isinstance(source, Image.Image) else open_image(source)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def open_image(path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path} is not an image Pillow can read ({exc})") from None
    return image


def shrink(rgb: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Downscale (area-averaging) so the longer side is at most ``side``."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    channels = [np.asarray(Image.fromarray(rgb[..., c], mode="F").resize(size, Image.Resampling.BOX))
                for c in range(3)]
    return np.stack(channels, axis=2)


def ink_is_dark(rgb: np.ndarray) -> bool:
    """True for dark ink on light paper: the paper is the majority, so the median lies near it."""
    lum = rgb.mean(axis=2)
    low, mid, high = np.percentile(lum, (1, 50, 99))
    return high - mid < mid - low


def paper_colour(rgb: np.ndarray) -> np.ndarray:
    """The paper's colour at every pixel ``(H, W, 3)``, with the strokes taken out.

    A grey closing (dark ink) or opening (light ink) wider than any stroke replaces strokes by
    the paper around them while following a lighting gradient or shadow across the page.
    """
    h, w = rgb.shape[:2]
    size = (max(3, max(h, w) // 4), max(3, max(h, w) // 4), 1)
    morph = ndimage.grey_closing if ink_is_dark(rgb) else ndimage.grey_opening
    paper = morph(rgb, size=size, mode="nearest")
    return ndimage.uniform_filter(paper, size=(size[0] // 2, size[1] // 2, 1), mode="nearest")


def ink_map(rgb: np.ndarray) -> np.ndarray:
    """How much ink each pixel holds, 0 (paper) .. 1 (full stroke), whatever the colours."""
    distance = np.sqrt(((rgb - paper_colour(rgb)) ** 2).sum(axis=2))
    if distance.max() < 0.05:
        raise ValueError("found no ink: the image looks blank (no digit stands out from the "
                         "background)")
    floor = noise_floor(distance)
    strong = np.percentile(distance[distance > floor], 90) if np.any(distance > floor) else floor
    if strong - floor < 0.05:
        raise ValueError("found no ink: the image looks blank (no digit stands out from the "
                         "background)")
    return np.clip((distance - floor) / (strong - floor), 0.0, 1.0)


def noise_floor(distance: np.ndarray) -> float:
    """A level below which colour differences are paper texture and sensor noise (Otsu / 2)."""
    hist, edges = np.histogram(distance, bins=128)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centres)
    total, grand = weight[-1], mean[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (grand * weight / total - mean) ** 2 / (weight * (total - weight))
    otsu = centres[np.nanargmax(between[:-1])]
    return float(otsu) / 2


def main_strokes(ink: np.ndarray) -> np.ndarray:
    """``ink`` with specks removed: keeps connected blobs holding a real share of the ink."""
    labels, count = ndimage.label(ink > 0.25, structure=np.ones((3, 3)))
    if count == 0:
        raise ValueError("found no ink: the image looks blank")
    mass = ndimage.sum_labels(ink, labels, index=np.arange(1, count + 1))
    keep = np.flatnonzero(mass >= 0.05 * mass.max()) + 1
    near = ndimage.binary_dilation(np.isin(labels, keep), iterations=2)
    return np.where(near, ink, 0.0)


def fit_to_frame(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, scale the longer side to 20 px, centre by mass in 28x28 (float32)."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    h, w = crop.shape
    scale = DIGIT_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    box = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F")
                     .resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC))
    box = np.clip(box, 0.0, 1.0)
    cy, cx = ndimage.center_of_mass(box)
    top = int(np.clip(round(FRAME / 2 - cy), 0, FRAME - box.shape[0]))
    left = int(np.clip(round(FRAME / 2 - cx), 0, FRAME - box.shape[1]))
    frame = np.zeros((FRAME, FRAME), dtype=np.float32)
    frame[top: top + box.shape[0], left: left + box.shape[1]] = box
    return frame


def preprocess_image(source) -> np.ndarray:
    """A photo/drawing of one digit as a 28x28 float32 image in 0..1, white digit on black.

    ``source`` is a path, a PIL image, or an array (grayscale or RGB/RGBA, 0..1 or 0..255).
    Raises ``ValueError`` for unreadable or blank images.
    """
    ink = ink_map(shrink(load_rgb(source)))
    ink = ndimage.median_filter(ink, size=3) if min(ink.shape) >= 64 else ink  # salt noise
    strokes = main_strokes(ink)
    frame = fit_to_frame(strokes)
    peak = frame.max()
    return frame / peak if peak > 0 else frame


def predict_image(source, net, top: int = 3) -> dict:
    """Classify one image with ``net``: ``{"digit", "probabilities" (10 floats), "top", "image"}``.

    ``top`` lists the ``top`` most likely classes as ``(class, probability)`` pairs and
    ``image`` is the 28x28 array the network saw.
    """
    from .backend import to_numpy

    image = preprocess_image(source)
    probs = to_numpy(net.predict(image.reshape(1, -1)))[0].astype(float)
    order = np.argsort(-probs)[:top]
    return {"digit": int(order[0]), "probabilities": probs.tolist(),
            "top": [(int(k), float(probs[k])) for k in order], "image": image}

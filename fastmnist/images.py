"""Reading a photo or drawing of a digit (or of a number) the way MNIST digits were made.

:func:`preprocess_image` turns an image file (a path or its bytes), a PIL image or an array
into a 28x28 float32 digit, white on black: the file is decoded safely and reduced (:func:`load_rgb`), the ink is
found against the paper and the digit picked out (:mod:`fastmnist.ink`), and its strokes are
drawn again at MNIST's size, pen width and position (:mod:`fastmnist.strokes`).
:func:`predict_image` classifies it, and reads a number written in a row digit by digit.
"""
from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .ink import NoDigitError, find_digits
from .strokes import to_mnist_frame

WORK_SIDE = 512  # images are reduced to about this size first: plenty for a 20-pixel digit
DETAIL_SIDE = 2048  # ... and looked at again at up to this size when the digits are small
MIN_SIDE = 160  # ... and small drawings enlarged to at least this, so thin pens stay whole
MAX_PIXELS = 80_000_000  # images larger than this (after JPEG's reduced decoding) are refused

__all__ = ["NoDigitError", "load_rgb", "open_image", "predict_image", "preprocess_image",
           "read_number"]


def image_file(source) -> tuple[str, object]:
    """What to call ``source`` in messages, and what Pillow should open: a path, or the bytes
    of an upload. Raises for a missing or empty file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError("the image data is empty (0 bytes)")
        return "the image data", io.BytesIO(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes)")
    return str(path), path


def too_large(name: str, size: str) -> ValueError:
    return ValueError(f"{name} is too large: {size} (fastmnist reads up to "
                      f"{MAX_PIXELS // 1_000_000} megapixels; scale it down first)")


def open_image(source, max_side: int | None = WORK_SIDE) -> Image.Image:
    """The image in ``source`` (a path, or the bytes of an image file), decoded; JPEGs are
    decoded reduced towards ``max_side``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` with the reason for an
    empty, unreadable or too large one; memory stays bounded whatever the header claims.
    """
    name, fp = image_file(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp)
            if max_side:  # JPEG: decode at 1/2, 1/4 or 1/8 size, as far as reduced() goes
                factor = ceil_div(max(image.size), max_side)
                image.draft(None, tuple(ceil_div(n, factor) for n in image.size))
            w, h = image.size
            if w * h > MAX_PIXELS:
                raise too_large(name, f"{w} x {h} pixels")
            image.load()
    except Image.DecompressionBombError as exc:  # Pillow refuses before we see the size
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise too_large(name, f"{int(pixels[1]) / 1e6:,.0f} megapixels" if pixels
                        else "more pixels than Pillow will decode") from None
    except (OSError, SyntaxError, EOFError) as exc:
        why = "send a PNG, JPEG, WebP, GIF, BMP or TIFF file" if isinstance(fp, io.BytesIO) else exc
        raise ValueError(f"{name} is not an image Pillow can read ({why})") from None
    return image


def as_rgba(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode as float32 RGBA (H, W, 4) in 0..1, EXIF rotation undone."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # deep greys: scale by their range
        grey = np.asarray(image, dtype=np.float32)
        grey = (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)
        return np.dstack([grey, grey, grey, np.ones_like(grey)])
    return np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0


def as_float_rgba(a: np.ndarray) -> np.ndarray:
    """An array (H, W), (H, W, 3) or (H, W, 4), 0..1 or 0..255, as float32 RGBA in 0..1."""
    a = np.asarray(a, dtype=np.float32)
    if a.size == 0 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array must be (H, W) or (H, W, 1|3|4), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("the image array holds NaN or infinite values")
    if a.max() > 1.0:
        a = a / 255.0
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] == 3:
        a = np.dstack([a, np.ones(a.shape[:2], np.float32)])
    return a


def flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """RGB with transparency laid on paper that contrasts with the ink: white under dark
    strokes, black under light ones (a white pen on a transparent canvas stays visible)."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if alpha.min() > 0.98:
        return rgb
    weight = alpha[..., 0]
    ink_lum = float((rgb.mean(axis=2) * weight).sum() / max(weight.sum(), 1e-6))
    paper = 1.0 if ink_lum < 0.5 else 0.0
    return rgb * alpha + paper * (1.0 - alpha)


def fit_size(rgb: np.ndarray, largest: int = WORK_SIDE, smallest: int = MIN_SIDE) -> np.ndarray:
    """``rgb`` resampled so its longer side lies in ``smallest..largest`` (area-averaged down,
    bilinear up)."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    if smallest <= side <= largest:
        return rgb
    scale = (largest if side > largest else smallest) / side
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(rgb[..., c], mode="F").resize(size, resample))
                     for c in range(3)], axis=2)


def work_side(shape: tuple[int, ...]) -> int:
    """The longer side at which an image of ``shape`` (H, W, ...) holds about WORK_SIDE**2
    pixels: a long row of digits keeps the height a square photo would have."""
    h, w = shape[:2]
    return int(np.clip(WORK_SIDE * np.sqrt(max(h, w) / max(min(h, w), 1)), WORK_SIDE, DETAIL_SIDE))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def reduced(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` upright (EXIF orientation applied) and, when larger than ``max_side``, reduced
    by a whole factor, averaging blocks of its 8-bit pixels (far cheaper than resampling it in
    floats): an opaque colour or grey photo to at most ``max_side`` (a 4000-pixel photo to
    2000), other modes (transparency, palettes, deep greys) to at least it."""
    image = ImageOps.exif_transpose(image)
    side = max(image.size)
    if image.mode in ("RGB", "L"):
        factor = ceil_div(side, max_side)
    else:
        factor = side // max_side if side > 2 * max_side else 1
    return image.reduce(factor) if factor > 1 else image


def load_rgb(source, max_side: int | None = None) -> np.ndarray:
    """``source`` (a path, the bytes of an image file, a PIL image, or an array) as float32 RGB

    EXIF orientation is applied and transparency flattened onto contrasting paper. With
    ``max_side``, large images are reduced so their longer side is at most that.
    """
    if isinstance(source, np.ndarray):
        rgba = as_float_rgba(source)
    else:
        image = source if isinstance(source, Image.Image) else open_image(source, max_side)
        rgba = as_rgba(reduced(image, max_side) if max_side else image)
    rgb = flatten_alpha(rgba)
    return fit_size(rgb, max_side, 1) if max_side else rgb


def digit_frames(source, several: bool | None = None) -> list[np.ndarray]:
    """The 28x28 float32 digits found in ``source``, left to right (see :func:`read_number`).

    The ink is looked for at about 512 pixels; digits small in a large photo are then looked
    at again in a crop of the image at up to 4x that detail.
    """
    rgb = load_rgb(source, DETAIL_SIDE)
    work = fit_size(rgb, work_side(rgb.shape))
    masks, (top, bottom, left, right) = find_digits(work, several)
    zoom = max(rgb.shape[:2]) / max(work.shape[:2])
    if zoom > 1.5 and max(bottom - top, right - left) < 0.4 * max(work.shape[:2]):
        margin = 0.25 * max(bottom - top, right - left)
        rows = slice(max(0, int((top - margin) * zoom)), int((bottom + margin) * zoom) + 1)
        cols = slice(max(0, int((left - margin) * zoom)), int((right + margin) * zoom) + 1)
        masks, _ = find_digits(fit_size(rgb[rows, cols]), several)
    return [to_mnist_frame(mask, ink) for mask, ink in masks]


def preprocess_image(source) -> np.ndarray:
    """A photo/drawing of one digit as a 28x28 float32 image in 0..1, white digit on black.

    ``source`` is a path, a PIL image, or an array (grayscale or RGB/RGBA, 0..1 or 0..255).
    Raises ``ValueError`` for unreadable, empty or too large files and :class:`NoDigitError`
    (a ``ValueError``) for images with no digit in them.
    """
    return digit_frames(source, several=False)[0]


def classify(image: np.ndarray, net, top: int, classes=None) -> dict:
    """One 28x28 digit through ``net``: digit, label, probabilities, top-k and the image."""
    from .backend import to_numpy

    probs = to_numpy(net.predict(image.reshape(1, -1)))[0].astype(float)
    names = classes or class_names(net)
    order = np.argsort(-probs)[:top]
    return {"digit": int(order[0]), "label": names[int(order[0])],
            "probabilities": probs.tolist(),
            "top": [(int(k), float(probs[k])) for k in order], "image": image}


def class_names(net) -> list[str]:
    """The model's class names from its metadata, else the digits 0-9."""
    meta = getattr(net, "metadata", {})
    size = net.sizes[2] if hasattr(net, "sizes") else 10
    names = meta.get("classes")
    if names is None and meta.get("dataset"):
        from .datasets import REGISTRY

        known = REGISTRY.get(str(meta["dataset"]).lower())
        names = list(known.classes) if known else None
    if isinstance(names, list) and len(names) == size:
        return [str(n) for n in names]
    return [str(k) for k in range(size)]


def predict_image(source, net, top: int = 3, several: bool | None = None) -> dict:
    """Classify a photo or drawing with ``net``.

    For one digit: ``{"digit", "label", "probabilities" (10 floats), "top" ((class, p) pairs),
    "image" (the 28x28 array the network saw), "number" (the digit as a string), "digits"
    ([the same dict])}``. For a number written in a row (two or more digits side by side;
    ``several=True`` insists, ``False`` reads the one digit nearest the centre), ``"digits"``
    holds one such dict per digit, left to right, ``"number"`` joins them, ``"image"`` is the
    digits' 28x28 images side by side, and ``"digit"``, ``"label"``, ``"probabilities"`` and
    ``"top"`` are None.
    """
    frames = digit_frames(source, several)
    names = class_names(net)
    digits = [classify(f, net, top, names) for f in frames]
    if len(digits) == 1:
        return {**digits[0], "number": digits[0]["label"], "digits": [dict(digits[0])]}
    return {"digit": None, "label": None, "probabilities": None, "top": None,
            "image": np.hstack(frames), "number": "".join(d["label"] for d in digits),
            "digits": digits}


def read_number(source, net, top: int = 3) -> dict:
    """Read every digit written in a row in ``source``: :func:`predict_image` with
    ``several=True``, so even one digit comes back as a one-digit number."""
    return predict_image(source, net, top=top, several=True)

"""Training-time augmentation: varied copies of MNIST-style digits (off unless asked for).

Real handwriting differs from MNIST's by slant, size, wobble and pen, and a photo read by
:func:`fastmnist.preprocess_image` comes out straightened to MNIST's mean slant, fitted to a
20-pixel box, centred by mass and, when its pen was far from MNIST's, redrawn with a round pen.
The training digits themselves and most copies are straightened the same way, the copies
with a small random rotation, scale and shift (a 50-unit net then spends its capacity on
shapes, not slants); the other copies come from the digit as written with a wider rotation,
shear, scale and shift. All often get an elastic distortion (Simard et al., 2003: a random
displacement field smoothed by a Gaussian), and sometimes a pen that is thicker, thinner or
redrawn the way :mod:`fastmnist.strokes` redraws photos.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .strokes import PEN, fit_frame, redraw, straightened_frame, stroke_width

COPIES = 3  # default copies per digit: see README (real-handwriting accuracy by copies)
# chance per copy; the curled 9s' hook only on straightened copies (see augmented_training_set)
STYLES = {"flag": 0.55, "foot": 0.35, "crossbar": 0.35, "slash": 0.15, "hook": 0.75}
STRAIGHT = {"rotate": 5.0, "shear": 0.0, "scale": 0.05, "shift": 0.75}  # copies of straightened digits
OWN_SLANT = {"rotate": 8.0, "shear": 0.2, "scale": 0.1, "shift": 1.2}  # copies at the digit's own slant
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def affine_grid(rng: np.random.Generator, *, rotate: float, shear: float, scale: float,
                shift: float) -> np.ndarray:
    """Source coordinates (2, 28, 28) of a random rotation, shear, scale and shift about the
    centre."""
    angle = np.deg2rad(rng.uniform(-rotate, rotate))
    slant = rng.uniform(-shear, shear)
    zoom = np.exp(rng.uniform(-scale, scale))
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) @ np.array([[1.0, 0.0], [slant, 1.0]]) / zoom
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64) - 13.5
    coords = np.tensordot(matrix, np.stack([yy, xx]), axes=1)
    return coords + 13.5 + rng.uniform(-shift, shift, (2, 1, 1))


def elastic_field(rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """A smooth random displacement field (2, 28, 28): uniform noise, Gaussian-blurred, scaled
    by ``alpha`` pixels."""
    noise = rng.uniform(-1, 1, (2, 28, 28))
    return alpha * np.stack([ndimage.gaussian_filter(n, sigma, mode="constant") for n in noise])


def new_pen(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The digit with another pen: redrawn at a random width, or grown or shrunk a step."""
    kind = rng.random()
    if kind < 0.15:
        mask = ndimage.zoom(image, 2, order=1) > 0.45
        if mask.sum() < 8:
            return image
        pen = 2 * PEN * rng.uniform(0.75, 1.3)
        drawn = redraw(mask, pen)
        pad = (drawn.shape[0] - 56) // 2
        drawn = drawn[pad: pad + 56, pad: pad + 56]
        return drawn.reshape(28, 2, 28, 2).mean(axis=(1, 3))
    if kind < 0.25:
        return ndimage.grey_dilation(image, footprint=CROSS)
    if kind < 0.3:
        return ndimage.grey_erosion(image, footprint=CROSS)
    return image


def segment(shape: tuple[int, int], a, b, width: float) -> np.ndarray:
    """A round-ended, anti-aliased line ``width`` pixels wide from ``a`` to ``b`` (y, x) on an
    image of ``shape``: float32 ink 0..1."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    d = b - a
    along = np.clip(((yy - a[0]) * d[0] + (xx - a[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
    dist = np.hypot(yy - (a[0] + along * d[0]), xx - (a[1] + along * d[1]))
    return np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)


def ink_ends(mask: np.ndarray):
    """Top and bottom points (y, x) of a digit's ink, its height, and the x of its ink on row
    ``y``, or on the inked row nearest it where a broken stroke leaves ``y`` empty (a function)."""
    rows = np.flatnonzero(mask.any(axis=1))
    top, bottom = rows[0], rows[-1]

    def x_at(y: float) -> float:
        inked = rows[np.abs(rows - y).argmin()]
        return float(np.flatnonzero(mask[inked]).mean())

    return (top, x_at(top)), (bottom, x_at(bottom)), bottom - top + 1, x_at


def written_style(image: np.ndarray, label: int, rng: np.random.Generator,
                  styles: dict | None = None) -> np.ndarray:
    """The digit as many people outside North America write it, MNIST's origin: some 1s with
    a flag and a foot, some 7s crossed, some 0s slashed, some 9s with a tail curled to the
    left. Other digits come back unchanged.

    The strokes are added at 4x with the digit's own pen and the result is framed as MNIST
    frames digits (20-pixel box, centre of mass in the middle). ``styles`` holds each style's
    chance (:data:`STYLES` by default).
    """
    chance = STYLES if styles is None else styles
    if label not in (0, 1, 7, 9):
        return image
    big = ndimage.zoom(image, 4, order=1)
    mask = big > 0.5
    if mask.sum() < 40:
        return image
    pen = float(np.clip(stroke_width(mask), 4.0, 14.0))
    (ty, tx), (by, bx), height, x_at = ink_ends(mask)
    strokes = []
    if label == 1:
        if rng.random() < chance["flag"]:  # the flag: down and to the left from the top
            angle, length = np.deg2rad(rng.uniform(15, 60)), rng.uniform(0.2, 0.45) * height
            strokes.append(((ty, tx), (ty + length * np.sin(angle), tx - length * np.cos(angle))))
        if rng.random() < chance["foot"]:  # the foot: a base centred under the stem
            half = rng.uniform(0.15, 0.35) * height
            strokes.append(((by, bx - half), (by, bx + half)))
    elif label == 7 and rng.random() < chance["crossbar"]:  # the crossbar, across the stem at mid height
        y = ty + rng.uniform(0.45, 0.6) * height
        x, half = x_at(y), rng.uniform(0.15, 0.3) * height
        strokes.append(((y, x - half), (y + rng.uniform(-0.05, 0.05) * height, x + half)))
    elif label == 0 and rng.random() < chance["slash"]:  # the slash, corner to corner through the oval
        cols = np.flatnonzero(mask.any(axis=0))
        strokes.append(((by + 0.05 * height, cols[0]), (ty - 0.05 * height, cols[-1])))
    elif label == 9 and rng.random() < chance["hook"]:  # the tail bent left and up, under the stem
        drop, reach = rng.uniform(0.0, 0.08) * height, rng.uniform(0.2, 0.38) * height
        bend = (by + drop, bx - 0.55 * reach)
        strokes.append(((by - 0.04 * height, bx), bend))
        strokes.append((bend, (by - rng.uniform(0.05, 0.2) * height, bx - reach)))
    if not strokes:
        return image
    pad = int(0.5 * height)
    canvas = np.pad(big, pad)
    for a, b in strokes:
        line = segment(canvas.shape, np.add(a, pad), np.add(b, pad), pen)
        canvas = np.maximum(canvas, line)
    return fit_frame(canvas, level=0.05)


def jitter(image: np.ndarray, rng: np.random.Generator, *, rotate: float = 8.0,
           shear: float = 0.2, scale: float = 0.1, shift: float = 1.2, alpha: float = 15.0,
           sigma: float = 4.0, elastic: float = 0.5) -> np.ndarray:
    """One random variant (28, 28) float32 in 0..1 of a 28x28 digit ``image`` in 0..1.

    Rotation up to ``rotate`` degrees, shear up to ``shear``, scale up to exp(±``scale``),
    shift up to ``shift`` pixels, and with probability ``elastic`` an elastic distortion of
    strength ``alpha`` and smoothness ``sigma`` pixels; then, for some copies, a new pen. The
    copy is not fitted back into the 20-pixel box: the spread in size and place it keeps made
    the net read real handwriting better (README, "How well it reads real handwriting").
    """
    coords = affine_grid(rng, rotate=rotate, shear=shear, scale=scale, shift=shift)
    if rng.random() < elastic:
        coords = coords + elastic_field(rng, alpha, sigma)
    out = ndimage.map_coordinates(image, coords, order=1, mode="constant")
    out = new_pen(np.clip(out, 0.0, 1.0), rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def in_range(rows: np.ndarray, scale: float) -> np.ndarray:
    """Rows in 0..1 brought back to the training set's range: 0..``scale``, rounded to whole
    pixel values when that is 255."""
    rows = rows * scale
    return np.round(rows) if scale != 1.0 else rows


def augmented_training_set(x: np.ndarray, t: np.ndarray, copies: int = COPIES, seed=None,
                           writing_styles: bool = True, straighten: bool = True):
    """``x`` (N, 784) 0..1 (float, or uint8 0..255) and labels ``t`` (N,) or one-hot, with
    ``copies`` varied copies of every digit appended: ``(x_aug ((copies+1)N, 784) in x's dtype
    range, t_aug)``.

    ``straighten`` brings the digits to MNIST's mean slant, as :func:`fastmnist.preprocess_image`
    does with photos: the digits themselves and two copies in three, these varied a little
    (:data:`STRAIGHT`); every third copy keeps the digit's own slant and is varied more
    (:data:`OWN_SLANT`), so the net still reads MNIST's own digits as they are (with fewer than
    three copies, the digits themselves stay as written for that). ``writing_styles`` adds to
    the copies the flagged 1s, crossed 7s, slashed 0s and curled 9s MNIST lacks (see
    :func:`written_style`); the curled 9s only to straightened copies, so that the own-slant
    rows still show MNIST's 9s as written. Both assume handwritten digits: pass False for
    other datasets.
    """
    if not isinstance(copies, (int, np.integer)) or copies < 0:
        raise ValueError(f"copies must be a whole number >= 0, got {copies!r}")
    rng = np.random.default_rng(seed)
    x = np.asarray(x)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    images = x.reshape(-1, 28, 28).astype(np.float32) / scale
    straight = np.stack([straightened_frame(im) for im in images]) if straighten and copies else None
    labels = np.asarray(t).argmax(axis=1) if np.ndim(t) == 2 else np.asarray(t)
    out = np.empty(((copies + 1) * len(images), 784), dtype=x.dtype)
    if straight is None or copies < 3:  # the digits as written are the own-slant rows
        out[:len(images)] = x.reshape(len(images), 784)
    else:
        out[:len(images)] = in_range(straight.reshape(len(images), 784), scale)
    for k in range(1, copies + 1):
        own_slant = straight is None or k % 3 == 0
        source, spread = (images, OWN_SLANT) if own_slant else (straight, STRAIGHT)
        styles = {**STYLES, "hook": 0.0} if own_slant else STYLES
        for i, image in enumerate(source):
            if writing_styles:
                image = written_style(image, int(labels[i]), rng, styles)
            out[k * len(images) + i] = in_range(jitter(image, rng, **spread).reshape(784), scale)
    return out, np.concatenate([t] * (copies + 1))

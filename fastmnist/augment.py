"""Training-time augmentation: varied copies of MNIST-style digits (off unless asked for).

Real handwriting differs from MNIST's by slant, size, wobble and pen, and a photo read by
:func:`fastmnist.preprocess_image` comes out fitted to a 20-pixel box, centred by mass and, when
its pen was far from MNIST's, redrawn with a round pen. Each copy therefore gets a random
rotation, shear, scale and shift, often an elastic distortion (Simard et al., 2003: a random
displacement field smoothed by a Gaussian), and sometimes a pen that is thicker, thinner or
redrawn the way :mod:`fastmnist.strokes` redraws photos.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .strokes import PEN, redraw

COPIES = 3  # default copies per digit: see README (real-handwriting accuracy by copies)
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


def jitter(image: np.ndarray, rng: np.random.Generator, *, rotate: float = 10.0,
           shear: float = 0.25, scale: float = 0.12, shift: float = 1.5, alpha: float = 15.0,
           sigma: float = 4.0, elastic: float = 0.5) -> np.ndarray:
    """One random variant (28, 28) float32 in 0..1 of a 28x28 digit ``image`` in 0..1.

    Rotation up to ``rotate`` degrees, shear up to ``shear``, scale up to exp(±``scale``),
    shift up to ``shift`` pixels, and with probability ``elastic`` an elastic distortion of
    strength ``alpha`` and smoothness ``sigma`` pixels; then, for some copies, a new pen. The
    copy is not fitted back into the 20-pixel box: the spread in size and place it keeps made
    the net read real handwriting better (README, "Real handwriting").
    """
    coords = affine_grid(rng, rotate=rotate, shear=shear, scale=scale, shift=shift)
    if rng.random() < elastic:
        coords = coords + elastic_field(rng, alpha, sigma)
    out = ndimage.map_coordinates(image, coords, order=1, mode="constant")
    out = new_pen(np.clip(out, 0.0, 1.0), rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def augmented_training_set(x: np.ndarray, t: np.ndarray, copies: int = COPIES, seed=None):
    """``x`` (N, 784) 0..1 (float, or uint8 0..255) and labels ``t`` (N,) or one-hot, with
    ``copies`` varied copies of every digit appended: ``(x_aug ((copies+1)N, 784) in x's dtype
    range, t_aug)``."""
    if not isinstance(copies, (int, np.integer)) or copies < 0:
        raise ValueError(f"copies must be a whole number >= 0, got {copies!r}")
    rng = np.random.default_rng(seed)
    x = np.asarray(x)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    images = x.reshape(-1, 28, 28)
    extra = np.empty((copies * len(images), 784), dtype=x.dtype)
    for k in range(copies):
        for i, image in enumerate(images):
            out = jitter(image.astype(np.float32) / scale, rng).reshape(784) * scale
            extra[k * len(images) + i] = np.round(out) if scale != 1.0 else out
    return np.concatenate([x.reshape(len(images), 784), extra]), np.concatenate([t] * (copies + 1))

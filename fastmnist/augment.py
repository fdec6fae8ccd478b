"""Training-time augmentation: jittered copies of MNIST-style digits (off unless asked for).

Real handwriting differs from MNIST by small shifts, slants, sizes and pen widths; training on
copies varied in those ways makes the network less fussy about them.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def jitter(image: np.ndarray, rng: np.random.Generator, *, shift: float = 2.0,
           rotate: float = 12.0, scale: float = 0.1, stroke: float = 0.3) -> np.ndarray:
    """One random variant of a 28x28 float image in 0..1: shifted up to ``shift`` pixels,
    rotated up to ``rotate`` degrees, scaled by up to ``scale``, and with probability ``stroke``
    its pen made one step thicker or thinner."""
    angle = np.deg2rad(rng.uniform(-rotate, rotate))
    zoom = rng.uniform(1 - scale, 1 + scale)
    c, s = np.cos(angle) / zoom, np.sin(angle) / zoom
    matrix = np.array([[c, -s], [s, c]])
    centre = np.array([13.5, 13.5])
    offset = centre - matrix @ (centre + rng.uniform(-shift, shift, 2))
    out = ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="constant")
    if rng.random() < stroke:
        morph = ndimage.grey_dilation if rng.random() < 0.5 else ndimage.grey_erosion
        out = morph(out, footprint=np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool))
    return np.clip(out, 0.0, 1.0)


def augmented_training_set(x: np.ndarray, t: np.ndarray, copies: int = 1, seed=None):
    """``x`` (N, 784) float32 0..1 and labels ``t`` with ``copies`` jittered variants appended."""
    rng = np.random.default_rng(seed)
    images = x.reshape(-1, 28, 28)
    extra = np.empty((copies * len(images), 784), dtype=x.dtype)
    for k in range(copies):
        for i, image in enumerate(images):
            extra[k * len(images) + i] = jitter(image, rng).reshape(784)
    return np.concatenate([x, extra]), np.concatenate([t] * (copies + 1))

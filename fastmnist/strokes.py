"""A cropped digit mask drawn again the way MNIST digits look: pen width, size and position.

MNIST digits were scaled so their longer side is 20 pixels (anti-aliased) and centred by mass
in a 28x28 frame; their strokes are about 2.6 pixels wide (the median over the test set, as
area over skeleton length). A ballpoint photo or a 1-pixel canvas pen comes out far thinner
after that scaling, so strokes thinner than MNIST's are redrawn: the mask is thinned to its
skeleton and inked again with a round pen of MNIST's width. A marker drawn thicker than 99% of
MNIST's digits is brought back to MNIST's pen too: redrawn from the skeleton and eroded at its
edges, which keeps loops that a skeleton loses where the ink filled them. Thickness is the
pen's width along most of the skeleton (:func:`stroke_thickness`), so MNIST's own blobs, a 6
or a 9 whose small loop the pen filled, stay as written. On MNIST digits drawn again with a
marker 2.5x MNIST's pen, this took the reading from 0.71 to 0.89 (0.98 as written).

Real handwriting also leans less than MNIST's, so a digit's slant is moved most of the way to
MNIST's mean slant before it is framed (:func:`straightened`).
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

DIGIT_BOX = 20  # longer side of the digit in the frame
FRAME = 28
PEN = 2.6  # MNIST stroke width in frame pixels
THIN = 0.75  # strokes under this part of PEN wide (area over skeleton length) are redrawn
THICK = 1.6  # ... and over this many PENs thick (MNIST's 99th percentile) are made thinner
MNIST_SLANT = -0.094  # MNIST's mean slant: dx/dy of its strokes' moments (x right, y down)
STRAIGHTEN = 1.0  # a digit's slant is moved this part of the way to MNIST_SLANT
SUPERSAMPLE = 4  # strokes are drawn at 4x and averaged down, which anti-aliases them


def resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``a`` (float32 2-D) resampled to ``shape`` (rows, cols): area-averaged when shrinking."""
    h, w = shape
    resample = Image.Resampling.BOX if h <= a.shape[0] else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((w, h), resample))


def skeleton(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    return skeletonize(mask)


def stroke_width(mask: np.ndarray, bones: np.ndarray | None = None) -> float:
    """Mean pen width of a boolean mask in its pixels: ink area over skeleton length
    (``bones``: the mask's skeleton, where already at hand)."""
    length = int((skeleton(mask) if bones is None else bones).sum())
    return float(mask.sum()) / max(length, 1)


def stroke_thickness(mask: np.ndarray, bones: np.ndarray | None = None) -> float:
    """The pen's width along most of a boolean mask's strokes, in its pixels: the median over
    the skeleton of twice the distance to the background, less a pixel (a bar 13 pixels wide
    measures 13). Unlike :func:`stroke_width`, a loop filled with ink does not count, as it
    covers only a short piece of the skeleton."""
    bones = skeleton(mask) if bones is None else bones
    if not bones.any():
        return 0.0
    inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return float(2 * np.median(inside[bones]) - 1)


def crop(a: np.ndarray, level: float = 0.0) -> np.ndarray:
    rows, cols = np.flatnonzero((a > level).any(axis=1)), np.flatnonzero((a > level).any(axis=0))
    return a[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]


def redraw(mask: np.ndarray, width: float, bones: np.ndarray | None = None) -> np.ndarray:
    """The skeleton of ``mask`` (``bones``, where already at hand) inked with a round,
    anti-aliased pen ``width`` pixels wide."""
    radius = width / 2
    pad = int(np.ceil(radius)) + 1
    bones = np.pad(skeleton(mask) if bones is None else bones, pad)
    distance = ndimage.distance_transform_edt(~bones)
    return np.clip(radius + 0.5 - distance, 0.0, 1.0).astype(np.float32)


def thinned(mask: np.ndarray, depth: float, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` (bool) with ``depth`` pixels taken off every edge, anti-aliased, centred in a
    zero frame of ``shape``: a fat stroke made thinner without losing the shape a skeleton
    loses where the ink filled a loop."""
    inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ink = np.clip(inside - depth + 0.5, 0.0, 1.0).astype(np.float32)
    top, left = (shape[0] - mask.shape[0]) // 2, (shape[1] - mask.shape[1]) // 2
    out = np.zeros(shape, np.float32)
    out[top: top + mask.shape[0], left: left + mask.shape[1]] = ink
    return out


def normalised_strokes(mask: np.ndarray, ink: np.ndarray | None = None) -> np.ndarray:
    """A cropped digit as float ink at 4x the final size with MNIST's pen width.

    ``mask`` (bool) says where the strokes are and ``ink`` (float 0..1, same shape) how dark;
    strokes already about MNIST's width keep their grey levels, others are redrawn.
    """
    h, w = mask.shape
    side = DIGIT_BOX * SUPERSAMPLE
    scale = side / max(h, w)
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    area = resize(mask.astype(np.float32), shape)
    big = area > 0.5 if (area > 0.5).any() else area > 0
    pen = PEN * SUPERSAMPLE
    bones = skeleton(big)
    thin, thickness = stroke_width(big, bones) < THIN * pen, stroke_thickness(big, bones)
    thick = thickness > THICK * pen
    if not (thin or thick):
        return np.clip(resize(ink, shape), 0, 1) if ink is not None else big.astype(np.float32)
    # Redrawing widens the box by the pen, so pick the pen that is PEN wide after rescaling.
    rel = PEN / DIGIT_BOX
    drawn = redraw(big, rel * side / (1 - rel), bones)
    if thick:
        drawn = np.maximum(drawn, thinned(big, (thickness - pen) / 2, drawn.shape))
    return drawn


def fit_frame(ink: np.ndarray, level: float = 0.05) -> np.ndarray:
    """Float ink (H, W) cropped at ``level``, scaled so its longer side is 20 pixels and placed
    in a 28x28 frame with its centre of mass in the middle: float32, peak 1."""
    ink = crop(ink, level)
    h, w = ink.shape
    scale = DIGIT_BOX / max(h, w)
    box = np.clip(resize(ink, (max(1, round(h * scale)), max(1, round(w * scale)))), 0, 1)
    cy, cx = ndimage.center_of_mass(box)
    top = int(np.clip(round(FRAME / 2 - cy), 0, FRAME - box.shape[0]))
    left = int(np.clip(round(FRAME / 2 - cx), 0, FRAME - box.shape[1]))
    frame = np.zeros((FRAME, FRAME), dtype=np.float32)
    frame[top: top + box.shape[0], left: left + box.shape[1]] = box
    peak = frame.max()
    return frame / peak if peak > 0 else frame


def slant(ink: np.ndarray) -> float:
    """How far the ink leans: the x shift per row down of its second moments, mu11 / mu02
    (negative when the top leans right, as most handwriting does)."""
    yy, xx = np.mgrid[0:ink.shape[0], 0:ink.shape[1]]
    mass = ink.sum()
    if mass <= 0:
        return 0.0
    dy, dx = yy - (yy * ink).sum() / mass, xx - (xx * ink).sum() / mass
    var = float((dy * dy * ink).sum())
    return float((dx * dy * ink).sum()) / var if var > 0 else 0.0


def straightened(ink: np.ndarray, lean: float) -> np.ndarray:
    """``ink`` (H, W) sheared so its slant ``lean`` (see :func:`slant`) moves STRAIGHTEN of
    the way to MNIST's mean.

    Handwriting leans every way (the development set's mean slant is +0.03, MNIST's -0.09);
    bringing every digit to one slant takes that variation away from what the network must
    learn. :func:`fastmnist.augment.augmented_training_set` straightens its training digits
    the same way (:func:`straightened_frame`).
    """
    shift = STRAIGHTEN * (lean - MNIST_SLANT)
    h, w = ink.shape
    pad = int(np.ceil(abs(shift) * h / 2)) + 1
    wide = np.pad(ink, ((0, 0), (pad, pad)))
    centre = (h - 1) / 2
    # output (y, x) takes the ink at (y, x + shift (y - centre))
    return ndimage.affine_transform(wide, np.array([[1.0, 0.0], [shift, 1.0]]),
                                    offset=(0.0, -shift * centre), order=1)


def straightened_frame(frame: np.ndarray) -> np.ndarray:
    """A 28x28 digit (float 0..1) at MNIST's mean slant, framed again as MNIST frames digits:
    float32, peak 1. A blank frame comes back as it is."""
    if frame.max() <= 0.05:
        return frame.astype(np.float32)
    return fit_frame(straightened(frame, slant(frame)), level=0.05)


def to_mnist_frame(mask: np.ndarray, ink: np.ndarray | None = None) -> np.ndarray:
    """A cropped digit, ``mask`` (H, W) bool and optionally its grey ``ink``, as a 28x28
    float32 MNIST digit (0..1, peak 1): MNIST's pen width, a slant nearer MNIST's, and its
    size and place in the frame."""
    strokes = normalised_strokes(mask, ink)
    lean = slant(fit_frame(strokes, level=0.05))  # measured as the network would see it
    return fit_frame(straightened(strokes, lean), level=0.05)

"""Ruled and squared paper: the printed lines taken out of an ink mask, the handwriting kept.

A notebook's lines are found as long straight runs of ink, horizontal or vertical within a few
degrees (a photo is rarely square to the page). A run is only taken for a printed line when it
crosses the whole picture and reaches past the handwriting on both ends, and only when at
least two such lines reach well past it: a page has several lines, a digit at most one long
straight stroke, so a 1's stem, a 7's bar, a 5's cap or a 2's base stay even in a tight crop.
Where a pen stroke crosses a line or runs along it, the pixels under the stroke stay ink. A
number written along a line is split into digits as on blank paper.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

LINE_SPAN = 0.5  # a printed line runs across at least half the picture
SLOPES_DEG = np.arange(-5.0, 5.01, 0.2)  # the tilts of a page looked at
GAP = 5  # breaks up to this many pixels along a faint line are bridged
EDGE = 0.03  # a printed line runs to within this part of the picture's edges on both ends
REACH = 0.1  # ... and reaches this part of the handwriting's height past it on both ends


def run_spans(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of ``mask`` (H, W) bool, the first and one-past-last column of the
    horizontal run of True pixels it lies in: two int32 (H, W), 0 off the mask."""
    h, w = mask.shape
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1).ravel()
    first, stop = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = stop - first
    starts, ends = np.zeros((h, w), np.int32), np.zeros((h, w), np.int32)
    starts[mask] = np.repeat(first % (w + 1), lengths)
    ends[mask] = np.repeat(stop % (w + 1), lengths)
    return starts, ends


def run_lengths(mask: np.ndarray) -> np.ndarray:
    """For each pixel of ``mask`` (H, W) bool, the length of the horizontal run of True
    pixels it lies in (0 off the mask): int32 (H, W)."""
    starts, ends = run_spans(mask)
    return ends - starts


def sheared(a: np.ndarray, slope: float) -> tuple[np.ndarray, np.ndarray]:
    """``a`` (H, W) bool with column x moved up by ``slope * x`` pixels, so a line of that
    slope lies level (H', W), and the row of ``a`` each pixel came from (-1 where none did)."""
    h, w = a.shape
    shift = np.round(slope * (np.arange(w) - w / 2)).astype(int)
    pad = int(np.abs(shift).max())
    rows = np.arange(-pad, h + pad)[:, None] + shift[None, :]
    inside = (rows >= 0) & (rows < h)
    src = np.where(inside, rows, -1)
    out = inside & a[np.clip(rows, 0, h - 1), np.arange(w)[None, :]]
    return out, src


def page_slope(mask: np.ndarray) -> float:
    """The slope (dy/dx) within +-5 degrees along which the rows of ``mask`` (H, W) bool hold
    their ink most unevenly: where printed lines lie level, their rows are full and the rows
    between them empty (a projection profile, as in document deskewing)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    x = xs - mask.shape[1] / 2
    best, best_score = 0.0, -1.0
    for slope in np.tan(np.deg2rad(SLOPES_DEG)):
        rows = np.round(ys - slope * x).astype(np.int64)
        profile = np.bincount(rows - rows.min())
        score = float(profile @ profile)
        if score > best_score:
            best, best_score = float(slope), score
    return best


def long_level_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """Pixels of ``mask`` (H, W) bool on a straight, nearly horizontal run at least ``length``
    long, small breaks along it and one-pixel steps across it bridged: bool (H, W)."""
    level, src = sheared(mask, page_slope(mask))
    bridged = ndimage.binary_dilation(level, structure=np.ones((3, 1), bool))
    bridged = ndimage.binary_closing(bridged, structure=np.ones((1, GAP), bool))
    on_run = (run_lengths(bridged) >= length) & level
    ys, xs = np.nonzero(on_run)
    found = np.zeros_like(mask)
    found[src[ys, xs], xs] = True  # shearing moves pixels along their column
    return found


def box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (bottom, right exclusive) of the True pixels, or None."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def writing_box(rest: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box of the handwriting left once lines are out: pieces of at least a tenth of the
    largest piece's area, so crumbs of line do not widen it."""
    labels, count = ndimage.label(rest, structure=np.ones((3, 3), bool))
    if count == 0:
        return None
    areas = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(areas >= 0.1 * areas.max()) + 1
    return box(np.isin(labels, keep))


def printed(candidates: np.ndarray, writing: tuple[int, int, int, int], reach: float):
    """Which nearly horizontal ``candidates`` (H, W) bool may be printed lines beside the
    handwriting's box ``writing``: they run from edge to edge of the picture and reach past
    the writing on both ends. Returns ``(clear, likely)``: how many lines reach ``reach``
    pixels past the writing, and the pixels (H, W) bool of those and of the lines that reach a
    little past it where the writing comes close to the picture's edge."""
    top, bottom, left, right = writing
    w = candidates.shape[1]
    edge = EDGE * w
    near = max(2.0, reach / 4)
    labels, _ = ndimage.label(candidates, structure=np.ones((3, 3), bool))
    clear, likely = [], []
    for k, (_, cols) in enumerate(ndimage.find_objects(labels), start=1):
        if not (cols.start <= edge and cols.stop >= w - edge):
            continue
        before, after = left - cols.start, cols.stop - right
        if before >= reach and after >= reach:
            clear.append(k)
        if (before >= min(reach, max(near, left - edge))
                and after >= min(reach, max(near, w - edge - right))):
            likely.append(k)
    return len(clear), np.isin(labels, likely)


def under_strokes(lines: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """The pixels of horizontal ``lines`` (H, W) bool under a pen stroke of ``ink``: one that
    crosses the line (the ink runs on two pixels above it and two below) or one that lies
    along it (the ink there is three times as thick as the line)."""
    line_top, line_bottom = (a.T for a in run_spans(lines.T))
    ink_top, ink_bottom = (a.T for a in run_spans(ink.T))
    crossing = (ink_top <= line_top - 2) & (ink_bottom >= line_bottom + 2)
    along = ink_bottom - ink_top >= 3 * (line_bottom - line_top)
    return lines & (crossing | along)


def level_lines(faint: np.ndarray) -> np.ndarray:
    """Pixels of ``faint`` (H, W) bool on straight, nearly horizontal runs across at least
    half of it; only looked for when ink meets both its left and right edges."""
    h, w = faint.shape
    edge = max(1, int(EDGE * w))
    if not (faint[:, :edge].any() and faint[:, -edge:].any()):
        return np.zeros_like(faint)
    return long_level_runs(faint, max(int(LINE_SPAN * w), 8))


def ruled_lines(mask: np.ndarray, faint: np.ndarray) -> np.ndarray:
    """The pixels of printed lines, horizontal and vertical (ruled or squared paper), beside
    the handwriting in the ink ``mask`` (H, W) bool, less where the handwriting crosses them:
    bool (H, W), all False when there are none. Lines are traced in ``faint`` (H, W) bool,
    the ink at a lower threshold, where a light line stays whole even where the mask holds
    only the piece of it beside a stroke."""
    level, upright = level_lines(faint), level_lines(faint.T).T
    if not (level.any() or upright.any()):
        return level
    writing = writing_box(mask & ~level & ~upright)
    if writing is None:  # nothing but long strokes: a tight crop of a digit, not a page
        return np.zeros_like(mask)
    top, bottom, left, right = writing
    reach = REACH * (bottom - top)  # the writing's height: a digit's size, or a number's
    level_clear, level = printed(level, writing, reach)
    upright_clear, upright = printed(upright.T, (left, right, top, bottom), reach)
    upright = upright.T
    if level_clear + upright_clear < 2:
        return np.zeros_like(mask)  # one straight stroke is a digit's; paper has several lines
    level &= ~under_strokes(level, mask & ~upright)
    upright &= ~under_strokes(upright.T, (mask & ~level).T).T
    return level | upright


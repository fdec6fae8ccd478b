"""Finding the handwriting in a photo or drawing: which pixels are ink, and which ink is a digit.

Ink is measured as contrast against the paper around it, so lighting gradients, shadows and
coloured paper cancel out: the paper is estimated locally by a grey closing wider than any
stroke, and each pixel's contrast is its relative drop below that paper (Weber contrast, the
strongest colour channel). Light strokes on a dark board are handled by inverting first. The
contrast is thresholded with hysteresis between levels set by Otsu's method and by the image's
own noise, so faint pen strokes stay whole while paper grain and JPEG noise stay out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from .lines import ruled_lines
from .strokes import stroke_width

MIN_CONTRAST = 0.12  # weakest stroke taken for ink: 12% darker than the paper around it
NOISE_SIGMAS = 6.0
SMOOTH = 0.5
CRISP = 0.85  # tones this far apart (Otsu's share of the variance) are ink and paper
PATCH = 0.5  # a thick piece at the edge filling this share of its box may be a shadow...
SOLID = 0.7  # ... and one filling this share is one even when nothing else is left
BLANK = "the image looks blank (nothing stands out from the background)"
TWO_TONES = 0.7  # smoothed tones split this cleanly (noise: 0.64) may be ink and paper


class NoDigitError(ValueError):
    """The image holds no ink that could be a digit (blank, noise, or a photo of nothing)."""


def no_digit(why: str) -> NoDigitError:
    return NoDigitError(f"found no digit: {why}")


class Tone(NamedTuple):
    """Which tone the ink is: ``dark`` on light paper or light on dark; ``bold``: it covers over
    a third of the picture (a crop tight round the digit); ``sure``: the other tone is clearly
    the paper's (it holds most of the picture, or the picture is not two tones at all)."""

    dark: bool
    bold: bool
    sure: bool


def ink_tone(rgb: np.ndarray) -> Tone:
    """Whether the ink is dark on light paper, whether it covers over a third of the picture
    (a crop tight round a bold digit) in a tone clearly apart from the paper's, and whether
    the call is sure.

    The paper is the majority, so the median lies near it and the ink is the tone further away
    (a digit small on a page is looked for at the extremes); in a tight crop neither tone
    clearly is, and the paper is the tone that holds most of the picture's border. (A shaded
    photo also splits in two, but its tones blend into each other.)
    """
    lum = rgb.mean(axis=2)
    cut = otsu(lum)
    dark = lum < cut
    share, crisp = float(dark.mean()), separation(lum, cut) > CRISP
    even = 0.35 < share < 0.65
    if even and crisp:
        ring = np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]])
        return Tone(bool(ring.mean() < 0.5), True, False)
    low, mid, high = np.percentile(lum, (1, 50, 99))
    if max(high - mid, mid - low) < 0.1:  # ink under 1% of the picture: a small digit on a page
        smooth = ndimage.gaussian_filter(lum, 1.0)  # one noisy pixel is no stroke
        low, high = float(smooth.min()), float(smooth.max())
    is_dark = bool(high - mid < mid - low)
    bold = (share if is_dark else 1.0 - share) > 0.35 and crisp
    return Tone(is_dark, bold, not (even and two_toned(lum)))


def two_toned(lum: np.ndarray) -> bool:
    """Whether the picture splits into two tones that hold together in space, as ink and paper
    do, once its pixel noise is smoothed away (noise alone splits far less cleanly, 0.64)."""
    smooth = ndimage.gaussian_filter(lum, 1.0)
    return separation(smooth, otsu(smooth)) > TWO_TONES


def paper(img: np.ndarray, reach: int = 4) -> np.ndarray:
    """The paper's colour under every pixel of ``img`` (H, W, 3) holding dark strokes.

    A grey closing ``1 / reach`` of the image wide replaces strokes by the paper beside them
    and still follows a lighting gradient; the mean filter then smooths its blocky steps.
    """
    h, w = img.shape[:2]
    side = max(3, max(h, w) // reach)
    closed = ndimage.grey_closing(img, size=(side, side, 1), mode="nearest")
    return ndimage.uniform_filter(closed, size=(side // 2 + 1, side // 2 + 1, 1), mode="nearest")


def contrast(rgb: np.ndarray, tone: Tone) -> np.ndarray:
    """Ink contrast (H, W) float32 in 0..1 for a float RGB image (H, W, 3) in 0..1 with ink of
    ``tone`` (see :func:`ink_tone`). Where ink covers over a third of the picture its strokes
    are bold for its size, so the paper is looked for twice as far away."""
    img = rgb if tone.dark else 1.0 - rgb
    bg = paper(img, 2 if tone.bold else 4)
    drop = (bg - img).sum(axis=2) / np.maximum(bg.sum(axis=2), 0.15)
    drop = ndimage.gaussian_filter(drop, SMOOTH)  # paper grain and JPEG noise average out
    return np.clip(drop, 0.0, 1.0).astype(np.float32)


def noise_level(c: np.ndarray, tight: bool = False) -> tuple[float, float]:
    """The paper's typical contrast and its spread (median, robust sigma). Ink is usually a
    small minority; where it covers over a quarter of the picture in a clearly separate tone,
    or the picture is searched as a crop ``tight`` round its digit, the paper is measured
    alone, below Otsu's cut."""
    paper = c
    if np.ptp(c) > 0:
        cut = otsu(c)
        below = c[c < cut]
        if tight or (below.size < 0.75 * c.size and separation(c, cut) > CRISP):
            paper = below
    med = float(np.median(paper))
    return med, float(1.4826 * np.median(np.abs(paper - med)))


def separation(values: np.ndarray, cut: float) -> float:
    """How much of the variance of ``values`` lies between the two classes split at ``cut``
    (1: two clean tones; 0.75 for uniform noise)."""
    low = values < cut
    share = float(low.mean())
    if share in (0.0, 1.0):
        return 0.0
    gap = float(values[low].mean()) - float(values[~low].mean())
    return share * (1 - share) * gap * gap / max(float(values.var()), 1e-12)


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``values``: the cut that best separates two classes."""
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values)) if values.size and np.ptp(values) > 0 else 1.0


def ink_mask(c: np.ndarray, noise: tuple[float, float]) -> np.ndarray:
    """Boolean ink mask (H, W) from a contrast map and its paper's :func:`noise_level`:
    hysteresis between a high and a low level."""
    from skimage.filters import apply_hysteresis_threshold

    if c.max() < MIN_CONTRAST:
        raise no_digit(BLANK)
    med, sigma = noise
    floor = med + NOISE_SIGMAS * sigma
    high = max(otsu(c[c > floor]) if np.any(c > floor) else 1.0, floor, MIN_CONTRAST)
    high = min(high, 0.5 * (c.max() + floor))  # Otsu can land above a faint pen's strokes
    low = max(0.5 * high, med + 3 * sigma, 0.6 * MIN_CONTRAST)
    mask = apply_hysteresis_threshold(c, low, high)
    if not mask.any():
        raise no_digit(BLANK)
    return mask


@dataclass
class Blob:
    """One connected piece of ink: its label, pixel count and bounding box (rows, cols)."""

    label: int
    area: int
    top: int
    bottom: int  # exclusive
    left: int
    right: int  # exclusive
    strength: float = 1.0  # mean contrast of its pixels: a pen stroke's, or a soft shadow's

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left


def blobs(mask: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, list[Blob]]:
    """Label 8-connected ink pieces: ``(labels (H, W) int32, [Blob, ...])``, each with its
    mean contrast in ``c`` (H, W)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    sums = np.bincount(labels.ravel(), weights=c.ravel(), minlength=count + 1)
    found = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            found.append(Blob(k, int(areas[k]), box[0].start, box[0].stop, box[1].start,
                              box[1].stop, float(sums[k]) / max(int(areas[k]), 1)))
    return labels, found


def cut_by_frame(b: Blob, shape) -> bool:
    """The piece touches the picture's edge."""
    return b.top == 0 or b.left == 0 or b.bottom == shape[0] or b.right == shape[1]


def is_page_edge(b: Blob, shape) -> bool:
    """A page edge, ruled line or border: a long thin piece along the frame, or across it."""
    h, w = shape
    along_top_bottom = (b.top == 0 or b.bottom == h) and b.width >= 0.5 * w and b.height < 0.15 * b.width
    along_sides = (b.left == 0 or b.right == w) and b.height >= 0.5 * h and b.width < 0.15 * b.height
    across = ((b.left == 0 and b.right == w and b.height < 0.06 * h)
              or (b.top == 0 and b.bottom == h and b.width < 0.06 * w))
    return along_top_bottom or along_sides or across


def runs_along_frame(b: Blob, shape) -> bool:
    """Lies along a whole side of the picture: a shadow or a lighting edge, not a digit."""
    h, w = shape
    return (((b.left == 0 or b.right == w) and b.height >= 0.8 * h)
            or ((b.top == 0 or b.bottom == h) and b.width >= 0.8 * w))


def spans_picture(height: int, width: int, shape) -> bool:
    """Spans the picture both ways, as the digit of a crop tight round it does."""
    return height >= 0.9 * shape[0] and width >= 0.9 * shape[1]


def is_filled(b: Blob, labels: np.ndarray) -> bool:
    """A solid patch at the picture's edge (a shadow, the table beside the page) rather than
    pen strokes: it touches the frame, spans most of it or fills half its own box (a shadow in
    a corner), and its pen would be wider than 40% of its own size."""
    h, w = labels.shape
    spans = b.width >= 0.8 * w or b.height >= 0.8 * h or b.area >= PATCH * b.height * b.width
    if b.area < 200 or not (cut_by_frame(b, labels.shape) and spans):
        return False
    piece = labels[b.top:b.bottom, b.left:b.right] == b.label
    return stroke_width(piece) > 0.4 * min(b.height, b.width)


def gap(a: tuple, b: Blob) -> float:
    """Distance between a box ``(top, bottom, left, right)`` and a blob's box (0 if they meet)."""
    dy = max(a[0] - b.bottom, b.top - a[1], 0)
    dx = max(a[2] - b.right, b.left - a[3], 0)
    return float(np.hypot(dy, dx))


def substantial(pieces: list[Blob], labels: np.ndarray, tight: bool = False,
                by_contrast: bool = True) -> list[Blob]:
    """Pieces that may be handwriting: no page edges or solid patches (unless nothing else is
    left, or, in a picture ``tight`` round its digit, the piece spans it), and no specks: pieces
    under 3% of the most ink, counted ``by_contrast`` (a grey speck beside a digit) or by area
    alone (a faint digit beside a bold one)."""
    shape = labels.shape
    side = max(shape)
    strokes = [b for b in pieces if not (is_page_edge(b, shape) or is_filled(b, labels))]
    if any(max(b.height, b.width) >= 0.03 * side for b in strokes):
        pieces = strokes
    else:  # a digit in a tight crop touches the frame, a bold one may run along it, but its
        # strokes leave paper inside its box, which a shadow or the table beside the page fills
        # (a narrow 1 cropped tight fills its box too, but spans the whole picture)
        pieces = [b for b in pieces if not runs_along_frame(b, shape)
                  or b.area < SOLID * b.height * b.width
                  or (tight and spans_picture(b.height, b.width, shape))]
    if not pieces:
        return []
    def amount(b: Blob) -> float:
        return b.area * b.strength if by_contrast else b.area

    biggest = max(amount(b) for b in pieces)
    return [b for b in pieces if b.area >= 4 and amount(b) >= 0.03 * biggest
            and max(b.height, b.width) >= 0.02 * side]


def encloses(a: Blob, b: Blob) -> bool:
    return a.top < b.top and a.bottom > b.bottom and a.left < b.left and a.right > b.right


def without_boxes_and_underlines(pieces: list[Blob]) -> list[Blob]:
    """``pieces`` less a box or ring drawn round the writing (a piece whose box holds another
    piece of at least a third of its ink and size) and a line drawn under it (a flat piece
    below all the others, apart from them, reaching well past them on both sides; a 1's foot
    touches its stem, or barely reaches past its flag)."""
    if len(pieces) < 2:
        return pieces
    kept = [a for a in pieces if not any(
        encloses(a, b) and b.area >= 0.3 * a.area
        and max(b.height, b.width) >= 0.4 * max(a.height, a.width) for b in pieces)]
    if len(kept) >= 2:
        def underline(p: Blob) -> bool:
            others = [o for o in kept if o is not p]
            top, bottom = min(o.top for o in others), max(o.bottom for o in others)
            left, right = min(o.left for o in others), max(o.right for o in others)
            margin = 0.1 * (bottom - top)
            return (p.height < 0.2 * p.width and p.top >= bottom + 0.4 * margin
                    and p.left <= left - margin and p.right >= right + margin)

        kept = [p for p in kept if not underline(p)]
    return kept or pieces


def centre_group(pieces: list[Blob], shape) -> list[Blob]:
    """The digit: the piece nearest the centre (weighted by its size and the square of its
    contrast, and a tenth where the frame cuts it), plus pieces close to it.

    A piece joins when its box lies within a third of the digit's size of the digit so far,
    which takes in a 5's cap, a 7's crossbar or a dotted stroke but not a neighbouring word.
    """
    h, w = shape
    diag = float(np.hypot(h, w))

    def weight(b: Blob) -> float:
        cy, cx = (b.top + b.bottom) / 2, (b.left + b.right) / 2
        d = np.hypot(cy - h / 2, cx - w / 2) / (0.25 * diag)
        cut = 10.0 if cut_by_frame(b, shape) else 1.0
        return b.area * b.strength ** 2 / (1.0 + d * d) / cut

    seed = max(pieces, key=weight)
    group, rest = [seed], [b for b in pieces if b is not seed]
    box = (seed.top, seed.bottom, seed.left, seed.right)
    grew = True
    while grew and rest:
        grew = False
        reach = max(box[1] - box[0], box[3] - box[2]) / 3
        for b in list(rest):
            if gap(box, b) <= reach:
                group.append(b)
                rest.remove(b)
                box = (min(box[0], b.top), max(box[1], b.bottom), min(box[2], b.left),
                       max(box[3], b.right))
                grew = True
    return group


def row_groups(pieces: list[Blob]) -> list[list[Blob]]:
    """Pieces split into digits written left to right.

    A piece joins the digit before it when it lies mostly within that digit's columns, or
    overlaps them and is much shorter (a 5's cap, a 7's bar); two tall pieces that merely
    touch columns, as slanted neighbours do, stay two digits.
    """
    groups: list[list[Blob]] = []
    for b in sorted(pieces, key=lambda b: b.left):
        if groups:
            g = groups[-1]
            left, right = min(p.left for p in g), max(p.right for p in g)
            height = max(p.bottom for p in g) - min(p.top for p in g)
            overlap = min(right, b.right) - max(left, b.left)
            narrow = min(b.width, right - left)
            short = min(b.height, height) < 0.6 * max(b.height, height)
            if overlap >= 0.6 * narrow or (short and overlap > 0.2 * narrow):
                g.append(b)
                continue
        groups.append([b])
    tallest = max(max(p.bottom for p in g) - min(p.top for p in g) for g in groups)
    return [g for g in groups if max(p.bottom for p in g) - min(p.top for p in g) >= 0.35 * tallest]


def is_row_of_digits(groups: list[list[Blob]]) -> bool:
    """Two or more digit-sized groups side by side on one line (a number, not one digit)."""
    if len(groups) < 2:
        return False
    tops = np.array([min(p.top for p in g) for g in groups], float)
    bottoms = np.array([max(p.bottom for p in g) for g in groups], float)
    heights = bottoms - tops
    centres = (tops + bottoms) / 2
    same_line = np.ptp(centres) < 0.6 * heights.max()
    similar = heights.min() >= 0.4 * heights.max()
    return bool(same_line and similar)


def group_ink(labels: np.ndarray, group: list[Blob], c: np.ndarray):
    """The pixels of ``group`` cropped to its box: ``(mask bool, ink float32 0..1)``.

    The ink keeps the contrast's grey levels (a pen's pressure, soft edges) within a pixel of
    the final 20-pixel digit around the mask, scaled so the strokes' cores are 1.
    """
    top, bottom = min(b.top for b in group), max(b.bottom for b in group)
    left, right = min(b.left for b in group), max(b.right for b in group)
    mask = np.isin(labels[top:bottom, left:right], [b.label for b in group])
    reach = max(1.0, 0.05 * max(mask.shape))
    near = ndimage.distance_transform_edt(~mask) <= reach
    crop = c[top:bottom, left:right]
    core = float(np.percentile(crop[mask], 75))
    return mask, np.clip(np.where(near, crop, 0.0) / max(core, 1e-6), 0.0, 1.0)


def with_fainter_ink(mask: np.ndarray, c: np.ndarray, noise: tuple[float, float],
                     tallest: int) -> np.ndarray:
    """``mask`` and the ink too faint for the levels its boldest strokes set (a number whose
    digits were written with different pens or pressures: a faint pencil digit beside a bold
    one): the contrast ``c`` away from the ink found is thresholded again by :func:`ink_mask`,
    and its pieces at least 35% as tall as the ``tallest`` piece found are added, unless the
    frame cuts them (a smudge along a scan's edge); a bold stroke's JPEG ringing is shorter.
    Returns ``mask`` itself where nothing is added."""
    away = ~ndimage.binary_dilation(mask, iterations=3)
    try:
        faint = ink_mask(np.where(away, c, 0.0).astype(np.float32), noise)
    except NoDigitError:
        return mask
    labels, pieces = blobs(faint, c)
    tall = [b.label for b in pieces if b.height >= 0.35 * tallest and not cut_by_frame(b, c.shape)]
    return mask | np.isin(labels, tall) if tall else mask


def without_lines(mask: np.ndarray, c: np.ndarray, noise: tuple[float, float]):
    """The ink ``mask`` and contrast ``c`` (H, W) with the lines of ruled or squared paper
    taken out (see :mod:`fastmnist.lines`), their soft edges included; lines are traced down
    to 3 sigmas of the paper's ``noise``."""
    med, sigma = noise
    lines = ruled_lines(mask, c > max(med + 3 * sigma, 0.5 * MIN_CONTRAST))
    if not lines.any():
        return mask, c
    mask = mask & ~lines
    edges = ndimage.binary_dilation(lines, iterations=2) & ~mask
    return mask, np.where(edges, 0.0, c).astype(np.float32)


def find_digits(rgb: np.ndarray, several: bool | None = None):
    """The digits in ``rgb`` (H, W, 3), left to right, each as a cropped ``(mask, ink)`` pair
    (see :func:`group_ink`), and the box ``(top, bottom, left, right)`` around all of them.

    ``several=False`` returns the one digit nearest the centre, ``True`` every digit on the
    line, ``None`` decides: several when two or more digit-sized groups stand side by side.
    Where ink and paper cover the picture about evenly and no digit is found, the picture is
    taken for a crop tight round a bold digit (a narrow 1, whose grey edges blur the two
    tones): strokes spanning it are looked for in the tone first taken for ink, then in the
    other. Raises :class:`NoDigitError` when nothing digit-like is found.
    """
    tone = ink_tone(rgb)
    try:
        return digits_in(rgb, tone, several)
    except NoDigitError:
        if tone.sure:
            raise
        for dark in (tone.dark, not tone.dark):  # ink covering half the picture is bold
            try:
                return digits_in(rgb, Tone(dark, True, False), several, tight=True)
            except NoDigitError:
                pass
        raise


def digits_in(rgb: np.ndarray, tone: Tone, several: bool | None, tight: bool = False):
    """:func:`find_digits` with the ink's ``tone`` given; ``tight``: the picture is a crop
    tight round the digit, whose ink must span it (the paper of such a crop does not)."""
    c = contrast(rgb, tone)
    noise = noise_level(c, tight)
    mask, c = without_lines(ink_mask(c, noise), c, noise)
    labels, pieces = blobs(mask, c)
    pieces = without_boxes_and_underlines(substantial(pieces, labels, tight))
    if not pieces or max(max(b.height, b.width) for b in pieces) < 0.025 * max(mask.shape):
        raise no_digit("only specks and noise stand out from the background")
    groups = [centre_group(pieces, mask.shape)]
    if several is not False:
        row_labels, row = labels, row_groups(pieces)
        more = with_fainter_ink(mask, c, noise, max(b.height for b in pieces))
        if more is not mask:  # faint digits found: count ink by area, not contrast
            row_labels, more_pieces = blobs(more, c)
            row = row_groups(without_boxes_and_underlines(
                substantial(more_pieces, row_labels, tight, by_contrast=False)))
        if several or is_row_of_digits(row):
            labels, groups = row_labels, row
    every = [b for g in groups for b in g]
    box = (min(b.top for b in every), max(b.bottom for b in every),
           min(b.left for b in every), max(b.right for b in every))
    if tight and not spans_picture(box[1] - box[0], box[3] - box[2], mask.shape):
        raise no_digit(BLANK)
    return [group_ink(labels, g, c) for g in groups], box

"""COCO annotations -> class masks, the one place the mask policy is applied (torch-free; README "Masks").

Pixels claimed by two different target classes become the ignore index (the truth is ambiguous
there); an annotation that cannot be decoded is not guessed: its bounding box becomes ignore and it
is reported. Geometry is checked before pycocotools' C code, which trusts it (a polygon vertex of
1e9 overflows its rasteriser; RLE counts that do not add up are decoded from uninitialised memory):
see `POLYGON_MARGIN`, `POLYGON_MAX_OUTLINE` and the RLE checks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from pycocotools import mask as mask_utils

from segtrain.contract import IGNORE_INDEX

# Polygon vertices may lie a little outside the image (annotation tools clip loosely), but not more
# than this many image widths (heights) beyond its left and right (top and bottom) edges.
POLYGON_MARGIN = 1.0
# pycocotools walks a polygon's outline at 5x resolution, 16 bytes a step: an outline (Chebyshev length)
# longer than this many times the image's height + width is broken data, not a shape.
POLYGON_MAX_OUTLINE = 100
_RLE_MAX_PIXELS = 2**32 - 1  # pycocotools counts are 32-bit
_RLE_MAX_GROUPS = 7  # 5-bit groups of one compressed count: 35 bits hold any 32-bit count or difference


class AnnotationError(ValueError):
    """One annotation whose segmentation cannot be decoded."""


@dataclass(frozen=True)
class TargetAnnotation:
    """An annotation of a target class: compact class index, COCO segmentation and bbox."""

    ann_id: int
    class_index: int
    segmentation: object
    bbox: tuple[float, ...] | None


def decode_segmentation(segm: object, height: int, width: int) -> np.ndarray:
    """COCO segmentation (polygon list or RLE dict) -> bool HxW mask; AnnotationError if malformed."""
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(checked_polygons(segm, height, width), height, width))
    elif isinstance(segm, dict):
        rle = checked_rle(segm, height, width)
    else:
        raise AnnotationError("segmentation is neither a polygon list nor an RLE")
    try:
        decoded = mask_utils.decode(rle)
    except (TypeError, ValueError, OverflowError) as e:
        raise AnnotationError(f"RLE cannot be decoded ({e})") from e
    if decoded.shape != (height, width):
        raise AnnotationError("RLE does not match the image size")
    return decoded.astype(bool)


def checked_polygons(segm: list, height: int, width: int) -> list[list[float]]:
    """The polygons of a segmentation, each with 3+ finite vertices near the image; AnnotationError if not."""
    if 5 * (1 + 2 * POLYGON_MARGIN) * max(height, width) >= 2**31:  # differences of 5x coordinates in 32-bit ints
        raise AnnotationError(f"image of {height}x{width} pixels is too large to rasterise polygons")
    polys = [p for p in segm if isinstance(p, list)]
    if not polys or len(polys) != len(segm):
        raise AnnotationError("segmentation is an empty or malformed polygon list")
    for p in polys:
        if len(p) < 6 or len(p) % 2:
            raise AnnotationError(f"polygon with {len(p) // 2} points (needs at least 3)")
        if not all(isinstance(v, Real) and not isinstance(v, bool) for v in p):
            raise AnnotationError("polygon with non-numeric coordinates")
        for values, side, axis in ((p[0::2], width, "x"), (p[1::2], height, "y")):
            lo, hi = -POLYGON_MARGIN * side, (1 + POLYGON_MARGIN) * side
            if not all(lo <= v <= hi for v in values):  # NaN and infinities fail too
                bad = next(v for v in values if not lo <= v <= hi)
                where = "is not finite" if bad != bad or abs(bad) == float("inf") else "is far outside the image"
                raise AnnotationError(f"polygon {axis} coordinate {_short(bad)} {where} (allowed {lo:g} to {hi:g})")
        xy = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        outline = np.abs(xy - np.roll(xy, -1, axis=0)).max(axis=1).sum()
        if outline > POLYGON_MAX_OUTLINE * (height + width):
            raise AnnotationError(f"polygon outline of {outline:.0f} pixels is more than {POLYGON_MAX_OUTLINE} "
                                  f"times the image's height + width")
    return polys


def checked_rle(segm: dict, height: int, width: int) -> dict:
    """An RLE pycocotools can decode safely: size [height, width], counts >= 0 adding up to height x width."""
    size, counts = segm.get("size"), segm.get("counts")
    if not isinstance(size, list) or size != [height, width]:
        raise AnnotationError(f"RLE size {_short(size)} differs from image size [{height}, {width}]")
    if height * width > _RLE_MAX_PIXELS:
        raise AnnotationError(f"image of {height}x{width} pixels is too large for an RLE")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise AnnotationError("malformed RLE (counts are not all integers)")
        values = counts
    elif isinstance(counts, (str, bytes)):
        try:
            data = counts.encode("ascii") if isinstance(counts, str) else counts
        except UnicodeEncodeError as e:
            raise AnnotationError("malformed RLE (counts string is not ASCII)") from e
        values = compressed_counts(data)
    else:
        raise AnnotationError("malformed RLE (counts is neither a list nor a string)")
    if any(c < 0 for c in values):
        raise AnnotationError("malformed RLE (negative count)")
    if sum(values) != height * width:
        raise AnnotationError(f"malformed RLE (counts add up to {sum(values)} pixels, the image has {height * width})")
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
    return {"size": size, "counts": data}


def compressed_counts(data: bytes) -> list[int]:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString, in Python, checked).

    Each count is a little-endian sequence of 5-bit groups in characters 48..111 (bit 0x20: more
    groups follow; bit 0x10 of the last group: negative); from the fourth count on, the value is a
    difference to the count two places earlier.
    """
    counts: list[int] = []
    p, n = 0, len(data)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise AnnotationError("malformed RLE (counts string ends inside a value)")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise AnnotationError(f"malformed RLE (character {data[p]!r} in counts string)")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if k > _RLE_MAX_GROUPS:
                raise AnnotationError("malformed RLE (a value in the counts string is too long)")
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def render_mask(anns: Iterable[TargetAnnotation], height: int, width: int,
                ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, list[str]]:
    """Rasterise target annotations into one uint8 class mask; returns (mask, problems)."""
    label = np.zeros((height, width), dtype=np.uint8)
    conflict = np.zeros((height, width), dtype=bool)
    unknown = np.zeros((height, width), dtype=bool)
    problems: list[str] = []
    for ann in anns:
        try:
            m = decode_segmentation(ann.segmentation, height, width)
        except AnnotationError as e:
            problems.append(f"annotation {ann.ann_id}: {e}; its bounding box is ignored (255)")
            if not _mark_bbox(unknown, ann.bbox):
                raise AnnotationError(f"annotation {ann.ann_id}: {e}, and it has no usable bbox") from e
            continue
        conflict |= m & (label != 0) & (label != ann.class_index)
        label[m & (label == 0)] = ann.class_index
    label[conflict | unknown] = ignore_index
    return label, problems


def _mark_bbox(region: np.ndarray, bbox: tuple[float, ...] | None) -> bool:
    if not bbox or len(bbox) != 4 or not all(_is_finite(v) for v in bbox):
        return False
    x, y, w, h = bbox
    rows, cols = region.shape
    x0, y0 = math.floor(min(max(0, x), cols)), math.floor(min(max(0, y), rows))
    x1, y1 = math.ceil(min(max(0, x + w), cols)), math.ceil(min(max(0, y + h), rows))  # x + w may be inf
    if x1 <= x0 or y1 <= y0:
        return False
    region[y0:y1, x0:x1] = True
    return True


def _is_finite(value: object) -> bool:
    """A finite real number (an int of any size is one; a bool is not)."""
    if not isinstance(value, Real) or isinstance(value, bool):
        return False
    return isinstance(value, Integral) or math.isfinite(value)

"""COCO annotations -> class masks (torch-free).

Policy, applied in one place:
- Polygons and RLE (compressed or not, crowd or not) are decoded with pycocotools. A crowd
  region belongs to its class like any other annotation.
- Pixels claimed by two *different* target classes are set to the ignore index (255), as in the
  torchvision segmentation reference: the truth there is ambiguous, so it is left out of loss and
  metrics. Overlapping instances of the same class simply keep that class.
- An annotation that cannot be decoded (a polygon with fewer than 3 points, a malformed RLE) is
  not guessed: its bounding box becomes ignore (255) so no pixel of it is wrongly taught as
  background, and the problem is reported. Without a usable bounding box the image is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from segtrain.contract import IGNORE_INDEX


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
        polys = [p for p in segm if isinstance(p, list)]
        if not polys or len(polys) != len(segm):
            raise AnnotationError("segmentation is an empty or malformed polygon list")
        for p in polys:
            if len(p) < 6 or len(p) % 2:
                raise AnnotationError(f"polygon with {len(p) // 2} points (needs at least 3)")
            if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in p):
                raise AnnotationError("polygon with non-numeric coordinates")
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if list(segm["size"]) != [height, width]:
            raise AnnotationError(f"RLE size {segm['size']} differs from image size [{height}, {width}]")
        try:
            rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
            if isinstance(rle.get("counts"), str):
                rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        except (TypeError, ValueError, UnicodeEncodeError) as e:
            raise AnnotationError(f"malformed RLE ({e})") from e
    else:
        raise AnnotationError("segmentation is neither a polygon list nor an RLE")
    try:
        decoded = mask_utils.decode(rle)
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"RLE cannot be decoded ({e})") from e
    if decoded.shape != (height, width) or decoded.sum() > height * width:
        raise AnnotationError("RLE does not match the image size")
    return decoded.astype(bool)


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
    if not bbox or len(bbox) != 4 or not all(np.isfinite(bbox)):
        return False
    x, y, w, h = bbox
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(region.shape[1], int(np.ceil(x + w))), min(region.shape[0], int(np.ceil(y + h)))
    if x1 <= x0 or y1 <= y0:
        return False
    region[y0:y1, x0:x1] = True
    return True

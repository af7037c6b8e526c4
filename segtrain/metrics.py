"""Segmentation metrics from one accumulated confusion matrix (torch-free).

Training validation, `segtrain evaluate`, `segdeploy evaluate` and `segdeploy batch --gt` all use
this class, so their numbers are computed the same way. A class that is absent from both the
ground truth and the predictions has IoU NaN and is left out of the mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segtrain.contract import IGNORE_INDEX


class ConfusionMatrix:
    """Rows are ground truth, columns are predictions; pixels labelled `ignore_index` are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, target: np.ndarray, pred: np.ndarray) -> None:
        target = np.asarray(target).reshape(-1).astype(np.int64)
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        if target.shape != pred.shape:
            raise ValueError(f"target has {target.size} pixels, prediction {pred.size}")
        keep = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        n = self.num_classes
        self.mat += np.bincount(n * target[keep] + pred[keep], minlength=n * n).reshape(n, n)

    def add(self, other: np.ndarray) -> None:
        """Add a matrix accumulated elsewhere (another process or rank)."""
        self.mat += np.asarray(other, dtype=np.int64)

    def iou(self) -> np.ndarray:
        tp = np.diag(self.mat).astype(np.float64)
        union = self.mat.sum(0) + self.mat.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def frequency_weighted_iou(self) -> float:
        """IoU per class weighted by the class's share of the ground-truth pixels (COCO-Stuff's FW IoU)."""
        total, iou = self.mat.sum(), self.iou()
        if not total:
            return float("nan")
        freq = self.mat.sum(1) / total
        seen = np.isfinite(iou)
        return float((freq[seen] * iou[seen]).sum())

    def mean_accuracy(self) -> float:
        """The mean over classes present in the ground truth of the share of their pixels found."""
        rows = self.mat.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            accuracy = np.where(rows > 0, np.diag(self.mat) / np.maximum(rows, 1), np.nan)
        return float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.mat.sum()
        return float(np.diag(self.mat).sum() / total) if total else float("nan")

    def result(self, class_names: Sequence[str]) -> SegMetrics:
        return SegMetrics(class_names=tuple(class_names), iou=tuple(float(v) for v in self.iou()),
                          miou=self.miou(), pixel_accuracy=self.pixel_accuracy(),
                          pixels=int(self.mat.sum()))


@dataclass(frozen=True)
class SegMetrics:
    """Scores of one evaluation; `images` and `skipped` ((path, reason) of images that could not be
    read) are set by evaluations that read image files (segtrain.evaluation.evaluate_split)."""

    class_names: tuple[str, ...]
    iou: tuple[float, ...]
    miou: float
    pixel_accuracy: float
    pixels: int
    images: int | None = None
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def absent(self) -> list[str]:
        return [n for n, v in zip(self.class_names, self.iou, strict=True) if math.isnan(v)]

    def to_dict(self) -> dict:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 6)

        doc = {"miou": clean(self.miou), "pixel_accuracy": clean(self.pixel_accuracy),
               "iou": {n: clean(v) for n, v in zip(self.class_names, self.iou, strict=True)},
               "absent_classes": self.absent, "pixels": self.pixels}
        if self.images is not None:
            doc["images_scored"] = self.images
            doc["images_skipped"] = [{"image": path, "reason": reason} for path, reason in self.skipped]
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """A plain-text table: per-class IoU, then mIoU and pixel accuracy."""
        width = max(len("pixel accuracy"), *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}}  {'IoU':>7}", "-" * (width + 9)]
        for name, v in zip(self.class_names, self.iou, strict=True):
            lines.append(f"{name:<{width}}  {'n/a' if math.isnan(v) else f'{100 * v:6.2f}%':>7}")
        lines.append("-" * (width + 9))
        lines.append(f"{'mIoU':<{width}}  {100 * self.miou:6.2f}%")
        lines.append(f"{'pixel accuracy':<{width}}  {100 * self.pixel_accuracy:6.2f}%")
        if self.absent:
            lines.append(f"n/a: absent from truth and prediction, left out of the mean: {', '.join(self.absent)}")
        if self.images is not None:
            lines.append(f"{self.images} images scored, {len(self.skipped)} skipped"
                         + (" (could not be read):" if self.skipped else ""))
            lines += [f"  {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)

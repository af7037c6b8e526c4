"""`segdeploy batch --gt labels.json`: score a batch's masks against COCO ground truth (torch-free).

Ground-truth images are matched to the batch's inputs by file name: an input's path relative to
the folder it was found in (the `file_name` of labels.json, read with that folder as the image
folder). Masks are compared at each image's original size with the same confusion matrix as
`segdeploy evaluate`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.contract import ModelSpec
from segtrain.data.coco import CocoSplit
from segtrain.evaluation import check_classes, split_categories
from segtrain.metrics import ConfusionMatrix, SegMetrics

# EXIF orientation -> the Pillow transpose that undoes ImageOps.exif_transpose.
_UNDO_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                     4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                     6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
                     8: Image.Transpose.ROTATE_270}


def undo_exif_orientation(mask: np.ndarray, orientation: int | None) -> np.ndarray:
    """A mask in the displayed (EXIF-applied) grid -> the file's raw pixel grid."""
    method = _UNDO_ORIENTATION.get(orientation or 1)
    if method is None:
        return mask
    return np.asarray(Image.fromarray(mask).transpose(method))


def exif_orientation(path: Path) -> int | None:
    with Image.open(path) as im:
        return im.getexif().get(0x0112)


@dataclass
class GroundTruthReport:
    metrics: SegMetrics
    scored: int
    without_truth: int
    problems: list[str] = field(default_factory=list)
    # Rows ground truth, columns prediction: kept so shard summaries can be combined exactly.
    confusion: np.ndarray | None = None

    def to_dict(self) -> dict:
        doc = {**self.metrics.to_dict(), "images_scored": self.scored,
               "inputs_without_ground_truth": self.without_truth, "problems": self.problems}
        if self.confusion is not None:
            doc["confusion_matrix"] = np.asarray(self.confusion).tolist()
        return doc


class GroundTruth:
    """Ground truth for the batch's inputs; `update` is thread-safe."""

    def __init__(self, ann_file: Path, input_dir: Path, spec: ModelSpec) -> None:
        self.split = CocoSplit(input_dir, ann_file, categories=split_categories(spec), name=Path(ann_file).name)
        check_classes(self.split, spec)
        self.spec = spec
        self._index = {Path(r.file_name).as_posix(): i for i, r in enumerate(self.split.records)}
        self._cm = ConfusionMatrix(spec.num_classes, spec.ignore_index)
        self._lock = threading.Lock()
        self._scored: set[str] = set()
        self._problems: list[str] = []

    def has(self, key: str) -> bool:
        return key in self._index

    def image_id(self, key: str) -> int | None:
        """The id labels.json gives input `key`, or None when it has no such image."""
        i = self._index.get(key)
        return None if i is None else self.split.records[i].image_id

    def truth_grid(self, key: str, mask: np.ndarray) -> np.ndarray:
        """A predicted mask (displayed grid) in the pixel grid labels.json describes for input `key`."""
        i = self._index.get(key)
        if i is None or self.split.records[i].exif:
            return mask
        # labels.json describes the raw pixel grid of this file
        return undo_exif_orientation(mask, exif_orientation(self.split.records[i].path))

    def update(self, key: str, mask: np.ndarray) -> None:
        """Add the predicted mask of input `key` (displayed grid, original size) to the scores."""
        i = self._index.get(key)
        if i is None:
            return
        mask = self.truth_grid(key, mask)
        truth = self.split.load_mask(i)
        if truth.shape != mask.shape:
            with self._lock:
                self._problems.append(f"{key}: prediction {mask.shape[1]}x{mask.shape[0]} but ground truth "
                                      f"{truth.shape[1]}x{truth.shape[0]}, not scored")
            return
        local = ConfusionMatrix(self.spec.num_classes, self.spec.ignore_index)
        local.update(truth, mask)
        with self._lock:
            self._cm.add(local.mat)
            self._scored.add(key)

    def report(self, input_keys: list[str]) -> GroundTruthReport:
        without = sum(1 for k in input_keys if k not in self._index)
        return GroundTruthReport(self._cm.result(self.spec.classes), len(self._scored), without,
                                 [*self.split.problems, *self._problems], self._cm.mat.copy())

"""`segdeploy batch --gt labels.json`: score a batch's masks against COCO ground truth (torch-free).

Ground-truth images are matched to the batch's inputs by file name: an input's path relative to
the folder it was found in (the `file_name` of labels.json, read with that folder as the image
folder). Masks are compared at each image's original size with the same confusion matrix as
`segdeploy evaluate`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.common.json_shape import Integer, ListOf, MapOf, Nullable, Number, Record, ShapeError, String
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


_COUNT = Integer(lo=0)
MAX_CONFUSION_TOTAL = 2**62  # pixels in a confusion matrix (shards' together): int64 sums never overflow below it


@dataclass(frozen=True, eq=False)
class GroundTruthReport:
    """The "ground_truth" section of a summary: the scores of the matched images, from their confusion matrix
    (rows ground truth, columns prediction), which is kept so that shard summaries combine exactly."""

    classes: tuple[str, ...]
    confusion: np.ndarray
    scored: int
    without_truth: int
    problems: tuple[str, ...] = ()

    @classmethod
    def json_shape(cls) -> Record:
        """What is read back: the class names (the keys of "iou", in order), counts, problems, the matrix."""
        return Record({"iou": MapOf(Nullable(Number())), "images_scored": _COUNT,
                       "inputs_without_ground_truth": _COUNT, "problems": ListOf(String(nonempty=False)),
                       "confusion_matrix": ListOf(ListOf(_COUNT))}, expected="a ground-truth report")

    @property
    def metrics(self) -> SegMetrics:
        cm = ConfusionMatrix(len(self.classes))
        cm.add(self.confusion)
        return cm.result(self.classes)

    def to_dict(self) -> dict:
        return {**self.metrics.to_dict(), "images_scored": self.scored,
                "inputs_without_ground_truth": self.without_truth, "problems": list(self.problems),
                "confusion_matrix": np.asarray(self.confusion).tolist()}

    def describe(self) -> str:
        """How many images were scored, and the scores as a table."""
        return (f"ground truth: {self.scored} images scored, {self.without_truth} inputs without ground truth\n"
                f"{self.metrics.table()}")

    @classmethod
    def from_dict(cls, doc: dict) -> GroundTruthReport:
        """From a document that fits json_shape(); ShapeError unless its matrix has a row and a column per class."""
        classes = tuple(doc["iou"])
        n = len(classes)
        rows = doc["confusion_matrix"]
        if len(rows) != n or any(len(row) != n for row in rows):  # ragged rows are no matrix
            raise ShapeError(f"a {n}x{n} matrix (a row and a column per class of the model)",
                             rows).inside(".confusion_matrix")
        if sum(map(sum, rows)) > MAX_CONFUSION_TOTAL:  # Python ints: the check itself cannot overflow
            raise ShapeError(f"a matrix of at most {MAX_CONFUSION_TOTAL} pixels in all", rows).inside(
                ".confusion_matrix")
        if doc["images_scored"] == 0 and any(map(any, rows)):
            raise ShapeError("an empty matrix, since no image was scored", rows).inside(".confusion_matrix")
        confusion = np.asarray(rows, dtype=np.int64)
        return cls(tuple(classes), confusion, doc["images_scored"], doc["inputs_without_ground_truth"],
                   tuple(doc["problems"]))

    @classmethod
    def combine(cls, reports: list[GroundTruthReport]) -> GroundTruthReport:
        """The reports of disjoint sets of images (shards) as one: summed matrices and counts."""
        problems = dict.fromkeys(p for r in reports for p in r.problems)  # labels.json's own repeat in every shard
        if sum(int(r.confusion.sum()) for r in reports) > MAX_CONFUSION_TOTAL:
            raise ValueError(f"the confusion matrices hold more than {MAX_CONFUSION_TOTAL} pixels together")
        return cls(reports[0].classes, sum(r.confusion for r in reports), sum(r.scored for r in reports),
                   sum(r.without_truth for r in reports), tuple(problems))


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
        if mask.size and int(mask.max()) >= self.spec.num_classes:  # a damaged mask of an earlier run, replayed
            with self._lock:
                self._problems.append(f"{key}: its mask holds class {int(mask.max())}, which the model does not "
                                      "have; not scored")
            return
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
        return GroundTruthReport(tuple(self.spec.classes), self._cm.mat.copy(), len(self._scored), without,
                                 (*self.split.problems, *self._problems))

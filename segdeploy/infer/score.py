"""`segdeploy score`: COCO results of one region per class and image (predictions.json of `segdeploy batch --save
rle`, or any file in that format) scored against a COCO labels.json the way COCO-Stuff scores semantic
segmentation: mIoU, frequency-weighted IoU, mean accuracy and pixel accuracy from one confusion matrix
(torch-free).

COCO's instance evaluation (COCOeval, iouType "segm") matches instances and ranks them by score: it is the
wrong measure for a semantic mask, where every class is one region. Here each image's entries are painted into
one mask (pixels no entry covers are background), in the pixel grid labels.json describes, and compared with the
ground truth rasterised as `segdeploy batch --gt` does, so on the same run both give the same matrix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from segdeploy.infer.batch.summary import SUMMARY, BatchSummary
from segtrain.common.errors import InputError
from segtrain.common.json_shape import Integer, ListOf, Number, Record, ShapeError, String, check
from segtrain.data.coco import CocoSplit
from segtrain.data.rasterize import AnnotationError, checked_rle
from segtrain.metrics import ConfusionMatrix, SegMetrics

ENTRY = Record({"image_id": Integer(), "category_id": Integer(lo=0),
                "segmentation": Record({"size": ListOf(Integer(lo=1), length=2), "counts": String()})},
               optional={"score": Number()}, expected="a COCO result with a compressed-RLE segmentation")


class ScoreError(InputError):
    """Results or labels that cannot be scored together; the message names the file and the problem."""


@dataclass(frozen=True)
class StuffScores:
    """The scores of a results file against labels.json, with the confusion matrix they come from."""

    metrics: SegMetrics
    confusion: np.ndarray
    frequency_weighted_iou: float
    mean_accuracy: float
    images_scored: int
    images_without_results: int
    problems: tuple[str, ...]

    def to_dict(self) -> dict:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 6)

        return {**self.metrics.to_dict(), "frequency_weighted_iou": clean(self.frequency_weighted_iou),
                "mean_accuracy": clean(self.mean_accuracy), "images_scored": self.images_scored,
                "images_without_results": self.images_without_results, "problems": list(self.problems),
                "confusion_matrix": self.confusion.tolist()}

    def table(self) -> str:
        lines = [self.metrics.table(),
                 f"frequency-weighted IoU: {100 * self.frequency_weighted_iou:.2f}%",
                 f"mean accuracy: {100 * self.mean_accuracy:.2f}%",
                 f"{self.images_scored} images scored, {self.images_without_results} of labels.json without results"]
        return "\n".join(lines + [f"  {p}" for p in self.problems])


def score_results(predictions: Path, labels: Path, categories: Sequence[str | int] | None = None) -> StuffScores:
    """Score `predictions` (COCO results, one region per class and image) against `labels`; the classes are
    `categories` (names or COCO ids; background is added), else those of the model named by the summary.json
    beside `predictions`."""
    predictions, labels = Path(predictions), Path(labels)
    split = CocoSplit(labels.parent, labels, categories=categories or _model_categories(predictions),
                      name=labels.name, check_files=False)
    by_image = _entries(predictions, {r.image_id for r in split.records}, labels)
    index = {cid: k for k, cid in enumerate(split.coco_ids)}
    cm = ConfusionMatrix(len(split.classes))
    problems: list[str] = list(split.problems)
    scored = 0
    for i, record in enumerate(split.records):
        entries = by_image.get(record.image_id)
        if not entries:
            continue
        mask, trouble = _painted(entries, (record.height, record.width), index)
        problems += [f"image {record.image_id} ({record.file_name}): {t}" for t in trouble]
        if mask is not None:
            cm.update(split.load_mask(i), mask)
            scored += 1
    if not scored:
        raise ScoreError(f"{predictions}: no image of {labels} could be scored"
                         + (f" (first problem: {problems[0]})" if problems else ""))
    return StuffScores(cm.result(split.classes), cm.mat.copy(), cm.frequency_weighted_iou(), cm.mean_accuracy(),
                       scored, len(split.records) - scored, tuple(problems))


def _model_categories(predictions: Path) -> list[int]:
    """The COCO ids of the classes of the model that wrote `predictions` (from its summary.json beside it)."""
    summary = predictions.parent / f"{SUMMARY}.json"
    hint = "name the model's classes with --categories (`segdeploy info MODEL.onnx` lists them)"
    if not summary.is_file():
        raise ScoreError(f"{predictions}: no {summary.name} beside it to read the model's classes from; {hint}")
    try:
        ids = BatchSummary.read(summary).model.coco_ids
    except (OSError, ValueError, ShapeError, RecursionError) as e:
        raise ScoreError(f"{summary}: cannot read the model's classes ({e}); {hint}") from None
    if ids is None:
        raise ScoreError(f"{summary}: does not record the model's COCO ids (an older summary); {hint}")
    return list(ids[1:])


def _entries(predictions: Path, image_ids: set[int], labels: Path) -> dict[int, list[dict]]:
    """The checked entries of a results file, by image id; ScoreError naming the file and the problem."""
    try:
        with open(predictions, encoding="utf-8") as f:
            doc = json.load(f)
        check(doc, ListOf(ENTRY))
    except FileNotFoundError:
        raise ScoreError(f"{predictions}: file not found") from None
    except json.JSONDecodeError as e:
        raise ScoreError(f"{predictions}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError, RecursionError) as e:
        raise ScoreError(f"{predictions}: cannot read it ({e})") from None
    except ShapeError as e:
        raise ScoreError(f"{predictions}: {e}") from None
    by_image: dict[int, list[dict]] = {}
    for n, entry in enumerate(doc):
        if entry["image_id"] not in image_ids:
            raise ScoreError(f"{predictions}: [{n}].image_id {entry['image_id']!r} is not an image of {labels} (as "
                             "pycocotools' COCO.loadRes, results must be of that file's images)")
        by_image.setdefault(entry["image_id"], []).append(entry)
    return by_image


def _painted(entries: list[dict], size: tuple[int, int], index: dict[int, int]) -> tuple[np.ndarray | None, list]:
    """One image's entries as a class mask (uncovered pixels background), and the problems met; None when the
    entries are not of the image's size."""
    mask = np.zeros(size, np.uint8)
    claimed = np.zeros(size, bool)
    problems = []
    for entry in entries:
        rle = entry["segmentation"]
        if tuple(rle["size"]) != size:
            return None, [f"a result of size {rle['size'][1]}x{rle['size'][0]} for an image of {size[1]}x{size[0]}, "
                          "not scored"]
        k = index.get(entry["category_id"])
        if k is None:
            problems.append(f"category {entry['category_id']} is not one of the classes scored, left out")
            continue
        try:  # checked first: pycocotools decodes counts that do not add up from outside its buffer
            region = mask_utils.decode(checked_rle(rle, *size)).astype(bool)
        except AnnotationError as e:
            problems.append(f"category {entry['category_id']}: {e}, left out")
            continue
        overlap = int((region & claimed).sum())
        if overlap:
            problems.append(f"{overlap} pixels of category {entry['category_id']} are claimed by another result too")
        mask[region] = k
        claimed |= region
    return mask, problems

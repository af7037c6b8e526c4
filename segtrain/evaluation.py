"""Scoring a model on a COCO split at each image's original size (torch-free): the one loop of every evaluation.

`segtrain evaluate` passes a PyTorch forward pass, `segdeploy evaluate` an onnxruntime or OpenVINO one; both
go through the contract's preprocessing and logits_to_mask, and one confusion matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segtrain.contract import ModelSpec, logits_to_mask, preprocess
from segtrain.data.coco import CocoSplit, DataError
from segtrain.data.images import ImageReadError
from segtrain.metrics import ConfusionMatrix, SegMetrics

LogitsFn = Callable[[np.ndarray], np.ndarray]  # float32 NCHW at the input size -> float32 logits NCHW
TTA_MODES = ("off", "flip")  # test-time augmentation (`--tta`): none, or the mean with the mirror image's logits


def with_tta(predict: LogitsFn, tta: str) -> LogitsFn:
    """`predict` with test-time augmentation: "flip" returns the mean of the logits of the batch and of its
    horizontal mirror (mirrored back), as MMSegmentation's flip TTA does; "off" returns `predict` itself.

    The one definition for `segtrain evaluate` (PyTorch) and `segdeploy evaluate`/`batch` (ONNX), so the two
    agree as closely as their plain logits do."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    if tta == "off":
        return predict

    def flipped(x: np.ndarray) -> np.ndarray:
        plain = np.asarray(predict(x), dtype=np.float32)
        mirror = np.asarray(predict(np.ascontiguousarray(x[..., ::-1])), dtype=np.float32)[..., ::-1]
        return (plain + mirror) * np.float32(0.5)

    return flipped
# RGB images (decoded at a reduced size when allowed) and their original (height, width) -> class masks of that size
MasksFn = Callable[[list[np.ndarray], list[tuple[int, int]]], list[np.ndarray]]
DEFAULT_SPLIT = "validation"  # what `segtrain evaluate` and `segdeploy evaluate` score without --split
EVALUATE_BATCH_SIZE = 4  # images per model call when a split is scored (both evaluate commands, the bench)


def split_categories(spec: ModelSpec) -> list[int]:
    """The COCO ids a split must be filtered to so its class indices match the model's."""
    return list(spec.coco_ids[1:])


def check_classes(split: CocoSplit, spec: ModelSpec) -> None:
    """DataError unless the split's classes (names, in order) are the model's."""
    if tuple(split.classes) != tuple(spec.classes):
        raise DataError(f"{split.ann_file}: classes {', '.join(split.classes)} differ from the model's "
                        f"{', '.join(spec.classes)} for the same COCO ids")


def open_split_for(spec: ModelSpec, root: str | Path, split: str, **kwargs) -> CocoSplit:
    """`split` of the dataset at `root`, filtered to the model's COCO ids and checked against its classes."""
    coco = CocoSplit.open(root, split, categories=split_categories(spec), **kwargs)
    check_classes(coco, spec)
    return coco


def _chunks(n: int, size: int) -> Iterator[list[int]]:
    for start in range(0, n, size):
        yield list(range(start, min(n, start + size)))


def evaluate_split(predict: LogitsFn | None, split: CocoSplit, spec: ModelSpec, batch_size: int = EVALUATE_BATCH_SIZE,
                   limit: int | None = None, progress: bool = False, masks: MasksFn | None = None,
                   reduced: bool = True) -> SegMetrics:
    """Per-class IoU, mIoU and pixel accuracy of `predict` over `split` at original sizes.

    `predict` maps float32 NCHW (the spec's input size) to float32 logits NCHW, each image stretched into
    one input; `masks`, when given instead, makes the masks itself (segdeploy's Predictor, which may tile,
    passes it; `reduced=False` then when it needs the photos at their full size). An image that
    cannot be decoded is skipped and named in the result's `skipped` (the read policy of
    segtrain.data.images), after the images the split itself left out (missing, outside the image
    folder, too large: `split.skipped`); DataError when none can be read. Images only feed the model here, so a JPEG is
    decoded at a reduced size when that still covers the input size; masks are scored at the
    size labels.json gives.
    """
    check_classes(split, spec)
    n = len(split) if limit is None else min(limit, len(split))
    cm = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    skipped: list[tuple[str, str]] = []  # decoding failures; the split's own come first in the result

    def load(i: int) -> tuple[np.ndarray, np.ndarray] | ImageReadError:
        try:
            return split.load_image(i, min_size=spec.input_size if reduced else None), split.load_mask(i)
        except ImageReadError as e:
            return e

    def stretched(images: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        return [logits_to_mask(out, size) for out, size in zip(predict(preprocess(images, spec)), sizes, strict=True)]

    make_masks = masks or stretched

    with ThreadPoolExecutor(max_workers=2) as pool:
        bar = tqdm(total=n, desc=f"evaluate {split.name}", unit="img", disable=None if progress else True)
        pending = pool.map(load, range(n))  # decoding overlaps inference
        for idx in _chunks(n, batch_size):
            samples = []
            for i in idx:
                sample = next(pending)
                if isinstance(sample, ImageReadError):
                    path = str(split.image_path(i))
                    skipped.append((path, str(sample).removeprefix(f"{path}: ")))
                else:
                    samples.append((split.records[i], *sample))
            if samples:
                found = make_masks([im for _, im, _ in samples], [(rec.height, rec.width) for rec, _, _ in samples])
                for (_, _, truth), mask in zip(samples, found, strict=True):
                    cm.update(truth, mask)
            bar.update(len(idx))
        bar.close()
    if len(skipped) == n:
        raise DataError(f"{split.ann_file}: none of the {n} images could be read (first: {skipped[0][0]}: "
                        f"{skipped[0][1]})")
    return dataclasses.replace(cm.result(spec.classes), images=n - len(skipped),
                               skipped=(*split.skipped, *skipped))

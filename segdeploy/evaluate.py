"""`segdeploy evaluate`: per-class IoU and mIoU of an ONNX model on a COCO split (torch-free).

Same scoring as `segtrain evaluate` (segtrain.evaluation.evaluate_split: the contract's
preprocessing, logits resized to each image's original size, one confusion matrix), with
onnxruntime as the predictor and the spec read from the model file.
"""

from __future__ import annotations

from pathlib import Path

from segtrain.coco import CocoSplit, DataError
from segtrain.evaluation import evaluate_split, split_categories
from segtrain.metrics import SegMetrics


def evaluate_onnx(model_path: str | Path, data: str | Path, split: str = "test", batch_size: int = 4,
                  provider: str = "auto", threads: int | None = None, limit: int | None = None,
                  progress: bool = False) -> tuple[SegMetrics, CocoSplit]:
    """Score the model on `split` of the dataset at `data`; the split is filtered to the model's classes."""
    from segdeploy.runtime import OnnxModel

    model = OnnxModel(model_path, provider=provider, threads=threads)
    coco = CocoSplit.open(data, split, categories=split_categories(model.spec))
    if tuple(coco.classes) != model.spec.classes:
        raise DataError(f"{coco.ann_file}: its category names {list(coco.classes[1:])} differ from the model's "
                         f"{list(model.spec.classes[1:])} for the same COCO ids")
    return evaluate_split(model.run, coco, model.spec, batch_size=batch_size, limit=limit, progress=progress), coco

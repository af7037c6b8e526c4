"""`segdeploy evaluate`: per-class IoU and mIoU of an ONNX model on a COCO split (torch-free).

Same scoring as `segtrain evaluate` (segtrain.evaluation.evaluate_split: the contract's
preprocessing, logits resized to each image's original size, one confusion matrix), with
onnxruntime as the predictor and the spec read from the model file.
"""

from __future__ import annotations

from pathlib import Path

from segdeploy.infer.runtime import open_model
from segtrain.coco import CocoSplit
from segtrain.evaluation import DEFAULT_SPLIT, evaluate_split, open_split_for
from segtrain.metrics import SegMetrics


def evaluate_onnx(model_path: str | Path, data: str | Path, split: str = DEFAULT_SPLIT, batch_size: int = 4,
                  provider: str = "auto", threads: int | None = None, limit: int | None = None,
                  progress: bool = False) -> tuple[SegMetrics, CocoSplit]:
    """Score the model on `split` of the dataset at `data`; the split is filtered to the model's classes."""
    model = open_model(model_path, provider=provider, threads=threads)
    coco = open_split_for(model.spec, data, split)
    return evaluate_split(model.run, coco, model.spec, batch_size=batch_size, limit=limit, progress=progress), coco

"""`segdeploy evaluate`: per-class IoU and mIoU of an ONNX model on a COCO split (torch-free).

Same scoring as `segtrain evaluate` (segtrain.evaluation.evaluate_split: the contract's
preprocessing, logits resized to each image's original size, one confusion matrix), with
the model (onnxruntime or OpenVINO, segdeploy.infer.runtime.open_model) as the predictor and the
spec read from the model file.
"""

from __future__ import annotations

from pathlib import Path

from segdeploy.infer.runtime import Model, open_model
from segtrain.data.coco import CocoSplit
from segtrain.evaluation import DEFAULT_SPLIT, evaluate_split, open_split_for
from segtrain.metrics import SegMetrics


def evaluate_model(model: Model, data: str | Path, split: str = DEFAULT_SPLIT, batch_size: int = 4,
                   limit: int | None = None, progress: bool = False) -> tuple[SegMetrics, CocoSplit]:
    """Score an opened model on `split` of the dataset at `data`; the split is filtered to the model's classes."""
    coco = open_split_for(model.spec, data, split)
    return evaluate_split(model.run, coco, model.spec, batch_size=batch_size, limit=limit, progress=progress), coco


def evaluate_onnx(model_path: str | Path, data: str | Path, split: str = DEFAULT_SPLIT, batch_size: int = 4,
                  provider: str = "auto", threads: int | None = None, limit: int | None = None,
                  progress: bool = False, runtime: str = "auto") -> tuple[SegMetrics, CocoSplit]:
    """Open the model file with `runtime` and score it (evaluate_model)."""
    model = open_model(model_path, runtime=runtime, provider=provider, threads=threads)
    return evaluate_model(model, data, split, batch_size=batch_size, limit=limit, progress=progress)

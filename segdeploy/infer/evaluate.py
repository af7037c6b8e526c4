"""`segdeploy evaluate`: per-class IoU and mIoU of an ONNX model on a COCO split (torch-free), with the scoring
of `segtrain evaluate` (segtrain.evaluation) and the model run by onnxruntime or OpenVINO (runtime.open_model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segdeploy.infer.runtime import PROVIDER_CHOICES, RUNTIME_CHOICES, Model, open_model
from segtrain.common.settings import COMMAND_LINE, Checked, at_least, non_empty, one_of, setting
from segtrain.data.coco import CocoSplit
from segtrain.evaluation import DEFAULT_SPLIT, EVALUATE_BATCH_SIZE, evaluate_split, open_split_for
from segtrain.metrics import SegMetrics


@dataclass(frozen=True)
class ModelEvaluateConfig(Checked):
    """The settings of `segdeploy evaluate`, by the names of its flags."""

    model: Path = setting()
    data: Path = setting(Path("data"))  # the dataset root
    split: str = setting(DEFAULT_SPLIT, rule=non_empty)
    batch_size: int = setting(EVALUATE_BATCH_SIZE, rule=at_least(1))
    runtime: str = setting("auto", rule=one_of(RUNTIME_CHOICES))
    provider: str = setting("auto", rule=one_of(PROVIDER_CHOICES))
    threads: int | None = setting(None, rule=at_least(1))  # None: the runtime's own choice
    limit: int | None = setting(None, rule=at_least(1))  # images scored; None: all of the split

    NAMED_BY = COMMAND_LINE


@dataclass(frozen=True)
class Evaluation:
    metrics: SegMetrics
    split: CocoSplit
    model: Model  # the opened model: its runtime, providers and why that runtime


def evaluate_onnx(config: ModelEvaluateConfig, progress: bool = False) -> Evaluation:
    """Open the model file as `config` says and score it on the split (evaluate_model)."""
    model = open_model(config.model, runtime=config.runtime, provider=config.provider, threads=config.threads)
    metrics, split = evaluate_model(model, config.data, config.split, config.batch_size, config.limit, progress)
    return Evaluation(metrics, split, model)


def evaluate_model(model: Model, data: str | Path, split: str = DEFAULT_SPLIT, batch_size: int = EVALUATE_BATCH_SIZE,
                   limit: int | None = None, progress: bool = False) -> tuple[SegMetrics, CocoSplit]:
    """Score an opened model on `split` of the dataset at `data`; the split is filtered to the model's classes."""
    coco = open_split_for(model.spec, data, split)
    return evaluate_split(model.run, coco, model.spec, batch_size=batch_size, limit=limit, progress=progress), coco

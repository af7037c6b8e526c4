"""`segdeploy evaluate`: per-class IoU and mIoU of an ONNX model on a COCO split (torch-free), with the scoring
of `segtrain evaluate` (segtrain.evaluation) and the model run by the Predictor, as `segdeploy batch` runs it
(onnxruntime or OpenVINO; stretched or tiled by the same --tile), so both score the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.infer.predictor import InferenceError, OutputError, Predictor
from segdeploy.infer.runtime import PROVIDER_CHOICES, RUNTIME_CHOICES, Model
from segdeploy.infer.tiling import DEFAULT_TILE_OVERLAP, MAX_TILE_OVERLAP, TILE_AUTO, TILE_OFF, TileError, parse_tile
from segtrain.common.files import folder_problem
from segtrain.common.settings import (
    COMMAND_LINE,
    RUN_BATCH_SIZE,
    THREADS,
    Checked,
    at_least,
    between,
    non_empty,
    one_of,
    setting,
)
from segtrain.data.coco import CocoSplit, DataError
from segtrain.evaluation import DEFAULT_SPLIT, EVALUATE_BATCH_SIZE, TTA_MODES, evaluate_split, open_split_for
from segtrain.metrics import SegMetrics

DEFAULT_DATA = Path("data")


def _tile(value: object) -> str | None:
    try:
        parse_tile(value)
    except TileError:
        return f"must be {TILE_AUTO}, {TILE_OFF} or a tile size in pixels, got {value!r}"
    return None


@dataclass(frozen=True)
class ModelEvaluateConfig(Checked):
    """The settings of `segdeploy evaluate`, by the names of its flags."""

    model: Path = setting()
    data: Path = setting(DEFAULT_DATA)  # the dataset root
    split: str = setting(DEFAULT_SPLIT, rule=non_empty)
    batch_size: int = setting(EVALUATE_BATCH_SIZE, rule=RUN_BATCH_SIZE)
    runtime: str = setting("auto", rule=one_of(RUNTIME_CHOICES))
    provider: str = setting("auto", rule=one_of(PROVIDER_CHOICES))
    threads: int | None = setting(None, rule=THREADS)  # None: the runtime's own choice
    limit: int | None = setting(None, rule=at_least(1))  # images scored; None: all of the split
    tile: str | int = setting(TILE_AUTO, rule=_tile)  # as `segdeploy batch --tile`
    tile_overlap: float = setting(DEFAULT_TILE_OVERLAP, rule=between(0, MAX_TILE_OVERLAP))
    tta: str = setting("off", rule=one_of(TTA_MODES))  # as `segdeploy batch --tta`

    NAMED_BY = COMMAND_LINE

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "tile", parse_tile(self.tile))


@dataclass(frozen=True)
class Evaluation:
    metrics: SegMetrics
    split: CocoSplit
    model: Model  # the opened model: its runtime, providers and why that runtime


def evaluate_onnx(config: ModelEvaluateConfig, progress: bool = False) -> Evaluation:
    """Open the model file as `config` says and score it on the split through the Predictor (evaluate_predictor)."""
    predictor = Predictor(config.model, provider=config.provider, threads=config.threads, runtime=config.runtime,
                          tile=config.tile, tile_overlap=config.tile_overlap, batch_size=config.batch_size,
                          tta=config.tta)
    metrics, split = evaluate_predictor(predictor, config.data, config.split, config.limit, progress)
    return Evaluation(metrics, split, predictor.model)


def evaluate_predictor(predictor: Predictor, data: str | Path, split: str = DEFAULT_SPLIT, limit: int | None = None,
                       progress: bool = False) -> tuple[SegMetrics, CocoSplit]:
    """Score a Predictor on `split` of the dataset at `data`, each image made into a mask as `segdeploy batch`
    makes it (stretched or tiled); a JPEG is decoded at a reduced size only when the photos are stretched."""
    if (problem := folder_problem(data, "dataset folder")) is not None:
        raise DataError(f"{data}: {problem}; --data names the dataset root (default: {DEFAULT_DATA})")
    coco = open_split_for(predictor.spec, data, split)

    def masks(images: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        prepared = [predictor.prepare(image, size=size) for image, size in zip(images, sizes, strict=True)]
        try:
            return [prediction.mask for prediction in predictor.infer(prepared)]
        except OutputError as e:  # NaN scores: no mask to score, so no score for the model
            raise InferenceError(f"{predictor.path}: {e} on an image of the split; it cannot be scored") from e

    metrics = evaluate_split(None, coco, predictor.spec, batch_size=predictor.batch_size, limit=limit,
                             progress=progress, masks=masks, reduced=not predictor.tiles)
    return metrics, coco


def evaluate_model(model: Model, data: str | Path, split: str = DEFAULT_SPLIT, batch_size: int = EVALUATE_BATCH_SIZE,
                   limit: int | None = None, progress: bool = False) -> tuple[SegMetrics, CocoSplit]:
    """Score an opened model on `split` of the dataset at `data`; the split is filtered to the model's classes."""
    coco = open_split_for(model.spec, data, split)
    return evaluate_split(model.run, coco, model.spec, batch_size=batch_size, limit=limit, progress=progress), coco

"""What a training run writes into its folder after every epoch (the main process only; the names are in
segtrain.training.runs): last.pth, metrics.csv and the curves every epoch, best_model.pth, confusion.png and
samples.png when validation mIoU improved. Every file is written atomically, so an interrupted run leaves the
previous epoch's files whole.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segtrain.common.files import atomic_write_bytes, atomic_write_text
from segtrain.contract import ModelSpec
from segtrain.metrics import ConfusionMatrix
from segtrain.training.checkpoint import Checkpoint, TrainingState
from segtrain.training.config import TrainConfig
from segtrain.training.runs import BEST_MODEL, LAST, METRICS_CSV, SAMPLES_PNG
from segtrain.training.samples import Samples, compose, predict_masks
from segtrain.training.tensorboard_log import TensorBoardLog


def miou_rank(miou: float) -> float:
    """An mIoU to compare epochs by: NaN (nothing to score) ranks as -1, below any real score."""
    return miou if math.isfinite(miou) else -1.0


def best_epoch(history: Sequence[dict]) -> int | None:
    """The epoch with the highest finite validation mIoU; of epochs tied on it, the lowest validation loss
    (a model that still predicts only background ties at every epoch), then the first. None before any."""
    def rank(row: dict) -> tuple[float, float]:
        loss = row["val_loss"]
        return row["miou"], -loss if math.isfinite(loss) else -math.inf

    scored = [r for r in history if math.isfinite(r["miou"])]
    return max(scored, key=rank)["epoch"] if scored else None


def history_row(epoch: int, train_loss: float, val_loss: float, cm: ConfusionMatrix, spec: ModelSpec,
                lr: float) -> dict[str, Any]:
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "miou": cm.miou(),
           "pixel_accuracy": cm.pixel_accuracy(), "lr": lr}
    row.update({f"iou_{name}": float(v) for name, v in zip(spec.classes, cm.iou(), strict=True)})
    return row


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


@dataclass
class EpochResult:
    """One epoch as the outputs need it; `state` (with the history so far) is what last.pth adds for --resume."""

    row: dict[str, Any]
    cm: ConfusionMatrix
    improved: bool
    state: TrainingState

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history


class RunOutputs:
    """The files of one run's folder; `write(...)` after every epoch."""

    def __init__(self, folder: Path, cfg: TrainConfig, spec: ModelSpec, samples: Samples | None,
                 predict: Callable[[np.ndarray], np.ndarray], tensorboard: TensorBoardLog | None) -> None:
        self.folder, self.cfg, self.spec = Path(folder), cfg, spec
        self.samples, self.predict, self.tensorboard = samples, predict, tensorboard

    def write(self, weights: dict[str, Any], result: EpochResult) -> None:
        from segtrain.training.plots import write_confusion, write_curves

        row, spec = result.row, self.spec
        metrics = {"miou": row["miou"], "val_loss": row["val_loss"], "train_loss": row["train_loss"],
                   "pixel_accuracy": row["pixel_accuracy"],
                   "iou": {n: float(v) for n, v in zip(spec.classes, result.cm.iou(), strict=True)},
                   "confusion": result.cm.mat.tolist()}
        ckpt = Checkpoint(spec=spec, model=weights, config=self.cfg.to_dict(), epoch=row["epoch"], metrics=metrics)
        if result.improved:
            ckpt.save(self.folder / BEST_MODEL)
        dataclasses.replace(ckpt, training=result.state).save(self.folder / LAST)
        write_metrics_csv(result.history, self.folder / METRICS_CSV)
        write_curves(result.history, spec, best_epoch(result.history), self.folder)
        if self.tensorboard is not None:
            self.tensorboard.epoch(row)
        if result.improved:
            write_confusion(result.cm.mat, spec.classes, row["epoch"], self.folder)
            self.write_samples(row)

    def write_samples(self, row: dict[str, Any]) -> None:
        if not self.samples or not self.samples.photos:
            return
        predictions = predict_masks(self.predict, self.samples.photos, self.spec)
        miou = f"{100 * row['miou']:.1f}%" if math.isfinite(row["miou"]) else "n/a"
        picture = compose(self.samples, predictions, self.spec, f"epoch {row['epoch']}, mIoU {miou}")
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, format="PNG", optimize=True)
        atomic_write_bytes(self.folder / SAMPLES_PNG, lambda f: f.write(buf.getvalue()))
        if self.tensorboard is not None:
            self.tensorboard.samples(picture, row["epoch"])

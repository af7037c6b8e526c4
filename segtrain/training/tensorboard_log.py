"""Optional TensorBoard logging (`--tensorboard`): per-epoch scalars and the samples picture.

The `tensorboard` package is not a dependency; it is imported only when asked for, and a missing
package is an input error at the start of the run (before any training), not after an epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from segtrain.common.errors import InputError

LOG_SUBDIR = "tensorboard"


class TensorBoardError(InputError):
    """--tensorboard without the tensorboard package."""


def summary_writer_class() -> type:
    """torch's SummaryWriter; TensorBoardError (an input error) when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise TensorBoardError("--tensorboard needs the tensorboard package, which is not installed "
                               f"({e}); `pip install tensorboard`, or leave --tensorboard out") from e
    return SummaryWriter


def require_tensorboard() -> None:
    """TensorBoardError now when --tensorboard cannot work here (before any training)."""
    summary_writer_class()


class TensorBoardLog:
    """Writes <run>/tensorboard/ event files: loss, mIoU, pixel accuracy, lr, per-class IoU, samples."""

    def __init__(self, run_dir: Path) -> None:
        self.writer = summary_writer_class()(log_dir=str(Path(run_dir) / LOG_SUBDIR))

    def epoch(self, row: dict) -> None:
        step = int(row["epoch"])
        for key, tag in (("train_loss", "loss/train"), ("val_loss", "loss/validation"), ("miou", "miou"),
                         ("pixel_accuracy", "pixel_accuracy"), ("lr", "lr")):
            self.writer.add_scalar(tag, row[key], step)
        for key, value in row.items():
            if key.startswith("iou_") and math.isfinite(value):
                self.writer.add_scalar(f"iou/{key[4:]}", value, step)
        self.writer.flush()

    def samples(self, picture: np.ndarray, epoch: int) -> None:
        self.writer.add_image("samples", picture, epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

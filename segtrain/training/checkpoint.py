"""Checkpoints: the one type for `best_model.pth` and `last.pth`, loadable with `torch.load(weights_only=True)`.

On disk (version 1) a checkpoint is a dict of tensors and plain values: "format", "version",
"spec" (ModelSpec.to_dict: rebuilds the model and its pre/post-processing), "model" (the state
dict), "config" (the resolved training settings), "epoch", "metrics" (validation, that epoch);
a last.pth adds the TrainingState's keys beside them, for --resume. Torch is imported only to
save and load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segtrain.common.errors import InputError
from segtrain.common.files import (
    UnsafeLoadError,
    atomic_write_bytes,
    file_sha256,
    folder_problem,
    looks_like_onnx,
    safe_torch_load,
)
from segtrain.contract import ModelSpec
from segtrain.data.coco import DataError

FORMAT = "segtrain-checkpoint"
OPTIONAL = ("aux_head",)  # TrainingState fields a resumable last.pth may lack
VERSION = 1


class CheckpointError(InputError):
    """A checkpoint that is missing, corrupt, unsafe or not ours; the message names the file."""


@dataclass
class TrainingState:
    """What a last.pth adds for --resume: optimizer, grad-scaler and RNG state, the history (one row per
    epoch, the columns of metrics.csv), the best validation mIoU so far (-1 before any) and, with
    --aux-loss, the auxiliary head (segtrain.models.auxiliary).

    Read from a file, a key that is not there is None (`missing` names them); what the values hold is
    checked by segtrain.training.resume before any of it is used.
    """

    optimizer: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None
    best_miou: float | None = None
    aux_head: dict[str, Any] | None = None  # the auxiliary head's weights, in runs trained with --aux-loss

    def missing(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is None and f.name not in OPTIONAL]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_checkpoint(cls, raw: dict[str, Any]) -> TrainingState | None:
        """The state stored beside a checkpoint's other keys; None when it holds none of it (best_model.pth)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: raw[k] for k in names if k in raw}) if any(k in raw for k in names) else None


@dataclass
class Checkpoint:
    """A trained model's weights with its spec, the config that trained it, its epoch and metrics.

    `training` is a last.pth's TrainingState (None in best_model.pth). `path` is where it was
    loaded from or saved to.
    """

    spec: ModelSpec
    model: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    training: TrainingState | None = None
    path: Path | None = None

    @property
    def resumable(self) -> bool:
        return self.training is not None and not self.training.missing()

    @property
    def miou(self) -> float | None:
        value = self.metrics.get("miou")
        return float(value) if isinstance(value, (int, float)) else None

    def sha256(self) -> str:
        if self.path is None:
            raise ValueError("a checkpoint that was never saved has no file hash")
        return file_sha256(self.path)

    def to_dict(self) -> dict[str, Any]:
        training = self.training.to_dict() if self.training is not None else {}
        return {"format": FORMAT, "version": VERSION, "spec": self.spec.to_dict(), "model": self.model,
                "config": self.config, "epoch": self.epoch, "metrics": self.metrics, **training}

    def save(self, path: str | Path) -> Path:
        """Write atomically (a temporary file renamed into place); returns the path."""
        import torch

        path = Path(path)
        payload = self.to_dict()
        atomic_write_bytes(path, lambda f: torch.save(payload, f))
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> Checkpoint:
        """Load and validate a checkpoint; refuses pickles that would run code."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: {'not a regular file' if path.exists() else 'checkpoint not found'}")
        try:
            raw = safe_torch_load(path, map_location=map_location)
        except UnsafeLoadError as e:
            if looks_like_onnx(path):
                raise CheckpointError(f"{path}: an ONNX model, not a segtrain checkpoint; ONNX models are scored "
                                      f"with `segdeploy evaluate {path}` (and described by `segdeploy info`)") from e
            raise CheckpointError(f"{path}: {e}") from e
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a segtrain checkpoint (no '{FORMAT}' format marker)")
        if raw.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint version {raw.get('version')} is not supported "
                                  f"(expected {VERSION})")
        if not isinstance(raw.get("model"), dict) or "spec" not in raw:
            raise CheckpointError(f"{path}: checkpoint lacks model weights or model spec")
        try:
            spec = ModelSpec.from_dict(raw["spec"])
        except (ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path}: invalid model spec ({e})") from e
        config, metrics = raw.get("config"), raw.get("metrics")
        epoch = raw.get("epoch")
        return cls(spec=spec, model=raw["model"], config=config if isinstance(config, dict) else {},
                   epoch=epoch if isinstance(epoch, int) else None,
                   metrics=metrics if isinstance(metrics, dict) else {},
                   training=TrainingState.from_checkpoint(raw), path=path)

    def data_root(self, override: str | Path | None = None, purpose: str = "this") -> Path:
        """The dataset to use with this checkpoint: `override` (--data), else the one it was trained on.

        The one rule for every command. DataError when neither names an existing folder; the
        message says where the path came from and that --data fixes it.
        """
        if override is not None:
            root = Path(override)
            if (problem := folder_problem(root, "dataset folder")) is not None:
                raise DataError(f"{root}: {problem} (given with --data)")
            return root
        recorded = self.config.get("data")
        where = self.path or "the checkpoint"
        if not recorded:
            raise DataError(f"{where}: records no dataset; {purpose} needs --data DIR")
        root = Path(recorded)
        if (problem := folder_problem(root, "dataset folder")) is not None:
            raise DataError(f"{root}: {problem} (recorded in {where} as the training data); "
                            "pass --data DIR")
        return root

"""`--resume`: a last.pth's TrainingState, checked before any of it is used, and put back.

A last.pth can load safely and still be unusable for resuming: no config, a config with keys
this version does not know, weights of another shape, an optimizer, grad-scaler or RNG state
that is not what training saved, a history that is not one row per epoch. Each is a one-line
CheckpointError naming the file and what is wrong, raised before the run writes anything.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segtrain.contract import ModelSpec
from segtrain.training.checkpoint import Checkpoint, CheckpointError, TrainingState
from segtrain.training.config import TrainConfig
from segtrain.training.precision import Precision
from segtrain.training.runs import LAST

HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "miou", "pixel_accuracy", "lr")


def rng_state() -> dict[str, Any]:
    """Global RNG states in a form `torch.load(weights_only=True)` accepts."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    _, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_extra": [int(pos), int(has_gauss), float(gauss)],
             "python": list(py_state), "python_gauss": py_gauss}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, gauss = state["numpy_extra"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def history_keys(spec: ModelSpec) -> tuple[str, ...]:
    """The columns of a history row (and of metrics.csv) for a model's classes."""
    return (*HISTORY_KEYS, *(f"iou_{name}" for name in spec.classes))


def open_resume(source: str | Path | Checkpoint) -> Checkpoint:
    """A checkpoint to resume from, its training state checked for shape (not yet for fit)."""
    ckpt = source if isinstance(source, Checkpoint) else Checkpoint.load(source)
    path = ckpt.path or source
    missing = ckpt.training.missing() if ckpt.training is not None else TrainingState().missing()
    if missing:
        raise CheckpointError(f"{path}: cannot resume from it (lacks {', '.join(missing)}; use the run's {LAST})")
    if not ckpt.config:
        raise CheckpointError(f"{path}: holds no training config, so the run cannot be resumed from it")
    if ckpt.epoch is None or ckpt.epoch < 1:
        raise CheckpointError(f"{path}: records no finished epoch, so the run cannot be resumed from it")
    history, best = ckpt.training.history, ckpt.training.best_miou
    keys = history_keys(ckpt.spec)
    rows_ok = isinstance(history, list) and len(history) == ckpt.epoch and all(
        isinstance(r, dict) and r.get("epoch") == i + 1 and all(_number(r.get(k)) for k in keys)
        for i, r in enumerate(history))
    if not rows_ok:
        raise CheckpointError(f"{path}: its training history is not one row per epoch 1..{ckpt.epoch} "
                              f"with {', '.join(keys[:4])}, ...; cannot resume from it")
    if not _number(best):
        raise CheckpointError(f"{path}: its best mIoU is not a number ({best!r}); cannot resume from it")
    return ckpt


def resume_settings(ckpt: Checkpoint) -> tuple[str, dict[str, Any]]:
    """The first settings layer of a resumed run: the checkpoint's config, without the folder stored in it."""
    return f"{ckpt.path} (its stored config)", {k: v for k, v in ckpt.config.items() if k != "out"}


def data_from_checkpoint(cfg: TrainConfig, ckpt: Checkpoint) -> bool:
    """Whether the run's dataset is the one recorded in the resumed checkpoint (not a --data override)."""
    recorded = ckpt.config.get("data")
    return isinstance(recorded, str) and os.path.abspath(recorded) == cfg.data


def restore(ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
            spec: ModelSpec, cfg: TrainConfig, aux_head: nn.Module | None = None) -> None:
    """Load an opened (`open_resume`) checkpoint into model, auxiliary head (--aux-loss), optimizer, grad
    scaler and RNGs."""
    path, state = ckpt.path, ckpt.training
    if ckpt.spec != spec:
        raise CheckpointError(f"{path}: was trained with a different model or data setup ({ckpt.spec.arch}, "
                              f"{ckpt.spec.encoder}, {ckpt.spec.classes}, {ckpt.spec.input_size})")
    stored = ckpt.config.get("optimizer", "adam")  # runs from before --optimizer trained with Adam
    if stored != cfg.optimizer:
        raise CheckpointError(f"{path}: was trained with {stored}, so --optimizer {cfg.optimizer} cannot continue "
                              f"its optimizer state; resume with {stored}, or start a new run from its weights")
    stored_aux = state.aux_head is not None
    if stored_aux != (aux_head is not None):
        raise CheckpointError(f"{path}: was trained {'with' if stored_aux else 'without'} an auxiliary head, so "
                              f"--aux-loss {cfg.aux_loss:g} cannot continue its optimizer state; resume with "
                              f"--aux-loss {'above 0' if stored_aux else '0'}, or start a new run from its weights "
                              "(--init-from)")
    _load(path, "weights do not fit the model", lambda: model.load_state_dict(ckpt.model))
    if aux_head is not None:
        _load(path, "auxiliary head does not fit the model", lambda: aux_head.load_state_dict(state.aux_head))
    _load(path, "optimizer state does not fit the model", lambda: _load_optimizer(optimizer, state.optimizer))
    for group in optimizer.param_groups:  # this run's settings, not the stored ones
        group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay
        if "nesterov" in group:
            group["nesterov"] = cfg.nesterov
    _load(path, "grad-scaler state is unusable", lambda: precision.scaler.load_state_dict(state.scaler))
    _load(path, "RNG state is unusable", lambda: set_rng_state(state.rng))


def _load_optimizer(optimizer: torch.optim.Optimizer, state: Any) -> None:
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                    raise ValueError(f"{name} has shape {tuple(value.shape)} for a parameter of {tuple(p.shape)}")


def _load(path: Path | None, problem: str, action) -> None:
    try:
        action()
    except Exception as e:  # a malformed state fails anywhere inside torch, numpy or random
        detail = " ".join(line.strip() for line in str(e).strip().splitlines()[:2])[:200] or type(e).__name__
        raise CheckpointError(f"{path}: {problem} ({detail}); cannot resume from it") from e


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)

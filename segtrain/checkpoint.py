"""Checkpoints: plain dicts of tensors and values that load with `torch.load(weights_only=True)`.

Layout (version 1)::

    {"format": "segtrain-checkpoint", "version": 1,
     "spec": ModelSpec.to_dict(),          # rebuilds the model and its pre/post-processing
     "model": state_dict, "config": {...}, # resolved training config (plain values)
     "epoch": int, "metrics": {...},       # validation metrics of that epoch
     # last.pth only, for --resume:
     "optimizer": ..., "scaler": ..., "rng": ..., "history": [...], "best_miou": float}
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from segtrain.contract import ModelSpec
from segtrain.fileio import atomic_write_bytes  # noqa: F401  (re-exported for callers)

FORMAT = "segtrain-checkpoint"
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that is missing, corrupt, unsafe or not ours; the message names the file."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    import torch

    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint; refuses pickles that would run code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if unsafe:  # torch's weights-only unpickler met a class or function it would have to run
            raise CheckpointError(f"{path}: refused, loading it would run code ({unsafe.group(1)}); "
                                  "not a plain weights checkpoint") from e
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or not a PyTorch file)") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated: {type(e).__name__})") from e
    except Exception as e:  # garbage bytes can trip the unpickler anywhere (IndexError, KeyError, ...)
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or not a PyTorch file)") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a segtrain checkpoint (no '{FORMAT}' format marker)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} is not supported (expected {VERSION})")
    if "model" not in ckpt or "spec" not in ckpt:
        raise CheckpointError(f"{path}: checkpoint lacks model weights or model spec")
    try:
        ckpt["spec"] = ModelSpec.from_dict(ckpt["spec"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid model spec ({e})") from e
    return ckpt


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(path: str | Path, device: str = "cpu") -> tuple[Any, ModelSpec, dict[str, Any]]:
    """(model in eval mode on `device`, its spec, the checkpoint dict): the one place models are rebuilt.

    The architecture comes from the spec (random encoder init, no download), then the stored
    weights are loaded strictly; weights that do not fit the spec are a CheckpointError.
    """
    from segtrain.models import ModelError, build_model

    ckpt = load_checkpoint(path, map_location=device)
    spec = ckpt["spec"]
    try:
        model = build_model(spec, encoder_weights="none")
    except ModelError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model ({e})") from e
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit a {spec.arch}/{spec.encoder} model "
                              f"({' '.join(first[:2])[:200]})") from e
    return model.to(device).eval(), spec, ckpt

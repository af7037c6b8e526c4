"""`segtrain evaluate`: a checkpoint scored on a COCO split with the shared evaluation code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segtrain.checkpoint import load_model
from segtrain.coco import CocoSplit
from segtrain.evaluation import Predictor, evaluate_split, split_categories
from segtrain.metrics import SegMetrics
from segtrain.precision import resolve_device


def torch_predictor(model: torch.nn.Module, device: torch.device) -> Predictor:
    """float32 NCHW numpy -> float32 logits numpy, in full precision."""

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return predict


def evaluate_checkpoint(path: str | Path, data: str | Path | None, split: str, batch_size: int = 4,
                        device: str = "auto", progress: bool = False) -> SegMetrics:
    dev = resolve_device(device)
    model, spec, ckpt = load_model(path, device=str(dev))
    root = data or ckpt.get("config", {}).get("data") or "data"
    coco = CocoSplit.open(root, split, split_categories(spec))
    return evaluate_split(torch_predictor(model, dev), coco, spec, batch_size=batch_size, progress=progress)

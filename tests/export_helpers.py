"""Checkpoints for the export tests: a small model, optionally trained a few steps on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segtrain.checkpoint import save_checkpoint
from segtrain.coco import CocoSplit
from segtrain.contract import build_spec, preprocess, resize_mask
from segtrain.evaluation import split_categories
from segtrain.models import build_model


def train_steps(model: torch.nn.Module, split: CocoSplit, spec, steps: int, images: int = 4) -> float:
    """A few Adam steps on the first `images` images of `split` (enough to move BN stats and logits)."""
    x = torch.from_numpy(preprocess([split.load_image(i) for i in range(images)], spec))
    y = torch.from_numpy(np.stack([resize_mask(split.load_mask(i), spec.input_size) for i in range(images)])).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y, ignore_index=spec.ignore_index)
        loss.backward()
        opt.step()
    model.eval()
    return loss.item()


def make_checkpoint(path: Path, arch: str, encoder: str, size: int, data: Path | None = None,
                    steps: int = 0, seed: int = 0, epoch: int = 3, miou: float = 0.25) -> Path:
    """Save a checkpoint as training does (spec, weights, epoch, metrics, config with the data root)."""
    torch.manual_seed(seed)
    spec = build_spec(arch, encoder, image_size=size)
    model = build_model(spec, encoder_weights="none")
    if steps:
        train_steps(model, CocoSplit.open(data, "train", categories=split_categories(spec)), spec, steps)
    save_checkpoint(path, {"spec": spec.to_dict(), "model": model.state_dict(), "epoch": epoch,
                           "metrics": {"miou": miou, "iou": {c: miou for c in spec.classes}, "val_loss": 1.0},
                           "config": {"data": str(data) if data else None, "image_size": size, "model": arch}})
    return path

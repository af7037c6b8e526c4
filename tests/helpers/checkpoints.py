"""The one checkpoint builder of the tests (the `make_checkpoint` fixture of conftest.py hands it out)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from segtrain.contract import build_spec, preprocess, resize_mask
from segtrain.data.coco import CocoSplit
from segtrain.evaluation import open_split_for
from segtrain.models import build_model
from segtrain.training.checkpoint import Checkpoint


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


def build_checkpoint(path: Path, arch: str = "deeplab", encoder: str = "resnet18", size: int = 64,
                     data: Path | None = None, steps: int = 0, seed: int = 0, epoch: int = 3, miou: float = 0.25,
                     prepare: Callable[[torch.nn.Module], None] | None = None) -> Path:
    """Save a checkpoint as training does: spec, weights, epoch, metrics, config recording `data` (absolute).

    `steps` trains a few Adam steps on `data`'s train split; `prepare` may change the model first.
    """
    torch.manual_seed(seed)
    spec = build_spec(arch, encoder, image_size=size)
    model = build_model(spec, encoder_weights="none")
    if prepare is not None:
        prepare(model)
    if steps:
        train_steps(model, open_split_for(spec, data, "train"), spec, steps)
    config = {"data": str(Path(data).resolve()) if data else None, "image_size": size, "model": arch}
    metrics = {"miou": miou, "iou": {c: miou for c in spec.classes}, "val_loss": 1.0}
    Checkpoint(spec=spec, model=model.eval().state_dict(), config=config, epoch=epoch, metrics=metrics).save(path)
    return path

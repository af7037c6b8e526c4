"""`segtrain fit`: training with per-epoch validation, best-mIoU checkpoints, plots and resume."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from segtrain.checkpoint import TRAINING_KEYS, Checkpoint, CheckpointError
from segtrain.coco import CocoSplit
from segtrain.config import TrainConfig
from segtrain.contract import ModelSpec, build_spec
from segtrain.dataset import SegmentationDataset
from segtrain.distributed import DistContext, ShardSampler, init_distributed, shutdown_distributed
from segtrain.errors import RunError
from segtrain.fileio import atomic_write_text
from segtrain.losses import SegLoss
from segtrain.metrics import ConfusionMatrix
from segtrain.precision import Precision, choose_precision, resolve_device

Log = Callable[[str], None]


class TrainingError(RunError):
    """Training cannot go on (for example a non-finite loss); finished checkpoints are kept."""


def make_spec(cfg: TrainConfig, split: CocoSplit) -> ModelSpec:
    return build_spec(cfg.model, cfg.encoder, split.categories, cfg.image_size)


def make_loaders(cfg: TrainConfig, spec: ModelSpec, train_split: CocoSplit, val_split: CocoSplit,
                 ctx: DistContext) -> tuple[DataLoader, DataLoader, DistributedSampler]:
    train_ds = SegmentationDataset(train_split, spec, train=True, seed=cfg.seed)
    val_ds = SegmentationDataset(val_split, spec, train=False)
    # DistributedSampler with one replica is a seeded shuffle; under torchrun it also shards.
    sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed)
    common = {"num_workers": cfg.workers, "pin_memory": torch.cuda.is_available(),
              "persistent_workers": False}
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=False,
                              generator=torch.Generator(), **common)
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, sampler=ShardSampler(len(val_ds), ctx), **common)
    return train_loader, val_loader, sampler


def train_one_epoch(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    precision: Precision, ctx: DistContext, epoch: int, progress: bool) -> tuple[float, float]:
    """One pass over the training data; returns (mean loss over ranks, training images/s of all ranks)."""
    model.train()
    total = np.zeros(2)  # loss * images, images
    bar = tqdm(loader, desc=f"epoch {epoch} train", unit="batch", leave=False, disable=None if progress else True)
    t0 = time.perf_counter()
    for step, (x, y, _) in enumerate(bar):
        x, y = x.to(precision.device, non_blocking=True), y.to(precision.device, non_blocking=True)
        with precision.autocast():
            loss = loss_fn(model(x), y)
        if not ctx.all_true(bool(torch.isfinite(loss))):
            raise TrainingError(f"loss became non-finite ({loss.item()}) at epoch {epoch}, step {step + 1}; "
                                "stopped, the checkpoints of earlier epochs are kept")
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        total += (loss.item() * len(x), len(x))
        bar.set_postfix(loss=f"{total[0] / total[1]:.4f}", img_s=f"{total[1] / (time.perf_counter() - t0):.1f}")
    seconds = time.perf_counter() - t0
    total = ctx.all_reduce_sum(total)
    return float(total[0] / max(total[1], 1)), total[1] / max(seconds, 1e-9)


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, precision: Precision, spec: ModelSpec,
             ctx: DistContext, progress: bool) -> tuple[float, ConfusionMatrix]:
    """Validation loss and the confusion matrix at the input size, summed over all ranks."""
    model.eval()
    cm = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    loss_sum = np.zeros(2)
    for x, y, _ in tqdm(loader, desc="validate", unit="batch", leave=False, disable=None if progress else True):
        x, y = x.to(precision.device), y.to(precision.device)
        with precision.autocast():
            logits = model(x)
        valid = int((y != spec.ignore_index).sum())
        if valid:  # mean CE over valid pixels, weighted back to a pixel sum so ranks combine exactly
            loss_sum += (float(loss_fn(logits.float(), y)) * valid, valid)
        cm.update(y.cpu().numpy(), logits.argmax(1).cpu().numpy())
    loss_sum = ctx.all_reduce_sum(loss_sum)
    cm.mat = ctx.all_reduce_sum(cm.mat)
    return float(loss_sum[0] / max(loss_sum[1], 1)), cm


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Run:
    """What one training run holds between epochs."""

    cfg: TrainConfig
    ctx: DistContext
    spec: ModelSpec
    model: nn.Module          # the bare model (checkpoints are written from it)
    net: nn.Module            # what is trained: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    precision: Precision
    loss_fn: nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: DistributedSampler
    state: dict


def prepare(cfg: TrainConfig, ctx: DistContext, resume: str | Path | None, log: Log) -> Run:
    from segtrain.models import build_model

    use_local_gpu = ctx.enabled and cfg.device != "cpu" and torch.cuda.is_available()
    device = resolve_device(f"cuda:{ctx.local_rank}" if use_local_gpu else cfg.device)
    precision = choose_precision(device, cfg.amp)
    train_split = CocoSplit.open(cfg.data, "train", cfg.categories)
    val_split = CocoSplit.open(cfg.data, "validation", cfg.categories)
    for problem in (train_split.problems + val_split.problems) if ctx.is_main else []:
        log(f"warning: {problem}")
    spec = make_spec(cfg, train_split)
    seed_everything(cfg.seed + ctx.rank)
    model = build_model(spec, encoder_weights=cfg.encoder_weights)
    if ctx.enabled and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "history": [], "best_miou": -1.0}
    if resume:
        state = restore(resume, model, optimizer, precision, spec)
    net = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = SegLoss(cfg.loss, spec.ignore_index).to(device)
    train_loader, val_loader, sampler = make_loaders(cfg, spec, train_split, val_split, ctx)
    if ctx.is_main:
        log(f"{cfg.model} ({spec.encoder}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params) "
            f"on {device} ({precision.name}), {ctx.world_size} process(es); {len(train_split)} train / "
            f"{len(val_split)} validation images at {spec.input_size[0]}x{spec.input_size[1]}; writing to {cfg.out}")
    return Run(cfg, ctx, spec, model, net, optimizer, precision, loss_fn, train_loader, val_loader, sampler, state)


def run_epoch(run: Run, epoch: int, progress: bool, log: Log) -> None:
    """Train, validate and (on rank 0) write this epoch's artifacts."""
    t0 = time.perf_counter()
    run.sampler.set_epoch(epoch)
    run.train_loader.dataset.epoch = epoch
    run.train_loader.generator.manual_seed(run.cfg.seed * 7919 + epoch * 31 + run.ctx.rank)
    train_loss, images_per_s = train_one_epoch(run.net, run.train_loader, run.loss_fn, run.optimizer,
                                               run.precision, run.ctx, epoch, progress)
    val_loss, cm = validate(run.net, run.val_loader, run.loss_fn, run.precision, run.spec, run.ctx, progress)
    row = history_row(epoch, train_loss, val_loss, cm, run.spec, run.optimizer.param_groups[0]["lr"])
    run.state["history"].append(row)
    run.state["epoch"] = epoch
    improved = _finite(row["miou"]) > run.state["best_miou"]
    if improved:
        run.state["best_miou"] = _finite(row["miou"])
    if run.ctx.is_main:
        save_epoch(Path(run.cfg.out), run, row, cm, improved)
        log(f"epoch {epoch}/{run.cfg.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
            f"mIoU {100 * row['miou']:.2f}%{' (best)' if improved else ''}, train {images_per_s:.1f} img/s, "
            f"epoch {time.perf_counter() - t0:.0f}s")
    run.ctx.barrier()


def fit(cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True, log: Log = print) -> dict:
    """Train `cfg.model`; returns {"best_miou", "best_epoch", "epochs_run", "out"}."""
    cfg = cfg.resolved()
    ctx = init_distributed(cfg.device)
    try:
        run = prepare(cfg, ctx, resume, log)
        if ctx.is_main:
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(cfg.out) / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        for epoch in range(run.state["epoch"] + 1, cfg.epochs + 1):
            run_epoch(run, epoch, progress, log)
        history = run.state["history"]
        best = max(history, key=lambda r: _finite(r["miou"])) if history else None
        return {"best_miou": run.state["best_miou"], "best_epoch": best["epoch"] if best else None,
                "epochs_run": len(history), "out": cfg.out, "is_main": ctx.is_main}
    finally:
        shutdown_distributed(ctx)


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -1.0


def save_epoch(out: Path, run: Run, row: dict, cm: ConfusionMatrix, improved: bool) -> None:
    """Write best_model.pth (when mIoU improved), last.pth, metrics.csv and the plots."""
    from segtrain.plots import write_plots

    spec, state = run.spec, run.state
    metrics = {"miou": row["miou"], "val_loss": row["val_loss"], "train_loss": row["train_loss"],
               "pixel_accuracy": row["pixel_accuracy"],
               "iou": {n: float(v) for n, v in zip(spec.classes, cm.iou(), strict=True)}}
    best = Checkpoint(spec=spec, model=run.model.state_dict(), config=run.cfg.to_dict(), epoch=row["epoch"],
                      metrics=metrics)
    if improved:
        best.save(out / "best_model.pth")
    training = {"optimizer": run.optimizer.state_dict(), "scaler": run.precision.scaler.state_dict(),
                "rng": rng_state(), "history": state["history"], "best_miou": state["best_miou"]}
    dataclasses.replace(best, training=training).save(out / "last.pth")
    write_metrics_csv(state["history"], out / "metrics.csv")
    write_plots(state["history"], spec.classes, out)


def restore(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
            spec: ModelSpec) -> dict:
    """Load last.pth into model/optimizer/scaler/RNG; returns the loop state to continue from."""
    ckpt = Checkpoint.load(path)
    missing = [k for k in TRAINING_KEYS if k not in ckpt.training]
    if missing:
        raise CheckpointError(f"{path}: cannot resume from it (lacks {', '.join(missing)}; use last.pth)")
    if ckpt.spec != spec:
        raise CheckpointError(f"{path}: was trained with a different model or data setup ({ckpt.spec.arch}, "
                              f"{ckpt.spec.encoder}, {ckpt.spec.classes}, {ckpt.spec.input_size})")
    model.load_state_dict(ckpt.model)
    optimizer.load_state_dict(ckpt.training["optimizer"])
    precision.scaler.load_state_dict(ckpt.training["scaler"])
    set_rng_state(ckpt.training["rng"])
    return {"epoch": int(ckpt.epoch or 0), "history": list(ckpt.training["history"]),
            "best_miou": float(ckpt.training["best_miou"])}

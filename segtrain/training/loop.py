"""`segtrain fit`: training with per-epoch validation, best-mIoU checkpoints, a report, early stop and resume.

Any number of images trains with any batch size on any number of processes: the training loader
drops each share's incomplete last batch (reshuffled every epoch, as torchvision's reference does)
and trains a share smaller than --batch-size as one batch (`make_loaders`); validation scores every
image exactly once (segtrain.training.distributed.ShardSampler, no padding).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from segtrain.common.errors import RunError
from segtrain.common.files import atomic_write_text, folder_problem
from segtrain.common.settings import SettingError
from segtrain.contract import ModelSpec, build_spec
from segtrain.data.coco import CocoSplit, DataError
from segtrain.metrics import ConfusionMatrix
from segtrain.training.checkpoint import Checkpoint, CheckpointError, TrainingState
from segtrain.training.compiling import compiled, require_compile
from segtrain.training.config import TrainConfig
from segtrain.training.dataset import EpochSampler, SegmentationDataset
from segtrain.training.distributed import DistContext, ShardSampler, init_distributed, shutdown_distributed
from segtrain.training.init_from import init_from
from segtrain.training.interrupts import Terminated, files_being_written, signals_stop_training, stop_error
from segtrain.training.losses import SegLoss, WithAuxiliaryLoss
from segtrain.training.optimizers import build_optimizer
from segtrain.training.precision import Precision, choose_precision, portable_state_dict, resolve_device
from segtrain.training.progress import LOG_INTERVAL_S, Progress, resolve_mode
from segtrain.training.resume import data_from_checkpoint, open_resume, restore, rng_state
from segtrain.training.run_files import EpochResult, RunOutputs, best_epoch, history_row, miou_rank
from segtrain.training.runs import BEST_MODEL, CONFIG_JSON, choose_run_folder, claim_run_folder
from segtrain.training.schedule import lr_factor
from segtrain.training.tensorboard_log import TensorBoardLog, require_tensorboard

Log = Callable[[str], None]


class TrainingError(RunError):
    """Training cannot go on (for example a non-finite loss); finished checkpoints are kept."""


def make_spec(cfg: TrainConfig, split: CocoSplit) -> ModelSpec:
    return build_spec(cfg.model, cfg.encoder, split.categories, cfg.image_size)


PREFETCH_BATCHES = 4  # per worker: a few steps of slack when one photo is slow to decode


def make_loaders(cfg: TrainConfig, spec: ModelSpec, train_split: CocoSplit, val_split: CocoSplit,
                 ctx: DistContext, device: torch.device) -> tuple[DataLoader, DataLoader, DistributedSampler]:
    """Training batches of one size on every process (see the module docstring); validation unpadded.

    Workers persist across epochs (no restart, no re-import per epoch) and keep PREFETCH_BATCHES
    batches ready each; on CUDA batches come in pinned memory, so the copy to the GPU overlaps compute.
    """
    train_ds = SegmentationDataset(train_split, spec, train=True, seed=cfg.seed, augment=cfg.augment)
    val_ds = SegmentationDataset(val_split, spec, train=False)
    # DistributedSampler with one replica is a seeded shuffle; under torchrun it also shards, padding
    # the shares to equal length so every process runs the same number of steps.
    sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed)
    common = {"num_workers": cfg.workers, "pin_memory": device.type == "cuda"}
    if cfg.workers:
        common |= {"persistent_workers": True, "prefetch_factor": PREFETCH_BATCHES}
    batch = min(cfg.batch_size, len(sampler))
    train_loader = DataLoader(train_ds, batch_size=batch, sampler=EpochSampler(sampler), drop_last=True,
                              generator=torch.Generator(), **common)
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, sampler=ShardSampler(len(val_ds), ctx), **common)
    return train_loader, val_loader, sampler


@dataclass(frozen=True)
class EpochSpeed:
    """How fast an epoch trained: images/s of all ranks, and the share of step time spent waiting for data."""

    images_per_s: float
    data_wait: float  # 0..1: time blocked on the loader / epoch time (the largest over ranks)

    def line(self) -> str:
        hint = " (the loader limits training: more --workers, or faster storage)" if self.data_wait > 0.1 else ""
        return f"train {self.images_per_s:.1f} img/s, data wait {100 * self.data_wait:.0f}%{hint}"


def train_one_epoch(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    precision: Precision, ctx: DistContext, epoch: int, progress: Progress,
                    lr_at: Callable[[int], float]) -> tuple[float, EpochSpeed]:
    """One pass over the training data; returns (mean loss over ranks, its speed).

    `lr_at(step)` is the learning rate of the epoch's 0-based step. The data wait is the time spent
    in the loader's `next`: each step ends with `loss.item()`, which waits for the device, so that is
    time the device had nothing to do.
    """
    model.train()
    total = np.zeros(2)  # loss * images, images
    t0 = waited_from = time.perf_counter()
    waited = 0.0
    for step, (x, y, _) in enumerate(loader):
        waited += time.perf_counter() - waited_from
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        x, y = precision.batch(x), y.to(precision.device, non_blocking=True)
        with precision.autocast():
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        # Read once the step is queued: the step's one wait for the device (a check before backward
        # would stall the device between forward and backward). A non-finite step only touches the
        # in-memory weights, which the run drops; the checkpoints of earlier epochs are what is kept.
        value = loss.item()
        if not ctx.all_true(math.isfinite(value)):
            raise TrainingError(f"loss became non-finite ({value}) at epoch {epoch}, step {step + 1}; "
                                "stopped, the checkpoints of earlier epochs are kept")
        total += (value * len(x), len(x))
        progress.update(len(x) * ctx.world_size, value)
        waited_from = time.perf_counter()
    progress.close()
    seconds = max(time.perf_counter() - t0, 1e-9)
    total = ctx.all_reduce_sum(total)
    wait_share = ctx.all_reduce_sum(np.eye(ctx.world_size)[ctx.rank] * waited / seconds).max()
    return float(total[0] / max(total[1], 1)), EpochSpeed(float(total[1] / seconds), float(wait_share))


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, precision: Precision, spec: ModelSpec,
             ctx: DistContext, progress: Progress | None = None) -> tuple[float, ConfusionMatrix]:
    """Validation loss and the confusion matrix at the input size, summed over all ranks.

    Pass the bare model, not a DistributedDataParallel wrapper: ranks may hold different numbers of
    batches (no padding), so nothing here may wait for the other ranks but the final sums.
    """
    model.eval()
    cm = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    loss_sum = np.zeros(2)
    for x, y, _ in loader:
        x, y = precision.batch(x), y.to(precision.device, non_blocking=True)
        with precision.autocast():
            logits = model(x)
        valid = int((y != spec.ignore_index).sum())
        if valid:  # mean CE over valid pixels, weighted back to a pixel sum so ranks combine exactly
            loss_sum += (float(loss_fn(logits.float(), y)) * valid, valid)
        cm.update(y.cpu().numpy(), logits.argmax(1).cpu().numpy())
        if progress is not None:
            progress.update(len(x))
    if progress is not None:
        progress.close()
    loss_sum = ctx.all_reduce_sum(loss_sum)
    cm.mat = ctx.all_reduce_sum(cm.mat)
    return float(loss_sum[0] / max(loss_sum[1], 1)), cm


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
    model: nn.Module          # the bare model (checkpoints are written from it, validation runs it)
    aux_head: nn.Module | None  # the auxiliary head of --aux-loss (segtrain.models.auxiliary), else None
    net: nn.Module            # what is trained: the model (with its auxiliary head), or its DDP wrapper
                              # (compiled with --compile)
    scorer: nn.Module         # what validates: the model (compiled with --compile)
    optimizer: torch.optim.Optimizer
    precision: Precision
    loss_fn: nn.Module        # validation's loss
    train_loss_fn: nn.Module  # what training minimises: loss_fn, plus the auxiliary head's with --aux-loss
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: DistributedSampler
    val_split: CocoSplit
    history: list[dict] = field(default_factory=list)  # a row per finished epoch (segtrain.training.run_files)
    best_miou: float = -1.0
    notes: list[str] = field(default_factory=list)  # what prepare() set up, for the log
    progress: str = "off"     # bar, log or off for this process
    log_interval: float = LOG_INTERVAL_S
    epoch_seconds: float | None = None
    outputs: RunOutputs | None = field(default=None, repr=False)

    @property
    def epoch(self) -> int:
        """The last finished epoch (0 before the first)."""
        return self.history[-1]["epoch"] if self.history else 0

    def lr_at(self, epoch: int, step: int) -> float:
        """The learning rate of `step` (0-based) of `epoch` (1-based): warm-up, then the schedule."""
        per_epoch = len(self.train_loader)
        return self.cfg.lr * lr_factor(self.cfg.lr_schedule, (epoch - 1) * per_epoch + step,
                                       self.cfg.epochs * per_epoch, self.cfg.warmup_epochs * per_epoch)


def dataset_root(cfg: TrainConfig, ckpt: Checkpoint | None) -> Path:
    """The training data folder; when it is the one a resumed checkpoint recorded, errors say so."""
    if ckpt is not None and data_from_checkpoint(cfg, ckpt):
        return ckpt.data_root(purpose="resuming")
    if (problem := folder_problem(cfg.data, "dataset folder")) is not None:
        raise DataError(f"{cfg.data}: {problem} (pass --data DIR)")
    return Path(cfg.data)


def prepare(cfg: TrainConfig, ctx: DistContext, ckpt: Checkpoint | None) -> Run:
    """Data, model, optimizer (restored with --resume) and loaders; `Run.notes` says what was set up."""
    from segtrain.models import build_model, with_auxiliary
    from segtrain.training.batchnorm import guard_single_value_batch_norm

    use_local_gpu = ctx.enabled and cfg.device != "cpu" and torch.cuda.is_available()
    device = resolve_device(f"cuda:{ctx.local_rank}" if use_local_gpu else cfg.device)
    precision = choose_precision(device, cfg.amp)
    if cfg.compile:
        require_compile(device)  # before any data is read or anything written
    if cfg.sync_bn and ctx.enabled and device.type != "cuda":
        raise SettingError(f"sync_bn: SyncBatchNorm works on CUDA devices only, and this run is on {device}; "
                           "run without --sync-bn")
    root = dataset_root(cfg, ckpt)
    train_split = CocoSplit.open(root, "train", cfg.categories)
    val_split = CocoSplit.open(root, "validation", cfg.categories)
    notes = [f"warning: {problem}" for problem in train_split.problems + val_split.problems]
    spec = make_spec(cfg, train_split)
    seed_everything(cfg.seed + ctx.rank)
    model = build_model(spec, encoder_weights=cfg.encoder_weights)
    if cfg.init_from and ckpt is None:  # a resumed run continues its own weights
        notes.append(init_from(model, spec, cfg.init_from))
    trained = with_auxiliary(model, spec) if cfg.aux_loss else model  # the model, and its auxiliary head
    aux_head = trained.head if trained is not model else None
    if ctx.enabled and cfg.sync_bn:  # replaces the BatchNorm layers inside, keeping these modules
        nn.SyncBatchNorm.convert_sync_batchnorm(trained)
    guard_single_value_batch_norm(trained)
    precision.model(trained)
    optimizer = build_optimizer(cfg, trained)
    if ckpt is not None:
        restore(ckpt, model, optimizer, precision, spec, cfg, aux_head)
    net, scorer = trained, model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(trained,
                                                  device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        scorer = compiled(model)
        net = scorer if net is model else compiled(net)  # one compiled model when it is the same module
    loss_fn = SegLoss(cfg.loss, spec.ignore_index).to(device)
    train_loss_fn = WithAuxiliaryLoss(loss_fn, cfg.aux_loss) if aux_head is not None else loss_fn
    stored_weight = ckpt.config.get("aux_loss", 0.0) if ckpt is not None else None
    if aux_head is not None and stored_weight is not None and stored_weight != cfg.aux_loss:
        notes.append(f"note: the auxiliary loss is weighted {cfg.aux_loss:g} from epoch {ckpt.epoch + 1} on "
                     f"({ckpt.path} trained with {stored_weight:g})")
    if aux_head is not None:
        notes.append(f"auxiliary FCN head on the encoder's penultimate stage ({trained.head[0].in_channels} "
                     f"channels), its loss weighted {cfg.aux_loss:g}; dropped after training")
    train_loader, val_loader, sampler = make_loaders(cfg, spec, train_split, val_split, ctx, device)
    how = precision.name + (", compiled" if cfg.compile else "")
    notes.append(f"{cfg.model} ({spec.encoder}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params) "
                 f"on {device} ({how}), {ctx.world_size} process(es); {len(train_split)} train / "
                 f"{len(val_split)} validation images at {spec.input_size[0]}x{spec.input_size[1]}")
    notes += batch_notes(cfg.batch_size, train_loader.batch_size, len(sampler), ctx.world_size)
    run = Run(cfg, ctx, spec, model, aux_head, net, scorer, optimizer, precision, loss_fn, train_loss_fn,
              train_loader, val_loader, sampler, val_split, notes=notes)
    if ckpt is not None:
        run.history, run.best_miou = list(ckpt.training.history), float(ckpt.training.best_miou)
    return run


def batch_notes(asked: int, batch: int, share: int, world: int) -> list[str]:
    """What the user should know when the batches are not simply --batch-size."""
    who = "each process" if world > 1 else "the run"
    notes = []
    if batch < asked:
        notes.append(f"the training set gives {who} {share} image(s) per epoch, fewer than --batch-size {asked}: "
                     f"training in batches of {batch}")
    if batch == 1:
        notes.append("in 1-image batches, BatchNorm layers that would see a single value per channel use their "
                     "running statistics")
    return ["note: " + "; ".join(notes)] if notes else []


def run_epoch(run: Run, epoch: int, log: Log) -> None:
    """Train, validate and (on rank 0) write this epoch's artifacts."""
    t0 = time.perf_counter()
    cfg, ctx = run.cfg, run.ctx
    run.sampler.set_epoch(epoch)
    run.train_loader.generator.manual_seed(cfg.seed * 7919 + epoch * 31 + ctx.rank)
    desc = f"epoch {epoch}/{cfg.epochs}"
    run_left = run.epoch_seconds * (cfg.epochs - epoch) if run.epoch_seconds else None
    progress = Progress(run.progress, len(run.train_loader), f"{desc} train", log, run.log_interval, run_left)
    train_loss, speed = train_one_epoch(run.net, run.train_loader, run.train_loss_fn, run.optimizer,
                                               run.precision, ctx, epoch, progress,
                                               lambda step: run.lr_at(epoch, step))
    ctx.broadcast_buffers(run.model)
    progress = Progress(run.progress, len(run.val_loader), f"{desc} validate", log, run.log_interval)
    val_loss, cm = validate(run.scorer, run.val_loader, run.loss_fn, run.precision, run.spec, ctx, progress)
    row = history_row(epoch, train_loss, val_loss, cm, run.spec, run.optimizer.param_groups[0]["lr"])
    run.history.append(row)
    improved = best_epoch(run.history) == epoch  # ties in mIoU go to the lower validation loss
    if improved:
        run.best_miou = miou_rank(row["miou"])
    if ctx.is_main:
        state = TrainingState(optimizer=run.optimizer.state_dict(), scaler=run.precision.scaler.state_dict(),
                              rng=rng_state(), history=run.history, best_miou=run.best_miou,
                              aux_head=portable_state_dict(run.aux_head) if run.aux_head is not None else None)
        with files_being_written():
            run.outputs.write(portable_state_dict(run.model), EpochResult(row, cm, improved, state))
        log(f"{desc}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
            f"mIoU {100 * row['miou']:.2f}%{' (best)' if improved else ''}, lr {row['lr']:.3g}, "
            f"{speed.line()}, epoch {time.perf_counter() - t0:.0f}s")
    ctx.barrier()
    run.epoch_seconds = time.perf_counter() - t0


def should_stop(history: list[dict], patience: int | None) -> bool:
    """Early stop: validation mIoU has not improved for `patience` epochs (None: never)."""
    if not patience or not history:
        return False
    best = best_epoch(history)
    return history[-1]["epoch"] - (best if best is not None else 0) >= patience


@dataclass(frozen=True)
class FitResult:
    best_miou: float  # -1 when no epoch scored
    best_epoch: int | None
    epochs_run: int  # by this call (and before it, when resumed)
    stopped_early: bool
    out: str  # the run folder
    is_main: bool  # this process wrote the run (rank 0)


def fit(cfg: TrainConfig, resume: str | Path | Checkpoint | None = None, exist_ok: bool = False,
        log: Log = print, log_interval: float = LOG_INTERVAL_S) -> FitResult:
    """Train `cfg.model`.

    The run folder follows segtrain.training.runs (never another run's files without `exist_ok`); the
    first line logged names it. Ctrl-C and SIGTERM stop it with a `Stopped` error (segtrain.training.interrupts).
    """
    with signals_stop_training():
        return _fit(cfg, resume, exist_ok, log, log_interval)


def _fit(cfg: TrainConfig, resume: str | Path | Checkpoint | None, exist_ok: bool, log: Log,
         log_interval: float) -> FitResult:
    cfg = cfg.resolved()
    ckpt = open_resume(resume) if resume is not None else None
    if ckpt is not None and ckpt.spec.arch != cfg.model:
        raise CheckpointError(f"{ckpt.path}: is a {ckpt.spec.arch} run; resume it with "
                              f"`segtrain fit {ckpt.spec.arch} --resume {ckpt.path}`")
    ctx = init_distributed(cfg.device)
    outputs = run = folder = None
    try:
        if cfg.tensorboard:  # fail before any training when it cannot work here
            ctx.decide(require_tensorboard)
        folder = ctx.decide(lambda: choose_run_folder(cfg.model, cfg.out, ckpt.path if ckpt else None, exist_ok))
        cfg = replace(cfg, out=str(folder.path))
        run = prepare(cfg, ctx, ckpt)
        if run.epoch >= cfg.epochs:
            raise SettingError(f"--epochs {cfg.epochs}: {ckpt.path} has finished {run.epoch} epochs "
                              "already; give a larger --epochs (the new total) to continue it")
        ctx.decide(lambda: claim_run_folder(folder.path))  # nothing is created before everything checked out
        run.progress, run.log_interval = resolve_mode(cfg.progress, ctx.is_main), log_interval
        if ctx.is_main:
            for line in (folder.note, *run.notes):
                log(line)
            outputs = run.outputs = open_outputs(run)
        return train_epochs(run, log)
    except (KeyboardInterrupt, Terminated) as stop:
        raise stop_error(stop, cfg.model, folder.path if folder else None, run.epoch if run else 0) from None
    finally:
        if outputs is not None and outputs.tensorboard is not None:
            outputs.tensorboard.close()
        shutdown_distributed(ctx)


def train_epochs(run: Run, log: Log) -> FitResult:
    """The epochs left to run, or until early stop; the result `fit` returns."""
    cfg = run.cfg
    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        run_epoch(run, epoch, log)
        if should_stop(run.history, cfg.patience):
            break
    history = run.history
    best = best_epoch(history)
    stopped = len(history) > 0 and history[-1]["epoch"] < cfg.epochs
    if stopped and run.ctx.is_main:
        log(f"early stop after epoch {history[-1]['epoch']}: validation mIoU has not improved for "
            f"{cfg.patience} epoch(s); {BEST_MODEL} is epoch {best}")
    return FitResult(best_miou=run.best_miou, best_epoch=best, epochs_run=len(history), stopped_early=stopped,
                     out=cfg.out, is_main=run.ctx.is_main)


def open_outputs(run: Run) -> RunOutputs:
    """Create the run folder, write config.json, pick the sample images (main process)."""
    from segtrain.models import torch_predictor
    from segtrain.training.samples import load_samples

    folder = Path(run.cfg.out)
    atomic_write_text(folder / CONFIG_JSON, json.dumps(run.cfg.to_dict(), indent=2) + "\n")
    tensorboard = TensorBoardLog(folder) if run.cfg.tensorboard else None
    return RunOutputs(folder, run.cfg, run.spec, load_samples(run.val_split),
                      torch_predictor(run.model, run.precision.device), tensorboard)

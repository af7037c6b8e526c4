"""`segtrain evaluate`: a checkpoint scored on a COCO split with the shared evaluation code."""

from __future__ import annotations

import torch

from segtrain.common.settings import SettingError
from segtrain.contract import ModelSpec
from segtrain.evaluation import evaluate_split, open_split_for, with_tta
from segtrain.metrics import SegMetrics
from segtrain.models import load_model, torch_predictor
from segtrain.training.checkpoint import Checkpoint
from segtrain.training.config import CheckpointEvaluateConfig
from segtrain.training.precision import resolve_device


def evaluate_checkpoint(config: CheckpointEvaluateConfig, progress: bool = False) -> SegMetrics:
    """Metrics of a checkpoint on a split: at original image sizes, or at the input size."""
    if config.at_input_size and config.tta != "off":
        raise SettingError("--tta: test-time augmentation is scored at the photos' own sizes; "
                           "leave out --at-input-size (the training loop's validation has none)")
    dev = resolve_device(config.device)
    ckpt = Checkpoint.load(config.checkpoint, map_location=str(dev))
    coco = open_split_for(ckpt.spec, ckpt.data_root(config.data, purpose="evaluation"), config.split)
    model, _ = load_model(ckpt, device=str(dev))
    if config.at_input_size:
        return _evaluate_at_input_size(model, coco, ckpt.spec, config.batch_size, dev, progress)
    return evaluate_split(with_tta(torch_predictor(model, dev), config.tta), coco, ckpt.spec,
                          batch_size=config.batch_size, progress=progress)


def _evaluate_at_input_size(model: torch.nn.Module, coco, spec: ModelSpec, batch_size: int,
                            device: torch.device, progress: bool) -> SegMetrics:
    """The training loop's own validation pass, in one process and full precision."""
    from torch.utils.data import DataLoader

    from segtrain.training.dataset import SegmentationDataset
    from segtrain.training.distributed import DistContext
    from segtrain.training.loop import validate
    from segtrain.training.losses import SegLoss
    from segtrain.training.precision import choose_precision
    from segtrain.training.progress import Progress

    loader = DataLoader(SegmentationDataset(coco, spec), batch_size=batch_size)
    precision = choose_precision(device, False)
    _, cm = validate(precision.model(model), loader, SegLoss("ce", spec.ignore_index), precision, spec,
                     DistContext(), Progress("bar" if progress else "off", len(loader), "validate"))
    return cm.result(spec.classes)

"""The optimizer of `segtrain fit`: Adam (the default), AdamW or SGD with momentum, as the references train.

torchvision's segmentation reference and MMSegmentation train with SGD, momentum 0.9 and weight decay,
under the poly schedule; `--nesterov` adds Nesterov momentum. Adam and AdamW keep the smaller default
learning rate (segtrain.training.config.DEFAULT_LR). The learning rate of every step is set by the loop
(segtrain.training.schedule), so any optimizer runs any schedule.
"""

from __future__ import annotations

import torch
from torch import nn

from segtrain.training.config import TrainConfig

SGD_MOMENTUM = 0.9


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` over the model's trainable parameters (a resolved config)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=SGD_MOMENTUM, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

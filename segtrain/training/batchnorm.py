"""BatchNorm in training when a layer sees one value per channel (a batch of one image at a 1x1 map).

Training-mode BatchNorm cannot normalise a single value (PyTorch raises "Expected more than 1
value per channel when training"); DeepLabV3's image-pooling branch meets it with every 1-image
batch. `guard_single_value_batch_norm` makes such a layer, for that call only, normalise with its
running statistics, as in evaluation (its affine weights still train). Every other layer and every
call with more than one value per channel is untouched. The training loop also drops the
incomplete last batch (segtrain.training.loop.make_loaders), so one-image batches happen only when the
batch itself is one image (`--batch-size 1`, or a process's share of the data is one image).
"""

from __future__ import annotations

import torch
from torch import nn

_FLAG = "_segtrain_single_value"


def _before(module: nn.Module, args: tuple) -> None:
    x = args[0]
    if module.training and isinstance(x, torch.Tensor) and x.dim() >= 2 and x.numel() <= x.shape[1]:
        module.training = False
        setattr(module, _FLAG, True)


def _after(module: nn.Module, args: tuple, output: object) -> None:
    if module.__dict__.pop(_FLAG, False):
        module.training = True


def guard_single_value_batch_norm(model: nn.Module) -> int:
    """Install the guard on every BatchNorm (and SyncBatchNorm) layer of `model`; returns how many."""
    count = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(_before)
            m.register_forward_hook(_after, always_call=True)
            count += 1
    return count

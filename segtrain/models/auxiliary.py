"""The auxiliary loss of `segtrain fit --aux-loss W`: an FCN head on the encoder's penultimate stage.

As torchvision's segmentation reference (``aux_loss=True``: an FCNHead on ResNet's layer3, loss
weight 0.5) and MMSegmentation (``auxiliary_head``: an FCNHead on stage 3 of 4, weight 0.4) train:
during training a small head predicts the classes from the encoder's penultimate stage, its logits
are up-sampled to the input size and its loss, times W, is added to the main one. It deepens the
gradient signal into the encoder and is dropped after training: the head is not part of the
model (checkpoints' "model" weights, exports and inference are unchanged); a last.pth keeps its
weights beside the optimizer state so that --resume continues it.

Every registered architecture has such a stage: smp's encoders return their stages' features
(the penultimate is ResNet's layer3, MiT's stage 3), and SegNet's VGG16 encoder keeps each stage's
output for its decoder (stage 4, 512 channels at 1/8 of the input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

FCN_DROPOUT = 0.1  # torchvision's FCNHead


@dataclass(frozen=True)
class Tap:
    """Where the auxiliary head reads: `module`'s output, of which `pick` takes a tensor of `channels` channels."""

    module: nn.Module
    pick: Callable[[Any], torch.Tensor]
    channels: int


def smp_tap(model: nn.Module) -> Tap:
    """The penultimate stage of an smp model's encoder (its forward returns every stage's features)."""
    return Tap(model.encoder, lambda features: features[-2], int(model.encoder.out_channels[-2]))


class FCNHead(nn.Sequential):
    """torchvision's FCNHead: 3x3 conv to a quarter of the channels, BN, ReLU, dropout, 1x1 conv to the classes."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        mid = max(in_channels // 4, 1)
        super().__init__(nn.Conv2d(in_channels, mid, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(mid),
                         nn.ReLU(inplace=True), nn.Dropout(FCN_DROPOUT), nn.Conv2d(mid, num_classes, kernel_size=1))


class WithAuxiliary(nn.Module):
    """What `fit --aux-loss` trains: `model` plus `head` on `tap`; in training mode returns (logits, aux logits).

    The tapped stage is kept by a forward hook while the tapped module is in training mode, so the
    model runs its own forward once, unchanged; in eval mode this is the model alone (logits).
    """

    def __init__(self, model: nn.Module, head: nn.Module, tap: Tap) -> None:
        super().__init__()
        self.model, self.head = model, head
        self._pick = tap.pick
        self._features: torch.Tensor | None = None
        self._hook = tap.module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: Any, output: Any) -> None:
        if module.training:  # validation runs the bare model in eval mode: nothing is kept
            self._features = self._pick(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        if not self.training:
            return logits
        features, self._features = self._features, None
        if features is None:
            raise RuntimeError("the auxiliary head's stage did not run in training mode")
        aux = nn.functional.interpolate(self.head(features), size=x.shape[-2:], mode="bilinear",
                                        align_corners=False)
        return logits, aux

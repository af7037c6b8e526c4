"""Training losses; the ignore index is excluded from every one of them."""

from __future__ import annotations

import torch
from torch import nn


class DiceLoss(nn.Module):
    """Soft multi-class Dice over the classes present in the batch, ignoring `ignore_index` pixels."""

    def __init__(self, ignore_index: int, eps: float = 1.0) -> None:
        super().__init__()
        self.ignore_index, self.eps = ignore_index, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n_classes = logits.shape[1]
        valid = (target != self.ignore_index).unsqueeze(1)
        probs = logits.float().softmax(1) * valid
        onehot = nn.functional.one_hot(target.clamp(0, n_classes - 1), n_classes).permute(0, 3, 1, 2) * valid
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)
        card = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.eps) / (card + self.eps)
        present = onehot.sum(dims) > 0
        return 1 - (dice[present].mean() if present.any() else dice.mean())


class SegLoss(nn.Module):
    """'ce', 'dice' or 'ce+dice' (their sum)."""

    def __init__(self, kind: str, ignore_index: int) -> None:
        super().__init__()
        self.kind = kind
        self.ce = nn.CrossEntropyLoss(ignore_index=ignore_index)
        self.dice = DiceLoss(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "ce":
            return self.ce(logits, target)
        if self.kind == "dice":
            return self.dice(logits, target)
        return self.ce(logits, target) + self.dice(logits, target)


class WithAuxiliaryLoss(nn.Module):
    """The training loss under `fit --aux-loss W`: loss(logits) + W * loss(auxiliary logits) (same loss kind).

    Takes what segtrain.models.auxiliary.WithAuxiliary returns in training mode, (logits, aux logits).
    """

    def __init__(self, loss: nn.Module, weight: float) -> None:
        super().__init__()
        self.loss, self.weight = loss, weight

    def forward(self, outputs: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        logits, aux = outputs
        return self.loss(logits, target) + self.weight * self.loss(aux, target)

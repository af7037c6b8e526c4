"""The learning rate of every optimizer step: optional linear warm-up, then constant, poly or cosine.

A pure function of the global step, so a resumed run follows the same curve as a straight one
without any scheduler state in the checkpoint. `poly` is torchvision's segmentation reference
((1 - t) ** 0.9); `cosine` decays to 0 at the last step. Warm-up rises linearly from lr/W to lr
over the first `warmup` steps.
"""

from __future__ import annotations

import math

POLY_POWER = 0.9


def lr_factor(kind: str, step: int, total: int, warmup: int = 0) -> float:
    """Multiplier of the base lr at 0-based `step` of `total` steps, `warmup` of them warm-up."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "constant":
        return 1.0
    if kind == "poly":
        return (1.0 - t) ** POLY_POWER
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown lr schedule {kind!r}")

"""The model registry: architecture name -> builder taking a ModelSpec.

Every model returns logits (N, num_classes, H, W) at the input size. Builders take
``encoder_weights``: "imagenet" (the libraries' own pretrained files; fails fast offline),
"none" (random init) or a path to a local encoder state dict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from segtrain.contract import ModelSpec
from segtrain.models import deeplab, segnet
from segtrain.models.encoders import ModelError

__all__ = ["DEFAULT_ENCODERS", "INPUT_DIVISORS", "MODELS", "ModelError", "build_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {"deeplab": deeplab.build_deeplab, "segnet": segnet.build_segnet}
DEFAULT_ENCODERS: dict[str, str] = {"deeplab": deeplab.DEFAULT_ENCODER, "segnet": segnet.DEFAULT_ENCODER}
# Input height and width must be multiples of these (encoder output stride; SegNet's five pools).
INPUT_DIVISORS: dict[str, int] = {"deeplab": deeplab.OUTPUT_STRIDE, "segnet": segnet.DIVISOR}


def build_model(spec: ModelSpec, encoder_weights: str | Path = "imagenet") -> nn.Module:
    """The registered architecture `spec.arch` with `spec.num_classes` outputs and encoder `spec.encoder`."""
    if spec.arch not in MODELS:
        raise ModelError(f"unknown model {spec.arch!r}; choose from {', '.join(MODELS)}")
    return MODELS[spec.arch](spec, encoder_weights=encoder_weights)

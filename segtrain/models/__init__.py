"""The model registry: architecture name -> builder taking a ModelSpec.

Every model returns logits (N, num_classes, H, W) at the input size. Builders take
``encoder_weights``: "imagenet" (the libraries' own pretrained files; fails fast offline),
"none" (random init) or a path to a local encoder state dict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segtrain.contract import ModelSpec
from segtrain.models import deeplab, segnet, smp_archs
from segtrain.models.auxiliary import FCNHead, Tap, WithAuxiliary, smp_tap
from segtrain.models.encoders import ModelError
from segtrain.training.checkpoint import Checkpoint, CheckpointError

__all__ = ["AUX_TAPS", "CLASSIFIERS", "DEFAULT_ENCODERS", "INPUT_DIVISORS", "MODELS", "ModelError", "build_model",
           "load_model", "torch_predictor", "with_auxiliary"]

MODELS: dict[str, Callable[..., nn.Module]] = {"deeplab": deeplab.build_deeplab, "segnet": segnet.build_segnet,
                                               **{name: smp_archs.builder(name) for name in smp_archs.ARCHS}}
DEFAULT_ENCODERS: dict[str, str] = {"deeplab": deeplab.DEFAULT_ENCODER, "segnet": segnet.DEFAULT_ENCODER,
                                    **{name: a.default_encoder for name, a in smp_archs.ARCHS.items()}}
# The classifier of each architecture (state-dict prefixes): re-created by --init-from when the categories differ.
CLASSIFIERS: dict[str, tuple[str, ...]] = {"deeplab": ("segmentation_head",), "segnet": ("head",),
                                           **dict.fromkeys(smp_archs.ARCHS, smp_archs.CLASSIFIER)}
# Input height and width must be multiples of these (encoder output stride; SegNet's five pools).
INPUT_DIVISORS: dict[str, int] = {"deeplab": deeplab.OUTPUT_STRIDE, "segnet": segnet.DIVISOR,
                                  **{name: a.divisor for name, a in smp_archs.ARCHS.items()}}

# Where each architecture's auxiliary head reads (`fit --aux-loss`): the encoder's penultimate stage.
AUX_TAPS: dict[str, Callable[[nn.Module], Tap]] = {"deeplab": smp_tap, "segnet": segnet.penultimate_stage,
                                                   **dict.fromkeys(smp_archs.ARCHS, smp_tap)}


def build_model(spec: ModelSpec, encoder_weights: str | Path = "imagenet") -> nn.Module:
    """The registered architecture `spec.arch` with `spec.num_classes` outputs and encoder `spec.encoder`."""
    if spec.arch not in MODELS:
        raise ModelError(f"unknown model {spec.arch!r}; choose from {', '.join(MODELS)}")
    return MODELS[spec.arch](spec, encoder_weights=encoder_weights)


def with_auxiliary(model: nn.Module, spec: ModelSpec) -> WithAuxiliary:
    """`model` (built for `spec`) with a new auxiliary FCN head on its encoder's penultimate stage."""
    if spec.arch not in AUX_TAPS:
        raise ModelError(f"--aux-loss: {spec.arch} has no auxiliary head (the architectures with one: "
                         f"{', '.join(AUX_TAPS)})")
    tap = AUX_TAPS[spec.arch](model)
    return WithAuxiliary(model, FCNHead(tap.channels, spec.num_classes), tap)


def load_model(source: str | Path | Checkpoint, device: str = "cpu") -> tuple[nn.Module, Checkpoint]:
    """(model in eval mode on `device`, its checkpoint): the one place trained models are rebuilt.

    The architecture comes from the spec (random encoder init, no download), then the stored
    weights are loaded strictly; weights that do not fit the spec are a CheckpointError.
    """
    ckpt = source if isinstance(source, Checkpoint) else Checkpoint.load(source, map_location=device)
    spec = ckpt.spec
    try:
        model = build_model(spec, encoder_weights="none")
    except ModelError as e:
        raise CheckpointError(f"{ckpt.path}: cannot rebuild its model ({e})") from e
    try:
        model.load_state_dict(ckpt.model, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{ckpt.path}: weights do not fit a {spec.arch}/{spec.encoder} model "
                              f"({' '.join(first[:2])[:200]})") from e
    return model.to(device).eval(), ckpt


def torch_predictor(model: nn.Module, device: torch.device | str) -> Callable[[np.ndarray], np.ndarray]:
    """float32 NCHW numpy -> float32 logits numpy, in full precision (a segtrain.evaluation.LogitsFn)."""

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return predict

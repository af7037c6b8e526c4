"""U-Net, FPN, DeepLabV3+ and SegFormer from segmentation_models_pytorch, with any smp encoder.

Each is smp's model as its paper describes it, logits up-sampled to the input size by smp. Input sides
must be multiples of the encoder's output stride (32; 16 for DeepLabV3+, whose encoder is dilated past
that), which is each one's entry in segtrain.models.INPUT_DIVISORS (smp's U-Net would take other sizes,
resizing its skip connections, but is held to 32 like the rest); export declares height and width as
multiples of it, so the ONNX files take any such size. Encoder weights follow the same rules as
DeepLabV3's (segtrain.models.deeplab): smp's ImageNet files, none, or a local encoder state dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from segtrain.contract import ModelSpec
from segtrain.models.deeplab import _drop_classifier, smp_imagenet
from segtrain.models.encoders import ModelError, load_encoder_weights


@dataclass(frozen=True)
class SmpArch:
    """One smp architecture as the registry sees it."""

    smp_class: str          # segmentation_models_pytorch's class name
    title: str              # for messages
    default_encoder: str
    divisor: int            # input sides must be multiples of this
    options: dict[str, Any] = field(default_factory=dict)


ARCHS: dict[str, SmpArch] = {
    "unet": SmpArch("Unet", "U-Net", "resnet34", 32),
    "fpn": SmpArch("FPN", "FPN", "resnet34", 32),
    "deeplabv3plus": SmpArch("DeepLabV3Plus", "DeepLabV3+", "resnet50", 16, {"encoder_output_stride": 16}),
    "segformer": SmpArch("Segformer", "SegFormer", "mit_b0", 32),
}
CLASSIFIER = ("segmentation_head",)


def builder(name: str) -> Callable[..., nn.Module]:
    """The registry's builder for the smp architecture `name` (a key of ARCHS)."""
    arch = ARCHS[name]

    def build(spec: ModelSpec, encoder_weights: str = "imagenet") -> nn.Module:
        import segmentation_models_pytorch as smp

        names = smp.encoders.get_encoder_names()
        if spec.encoder not in names:
            examples = [n for n in names if n.startswith(("resnet", "mit_b", "efficientnet-b0", "mobilenet_v2"))]
            raise ModelError(f"unknown {arch.title} encoder {spec.encoder!r}; smp encoders include "
                             f"{', '.join(examples[:12])}, ... (see segmentation_models_pytorch.encoders."
                             "get_encoder_names())")
        try:
            model = getattr(smp, arch.smp_class)(encoder_name=spec.encoder, encoder_weights=None,
                                                 classes=spec.num_classes, **arch.options)
        except (ValueError, KeyError, AttributeError, TypeError) as e:  # smp refuses some pairings
            raise ModelError(f"{arch.title} cannot use the {spec.encoder} encoder ({str(e).splitlines()[0]})") from e
        load_encoder_weights(model.encoder, encoder_weights, spec.encoder, imagenet=smp_imagenet(spec.encoder),
                             adapt=_drop_classifier)
        return model

    return build

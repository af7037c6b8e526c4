"""DeepLabV3 (Chen et al., 2017) from segmentation_models_pytorch.

smp's defaults are kept: ASPP with rates 12/24/36 on an output-stride-8 dilated encoder, and
bilinear up-sampling of the logits back to the input size (input sides divisible by 8). The default
encoder is ResNet-50, as in the paper and torchvision's reference; ``resnet18`` or ``resnet34``
are the cheap choices for CPU. Encoder weights come from smp's own ImageNet files, or a local
encoder state dict in smp's or torchvision's ResNet format (a classifier ``fc.*`` is dropped).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from segtrain.contract import ModelSpec
from segtrain.models.encoders import (
    IMAGENET,
    ModelError,
    StateDict,
    load_encoder_weights,
    require_download,
)

DEFAULT_ENCODER = "resnet50"
OUTPUT_STRIDE = 8  # dilated layer3/layer4, as in the paper and torchvision; input sides divisible by this


def _drop_classifier(sd: StateDict) -> StateDict:
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def smp_imagenet(encoder: str) -> Callable[[], StateDict]:
    """Loader for smp's ImageNet weights of `encoder`: its Hugging Face file, cached when possible."""

    def load() -> StateDict:
        import huggingface_hub
        from huggingface_hub.errors import LocalEntryNotFoundError
        from safetensors.torch import load_file
        from segmentation_models_pytorch.encoders import encoders

        settings = encoders[encoder]["pretrained_settings"]
        if IMAGENET not in settings:
            raise ModelError(f"smp has no ImageNet weights for {encoder} (it has: {', '.join(settings)})")
        repo, revision = settings[IMAGENET]["repo_id"], settings[IMAGENET]["revision"]
        try:
            path = huggingface_hub.hf_hub_download(repo, "model.safetensors", revision=revision, local_files_only=True)
        except LocalEntryNotFoundError:
            require_download(huggingface_hub.constants.ENDPOINT, f"{encoder} ({repo})")
            path = huggingface_hub.hf_hub_download(repo, "model.safetensors", revision=revision)
        return load_file(path, device="cpu")

    return load


def build_deeplab(spec: ModelSpec, encoder_weights: str = "imagenet") -> nn.Module:
    """smp DeepLabV3 for `spec` (any smp encoder name, e.g. resnet50), encoder filled per `encoder_weights`."""
    import segmentation_models_pytorch as smp

    names = smp.encoders.get_encoder_names()
    if spec.encoder not in names:
        resnets = [n for n in names if n.startswith("resnet")]
        raise ModelError(f"unknown DeepLabV3 encoder {spec.encoder!r}; smp encoders include "
                         f"{', '.join(resnets)} (see segmentation_models_pytorch.encoders.get_encoder_names())")
    model = smp.DeepLabV3(encoder_name=spec.encoder, encoder_weights=None, encoder_output_stride=OUTPUT_STRIDE,
                           classes=spec.num_classes)
    load_encoder_weights(model.encoder, encoder_weights, spec.encoder,
                         imagenet=smp_imagenet(spec.encoder), adapt=_drop_classifier)
    return model

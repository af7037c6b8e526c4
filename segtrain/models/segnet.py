"""SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017) with a VGG16 encoder and skip connections.

Encoder: the 13 convolutions of VGG16 laid out exactly as torchvision's ``vgg16``/``vgg16_bn``
``features`` Sequential (same indices, so ImageNet weights load key for key), except that its five
max-pools also return their arg-max indices. Default encoder ``vgg16_bn``: batch norm after every
convolution, as in the SegNet paper.

Decoder: five stages mirroring the encoder. Each up-samples with max-unpooling at the indices
remembered by the matching encoder pool (the SegNet idea: boundaries come back where they were),
concatenates that encoder stage's output (a skip connection, which SegNet itself does not have),
and runs as many 3x3 conv + BN + ReLU layers as the encoder stage had. A 1x1 convolution gives the
class logits at the input resolution. Inputs must have height and width divisible by 32.
"""

from __future__ import annotations

import torch
from torch import nn

from segtrain.contract import ModelSpec
from segtrain.models.auxiliary import Tap
from segtrain.models.encoders import ModelError, StateDict, load_encoder_weights, torchvision_imagenet

# Output channels of each convolution, per stage; a 2x2 max-pool ends every stage (VGG16, config "D").
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
ENCODERS = {"vgg16_bn": True, "vgg16": False}  # name -> batch norm in the encoder
DEFAULT_ENCODER = "vgg16_bn"
DIVISOR = 2 ** len(VGG16_STAGES)


def vgg16_features(batch_norm: bool) -> nn.Sequential:
    """torchvision's VGG16 ``features`` layout, with index-returning max-pools."""
    layers: list[nn.Module] = []
    in_ch = 3
    for stage in VGG16_STAGES:
        for out_ch in stage:
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
            in_ch = out_ch
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True))
    return nn.Sequential(*layers)


class VGGEncoder(nn.Module):
    """Runs ``features`` and keeps each stage's output (pre-pool) and pool indices for the decoder."""

    def __init__(self, batch_norm: bool) -> None:
        super().__init__()
        self.features = vgg16_features(batch_norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        skips: list[torch.Tensor] = []
        indices: list[torch.Tensor] = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                skips.append(x)
                x, idx = layer(x)
                indices.append(idx)
            else:
                x = layer(x)
        return x, skips, indices


def conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True)]


class DecoderStage(nn.Module):
    """Unpool at the encoder's indices, concatenate the encoder stage output, then convolve."""

    def __init__(self, channels: int, out_channels: int, n_convs: int) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        widths = [2 * channels] + [channels] * (n_convs - 1) + [out_channels]
        self.convs = nn.Sequential(*(m for a, b in zip(widths[:-1], widths[1:], strict=True)
                                     for m in conv_bn_relu(a, b)))

    def forward(self, x: torch.Tensor, indices: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.unpool(x, indices)
        return self.convs(torch.cat([x, skip], dim=1))


class SegNet(nn.Module):
    """VGG16 SegNet returning logits (N, num_classes, H, W) for inputs with H and W divisible by 32."""

    def __init__(self, num_classes: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.encoder = VGGEncoder(batch_norm)
        stages = []
        for i in reversed(range(len(VGG16_STAGES))):
            channels = VGG16_STAGES[i][-1]
            out_channels = VGG16_STAGES[i - 1][-1] if i > 0 else channels
            stages.append(DecoderStage(channels, out_channels, len(VGG16_STAGES[i])))
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(VGG16_STAGES[0][-1], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_tracing() or torch.compiler.is_exporting()):
            check_input_size(x)
        x, skips, indices = self.encoder(x)
        for stage, idx, skip in zip(self.decoder, reversed(indices), reversed(skips), strict=True):
            x = stage(x, idx, skip)
        return self.head(x)


def penultimate_stage(model: SegNet) -> Tap:
    """Where `fit --aux-loss` reads: the encoder's stage 4 output (before its pool; 512 channels at 1/8)."""
    return Tap(model.encoder, lambda out: out[1][-2], VGG16_STAGES[-2][-1])


def check_input_size(x: torch.Tensor) -> None:
    h, w = x.shape[-2:]
    if h % DIVISOR or w % DIVISOR:
        raise ValueError(f"SegNet needs height and width divisible by {DIVISOR}, got {h}x{w} "
                         f"(for example {-(-h // DIVISOR) * DIVISOR}x{-(-w // DIVISOR) * DIVISOR})")


def _vgg_features_only(sd: StateDict) -> StateDict:
    """Accept a whole torchvision VGG state dict (features.* + classifier.*) or its features alone."""
    if any(k.startswith("features.") for k in sd):
        return {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    return sd


def build_segnet(spec: ModelSpec, encoder_weights: str = "imagenet") -> SegNet:
    """SegNet for `spec` (encoder "vgg16_bn" or "vgg16"), encoder filled per `encoder_weights`."""
    import torchvision.models as tvm

    if spec.encoder not in ENCODERS:
        raise ModelError(f"unknown SegNet encoder {spec.encoder!r}; choose from {', '.join(ENCODERS)}")
    model = SegNet(spec.num_classes, batch_norm=ENCODERS[spec.encoder])
    enum = tvm.VGG16_BN_Weights.IMAGENET1K_V1 if ENCODERS[spec.encoder] else tvm.VGG16_Weights.IMAGENET1K_V1
    load_encoder_weights(model.encoder.features, encoder_weights, spec.encoder,
                         imagenet=torchvision_imagenet(enum), adapt=_vgg_features_only)
    return model

"""Tiny registered architectures: they export, quantize, run and train in moments.

``tiny``: 3x3 conv (3 -> 8) + batch norm + ReLU, then a 1x1 conv to the class logits. Its FLOPs
are known in closed form, so the bench's FLOP count and GFLOP/s can be checked exactly.
``tinypool``: ``tiny`` plus DeepLabV3's image-pooling branch (global average pool, 1x1 conv, batch
norm, ReLU, added back), whose batch norm sees one value per channel in a 1-image batch, as DeepLab's does.
``tinyplain``: ``tiny`` without batch norm, so with lr 0 nothing about it changes between epochs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from segtrain.contract import ModelSpec, build_spec

ARCH, WIDTH, DIVISOR = "tiny", 8, 4
POOL_ARCH, PLAIN_ARCH = "tinypool", "tinyplain"


class TinyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, WIDTH, 3, padding=1), nn.BatchNorm2d(WIDTH), nn.ReLU())
        self.head = nn.Conv2d(WIDTH, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class TinyPoolNet(TinyNet):
    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(WIDTH, WIDTH, 1), nn.BatchNorm2d(WIDTH),
                                  nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        return self.head(features + self.pool(features))


class TinyPlainNet(TinyNet):
    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.body = nn.Sequential(nn.Conv2d(3, WIDTH, 3, padding=1), nn.ReLU())


def build_tiny(spec: ModelSpec, encoder_weights: str = "none") -> nn.Module:
    return TinyNet(spec.num_classes)


BUILDERS = {ARCH: build_tiny, POOL_ARCH: lambda spec, encoder_weights="none": TinyPoolNet(spec.num_classes),
            PLAIN_ARCH: lambda spec, encoder_weights="none": TinyPlainNet(spec.num_classes)}


def register_tiny(mp: pytest.MonkeyPatch) -> None:
    """Register every tiny architecture (and its input divisor) with `mp`, undone when `mp` is."""
    from segtrain.models import AUX_TAPS, CLASSIFIERS, DEFAULT_ENCODERS, INPUT_DIVISORS, MODELS
    from segtrain.models.auxiliary import Tap

    for arch, builder in BUILDERS.items():
        mp.setitem(AUX_TAPS, arch, lambda model: Tap(model.body, lambda out: out, WIDTH))  # --aux-loss reads body
        mp.setitem(MODELS, arch, builder)
        mp.setitem(CLASSIFIERS, arch, ("head",))
        mp.setitem(INPUT_DIVISORS, arch, DIVISOR)
        mp.setitem(DEFAULT_ENCODERS, arch, "conv")


def tiny_gflop(spec: ModelSpec, size: tuple[int, int], valid_taps: bool = False) -> float:
    """2 FLOPs per multiply-add of the two convolutions (biases, BN and ReLU are not counted).

    valid_taps: the 3x3 convolution's taps on its 1-pixel zero padding left out, i.e. per axis
    3 * n - 2 (position, tap) pairs instead of 3 * n.
    """
    h, w = size
    taps = (3 * h - 2) * (3 * w - 2) if valid_taps else 9 * h * w
    return 2 * (3 * WIDTH * taps + WIDTH * spec.num_classes * h * w) / 1e9


@contextmanager
def tiny_registered() -> Iterator[None]:
    """Register the tiny architectures in the model registry (and their input divisor) for the duration."""
    with pytest.MonkeyPatch.context() as mp:
        register_tiny(mp)
        yield


def randomise_batch_norm(model: nn.Module) -> None:
    """Non-trivial batch-norm statistics, so folding them into the convolution is exercised."""
    with torch.no_grad():
        model.body[1].running_mean.uniform_(-0.5, 0.5)
        model.body[1].running_var.uniform_(0.5, 2.0)


def tiny_config(data: Path, out: Path, **overrides):
    """A TrainConfig for `tinypool` (or `model=...`) at 32 px on the CPU, quiet; `overrides` change any field."""
    from segtrain.training.config import TrainConfig

    base = dict(model=POOL_ARCH, encoder="conv", encoder_weights="none", data=str(data), out=str(out), epochs=2,
                batch_size=2, image_size=32, workers=0, device="cpu", progress="off", lr=0.01)
    return TrainConfig(**{**base, **overrides})


def make_tiny_checkpoint(path: Path, data: Path | None, size: int = 32, seed: int = 0) -> Path:
    """A `tiny` checkpoint recording `data` as its dataset (None: no dataset); register `tiny` first."""
    from checkpoints import build_checkpoint

    return build_checkpoint(path, ARCH, "conv", size, data, seed=seed, epoch=1, miou=0.1,
                            prepare=randomise_batch_norm)


def fixed_size_onnx(path: Path, size: int = 32) -> Path:
    """A self-describing 1x1-conv model whose input is fixed at 1x3xSIZExSIZE (no dynamic axes)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    spec = build_spec(ARCH, "conv", image_size=size)
    weight = numpy_helper.from_array(np.ones((spec.num_classes, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["logits"])], "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, spec.num_classes, size, size])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in spec.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path

"""A tiny registered architecture for the bench tests: exports, quantizes and runs in moments.

``tiny``: 3x3 conv (3 -> 8) + batch norm + ReLU, then a 1x1 conv to the class logits. Its FLOPs
are known in closed form, so the bench's FLOP count and GFLOP/s can be checked exactly.
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


class TinyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, WIDTH, 3, padding=1), nn.BatchNorm2d(WIDTH), nn.ReLU())
        self.head = nn.Conv2d(WIDTH, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build_tiny(spec: ModelSpec, encoder_weights: str = "none") -> nn.Module:
    return TinyNet(spec.num_classes)


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
    """Register `tiny` in the model registry (and its input divisor) for the duration."""
    from segtrain.models import INPUT_DIVISORS, MODELS

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(MODELS, ARCH, build_tiny)
        mp.setitem(INPUT_DIVISORS, ARCH, DIVISOR)
        yield


def randomise_batch_norm(model: nn.Module) -> None:
    """Non-trivial batch-norm statistics, so folding them into the convolution is exercised."""
    with torch.no_grad():
        model.body[1].running_mean.uniform_(-0.5, 0.5)
        model.body[1].running_var.uniform_(0.5, 2.0)


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

"""FLOP counts: every kernel tap, and only the taps that read the image (not its zero padding)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("conv, size, valid_pairs", [
    # dilation 4, padding 4 on 8 pixels: the outer taps hit the image for 4 of 8 positions, the centre for all
    (dict(kernel_size=3, padding=4, dilation=4), 8, 4 + 8 + 4),
    # dilation 12 on 8 pixels (DeepLabV3's ASPP on a small map): only the centre tap ever reads the image
    (dict(kernel_size=3, padding=12, dilation=12), 8, 8),
    # stride 2, padding 1: outputs 0..3 read inputs 2o-1, 2o, 2o+1; only 2*0-1 is off the image
    (dict(kernel_size=3, padding=1, stride=2), 8, 4 * 3 - 1),
])
def test_valid_tap_flops_of_padded_and_dilated_convolutions(conv: dict, size: int, valid_pairs: int) -> None:
    import torch

    from segdeploy.bench.roofline import count_gflop

    layer = torch.nn.Conv2d(3, 2, bias=False, **conv)
    out = layer(torch.zeros(1, 3, size, size)).shape[-1]
    counts = count_gflop(layer, (size, size))
    assert counts["dense"] * 1e9 == 2 * 2 * 3 * 9 * out * out
    assert counts["valid_taps"] * 1e9 == 2 * 2 * 3 * valid_pairs**2

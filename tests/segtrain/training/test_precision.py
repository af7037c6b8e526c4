"""Precision is chosen in one place: fp16 + GradScaler on CUDA, fp32 (or bf16 on request) on CPU."""

from __future__ import annotations

import pytest
import torch

from segtrain.training.precision import DeviceError, choose_precision, resolve_device


def test_cpu_defaults_to_full_precision_and_amp_means_bf16():
    p = choose_precision(torch.device("cpu"), None)
    assert p.dtype is None and not p.scaler.is_enabled() and p.name == "fp32"
    p = choose_precision(torch.device("cpu"), True)
    assert p.dtype == torch.bfloat16 and not p.scaler.is_enabled()
    with p.autocast():
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cuda_uses_fp16_unless_amp_is_off():
    assert choose_precision(torch.device("cuda"), None).dtype == torch.float16
    assert choose_precision(torch.device("cuda"), False).dtype is None


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unsupported device|unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")

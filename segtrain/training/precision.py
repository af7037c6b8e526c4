"""Device and numeric precision, decided in one place.

CUDA: fp16 autocast with a GradScaler (AMP on by default). CPU: full precision by default;
`--amp` asks for bf16 autocast, which only pays off on CPUs with bf16 support (AMX/AVX-512).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from segtrain.common.errors import InputError


class DeviceError(InputError):
    """A --device value that this machine cannot provide."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda[:N]' checked against what is present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name} requested but CUDA is not available here (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name} requested but only {torch.cuda.device_count()} GPU(s) are present")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return device


@dataclass
class Precision:
    """The autocast dtype (None = full precision) and the grad scaler for one device."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @property
    def name(self) -> str:
        return {torch.float16: "fp16 autocast", torch.bfloat16: "bf16 autocast"}.get(self.dtype, "fp32")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def choose_precision(device: torch.device, amp: bool | None) -> Precision:
    if device.type == "cuda" and amp is not False:
        dtype = torch.float16
    elif device.type == "cpu" and amp:
        dtype = torch.bfloat16
    else:
        dtype = None
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return Precision(device, dtype, scaler)

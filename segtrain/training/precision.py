"""Device, numeric precision and memory format, decided in one place.

CUDA: fp16 autocast with a GradScaler (AMP on by default), the model and its input batches in
channels_last (NHWC) memory format, which cuDNN's tensor-core convolutions run without transposes,
and TF32 allowed for what stays in float32 (`--no-amp`). CPU: full precision by default; `--amp`
asks for bf16 autocast, which only pays off on CPUs with bf16 support (AMX/AVX-512); the memory
format is the one measured fastest on CPU (CPU_MEMORY_FORMAT).

The memory format is a layout, not a change of numbers: checkpoints are written from
`portable_state_dict` (contiguous tensors), so they load into a model of either format anywhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from segtrain.common.errors import InputError

# DeepLabV3-ResNet18, 256x256, batch 8, fp32 training steps on the project's 2-core CPU in one process
# (benchmarks/cpu_memory_format.py, recorded in benchmarks/results/cpu_memory_format.log): NCHW 0.38
# images/s, channels_last 0.29 (best of the rounds), so the CPU keeps NCHW. On that loaded machine the
# spread between runs is as large as the difference (benchmarks/results/train_speed_cpu_r18_256.log):
# rerun both scripts on a quiet CPU before changing this.
CPU_MEMORY_FORMAT = torch.contiguous_format


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
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def name(self) -> str:
        dtype = {torch.float16: "fp16 autocast", torch.bfloat16: "bf16 autocast"}.get(self.dtype, "fp32")
        return dtype + (", channels_last" if self.memory_format == torch.channels_last else "")

    def model(self, model: nn.Module) -> nn.Module:
        """`model` moved to the device in this memory format (in place, as nn.Module.to does)."""
        return model.to(self.device, memory_format=self.memory_format)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch (N, C, H, W) on the device in this memory format."""
        return x.to(self.device, non_blocking=True, memory_format=self.memory_format)

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
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls and convolutions on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels once
        memory_format = torch.channels_last
    else:
        memory_format = CPU_MEMORY_FORMAT
    return Precision(device, dtype, scaler, memory_format)


def portable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor contiguous (NCHW), detached, whatever its memory format."""
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}

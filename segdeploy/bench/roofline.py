"""Compute-efficiency references: a model's FLOPs, the machine's SGEMM rate, and what machine it is.

FLOP convention: one multiply-add is 2 FLOPs (so a convolution costs 2 x its MACs), which is
what ``torch.utils.flop_counter.FlopCounterMode`` counts. It counts convolutions, matrix
products and attention only; batch norm, activations, pooling and resizing are not counted
(they are a few percent of a segmentation network's arithmetic). The roofline is a large
float32 matrix product (SGEMM) timed in the same process with the same thread count: the
rate dense FP32 arithmetic reaches on this machine, to which a model's achieved rate is compared.
Two libraries are timed (torch.mm: MKL on CPU, cuBLAS on GPU; onnxruntime's MatMul: MLAS on CPU)
and the faster one is the roofline, so the bar is the best GEMM this process can run.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from segtrain.common.extras import installed
from segtrain.common.system import cpu_features, cpu_name, usable_cores

FLOP_CONVENTION = "2 FLOPs per multiply-add (torch.utils.flop_counter: convolutions and matmuls only)"
SGEMM_SIZE = 2048


@dataclass(frozen=True)
class Sgemm:
    """float32 n x n x n matrix product rate of one library over `runs` timed products."""

    library: str
    n: int
    threads: int
    device: str
    runs: int
    gflops: float  # from the median time
    gflops_best: float  # from the fastest


@dataclass(frozen=True)
class Roofline:
    """The faster library's median rate (`gflops`), what a model's achieved GFLOP/s is compared with."""

    gflops: float
    library: str
    n: int
    threads: int
    device: str
    runs: int
    libraries: list[Sgemm]


@dataclass(frozen=True)
class Machine:
    """Where a bench ran: CPU, the instruction-set flags that matter for FP32/INT8 kernels, memory, versions."""

    cpu: str
    usable_cores: int
    logical_cpus: int | None
    isa: list[str]
    memory_gib: float
    os: str
    python: str
    numpy: str
    onnxruntime: str
    onnxruntime_providers: list[str]
    torch: str | None  # None: PyTorch is not installed
    gpu: str | None = None


def torch_sgemm(n: int, device: str) -> Callable[[], None]:
    """One torch.mm of two random float32 n x n matrices per call (in place; GPU synchronised)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device) for _ in range(2))
    out = torch.empty(n, n, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def product() -> None:
        torch.mm(a, b, out=out)
        sync()

    return product


def ort_sgemm(n: int, threads: int) -> Callable[[], None]:
    """One onnxruntime MatMul (MLAS, the CPU provider's own GEMM) of float32 n x n matrices per call."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "b")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = rng.standard_normal((n, n), dtype=np.float32)
    return lambda: session.run(None, {"a": a})


def sgemm_calls(n: int, threads: int, device: str) -> dict[str, Callable[[], None]]:
    """The SGEMMs timed as the roofline: torch.mm (MKL/oneDNN, or cuBLAS on a GPU; not without PyTorch)
    and, on CPU, ORT's MatMul."""
    calls = {"torch.mm": torch_sgemm(n, device)} if installed("train") else {}
    if device == "cpu":
        calls["onnxruntime MatMul"] = ort_sgemm(n, threads)
    return calls


def sgemm_rate(library: str, n: int, threads: int, device: str, seconds: list[float]) -> Sgemm:
    flop = 2.0 * n**3
    return Sgemm(library, n, threads, device, len(seconds), flop / float(np.median(seconds)) / 1e9,
                 flop / min(seconds) / 1e9)


def roofline(rates: list[Sgemm]) -> Roofline:
    """The faster library's median rate is the roofline; every library's figures are kept."""
    best = max(rates, key=lambda r: r.gflops)
    return Roofline(best.gflops, best.library, best.n, best.threads, best.device, best.runs, list(rates))


def _valid_taps(n_in: int, n_out: int, k: int, stride: int, pad: int, dilation: int) -> int:
    """(output position, kernel tap) pairs along one axis whose input index is inside the image."""
    index = np.arange(n_out)[:, None] * stride - pad + np.arange(k)[None, :] * dilation
    return int(((index >= 0) & (index < n_in)).sum())


def _conv_valid_flop(x_shape: list[int], w_shape: list[int], _bias: object, stride: list[int], padding: list[int],
                     dilation: list[int], transposed: bool, *args: object, out_shape: list[int] | None = None,
                     **kwargs: object) -> int:
    """2 x multiply-adds of a convolution, leaving out kernel taps that fall on zero padding."""
    from torch.utils.flop_counter import conv_flop_count

    if transposed or not isinstance(padding, (list, tuple)):
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=transposed)
    taps = 1
    for i in range(len(w_shape) - 2):
        taps *= _valid_taps(x_shape[2 + i], out_shape[2 + i], w_shape[2 + i], stride[i], padding[i], dilation[i])
    return 2 * x_shape[0] * w_shape[0] * w_shape[1] * taps


def count_gflop(model: Any, size: tuple[int, int], device: str = "cpu") -> dict[str, float]:
    """GFLOP of one forward pass on one 3 x H x W image: "dense" (FLOP_CONVENTION, every kernel tap) and
    "valid_taps" (taps on zero padding left out: what a kernel that skips padding computes, which for
    DeepLabV3's dilated convolutions on small feature maps is much less)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    x = torch.zeros(1, 3, *size, device=device)
    out = {}
    for name, mapping in (("dense", None), ("valid_taps", {aten.convolution: _conv_valid_flop,
                                                           aten._convolution: _conv_valid_flop})):
        counter = FlopCounterMode(display=False, custom_mapping=mapping)
        with torch.inference_mode(), counter:
            model(x)
        out[name] = counter.get_total_flops() / 1e9
    return out


def describe_machine() -> Machine:
    """This machine and the versions of the libraries the bench times."""
    import onnxruntime
    import psutil

    torch_version, gpu = None, None
    if installed("train"):
        import torch

        torch_version = torch.__version__
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return Machine(cpu=cpu_name(), usable_cores=usable_cores(),
                   logical_cpus=os.cpu_count(), isa=cpu_features(),
                   memory_gib=round(psutil.virtual_memory().total / 2**30, 1),
                   os=f"{platform.system()} {platform.release()}", python=platform.python_version(),
                   numpy=np.__version__, onnxruntime=onnxruntime.__version__,
                   onnxruntime_providers=onnxruntime.get_available_providers(), torch=torch_version, gpu=gpu)


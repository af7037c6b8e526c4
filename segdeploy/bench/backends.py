"""The backends `segdeploy bench` times: PyTorch eager, onnxruntime sessions and OpenVINO compiled
models behind one interface.

A `Runner` turns a float32 NCHW batch into float32 logits; its session time covers loading (for
PyTorch: the checkpoint, the model build and its weights; for OpenVINO: reading and compiling the
.onnx file). Every backend runs with the bench's thread count (torch.set_num_threads = onnxruntime
intra_op_num_threads, inter-op 1 = OpenVINO INFERENCE_NUM_THREADS). Without the `train` extra
(no PyTorch) the bench still times .onnx files; the torch parts are left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.bench.config import PRECISION, BenchConfig, BenchRunError
from segdeploy.bench.models import ModelRef
from segdeploy.infer.openvino_runtime import OpenVinoModel, openvino_version
from segdeploy.infer.runtime import OnnxModel, gpu_provider_available
from segtrain.common.errors import ToolError
from segtrain.common.extras import install_command, installed


@dataclass
class Runner:
    backend: str
    provider: str
    session_seconds: float
    run: Callable[[np.ndarray], np.ndarray]
    notes: list[str] = field(default_factory=list)


def torch_device(config: BenchConfig) -> str:
    """Where PyTorch runs: the GPU when onnxruntime gets a GPU provider (and torch has CUDA), else the CPU."""
    if not installed("train"):
        return "cpu"
    import torch

    return "cuda" if gpu_provider_available(config.provider) and torch.cuda.is_available() else "cpu"


def torch_runner(ref: ModelRef, config: BenchConfig) -> Runner:
    """The checkpoint's eager model (load + build + weights = its session time), inference mode."""
    import torch

    from segtrain.models import load_model

    device = torch_device(config)
    t0 = time.perf_counter()
    model, _ = load_model(ref.path, device=device)
    notes = []
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
        notes.append("channels-last")
    seconds = time.perf_counter() - t0

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(x).to(device)
            if config.channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            return model(t).float().cpu().numpy()

    return Runner("torch", f"pytorch eager ({device})", seconds, run, notes)


def ort_runner(backend: str, path: Path, config: BenchConfig) -> Runner:
    """An onnxruntime session with the bench's threads, graph optimisation level and provider."""
    model = OnnxModel(path, provider=config.provider, threads=config.threads,
                      graph_optimization=config.graph_optimization)
    notes = [f"graph optimisation {config.graph_optimization}"]
    run = model.run
    if config.iobinding:
        notes.append("IOBinding")
        run = _iobinding_run(model)
    return Runner(backend, model.providers[0], model.session_seconds, run, notes)


def ov_runner(backend: str, path: Path, config: BenchConfig) -> Runner:
    """An OpenVINO model compiled for the CPU with the bench's threads (float32 precision outside int8 layers)."""
    model = OpenVinoModel(path, threads=config.threads)
    return Runner(backend, model.providers[0], model.session_seconds, model.run, [f"OpenVINO {openvino_version()}"])


def _iobinding_run(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Run through an IOBinding: input bound in place, output allocated by the provider, then copied out."""
    session = model.session

    def run(x: np.ndarray) -> np.ndarray:
        binding = session.io_binding()
        binding.bind_cpu_input(model.input_name, np.ascontiguousarray(x, np.float32))
        binding.bind_output(model.output_name)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)

    return run


def make_runner(backend: str, ref: ModelRef, config: BenchConfig) -> Runner:
    if backend == "torch":
        return torch_runner(ref, config)
    if backend.startswith("ov-"):
        return ov_runner(backend, ref.onnx[PRECISION[backend]], config)
    return ort_runner(backend, ref.onnx[PRECISION[backend]], config)


def skip_reason(backend: str, ref: ModelRef, config: BenchConfig) -> str | None:
    """Why `backend` cannot run for this model here, or None."""
    if backend == "torch" and ref.kind != "checkpoint":
        return "needs a checkpoint (an .onnx file has no PyTorch weights)"
    if backend == "ort-fp16" and not gpu_provider_available(config.provider):
        return "FP16 is benchmarked with a GPU provider only (none available or --provider cpu)"
    if backend.startswith("ov-") and not installed("openvino"):
        return f"OpenVINO is not installed: {install_command('openvino')}"
    if backend != "torch" and PRECISION[backend] not in ref.onnx:
        return f"no {PRECISION[backend]} model (export with --{PRECISION[backend]})"
    return None


@contextmanager
def backend_errors(ref: ModelRef, backend: str) -> Iterator[None]:
    """A backend that cannot load is an input error (raised as it is); one that fails while running is a run error."""
    try:
        yield
    except (ToolError, KeyboardInterrupt):
        raise
    except Exception as e:  # onnxruntime and torch raise their own types; name the backend and the model
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise BenchRunError(f"{ref.path}: {backend} failed ({first})") from e


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch.set_num_threads for the bench (restored afterwards, so tests running in-process are unaffected)."""
    if not installed("train"):
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

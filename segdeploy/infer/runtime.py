"""The runtimes behind one interface (torch-free): `open_model` opens an .onnx file with onnxruntime (OnnxModel)
or OpenVINO (openvino_runtime.py), each reading the spec through model_file.read_model_metadata and checking the
graph (check_graph_io, check_logits), so pre- and post-processing never depend on the engine. `resolve_runtime`
is the rule of `--runtime auto`; where both engines could run, runtime_choice.py measures which is faster.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segdeploy.infer.model_file import (
    ModelLoadError,
    ModelMetadata,
    check_graph_io,
    check_logits,
    load_graph,
    read_model_metadata,
)
from segdeploy.infer.openvino_runtime import OpenVinoModel
from segtrain.common.errors import whole_message
from segtrain.common.extras import installed
from segtrain.common.settings import THREADS, check_argument

__all__ = ["RUNTIME_CHOICES", "Model", "ModelLoadError", "ModelMetadata", "OnnxModel", "OpenVinoModel", "RuntimeChoice",
           "load_graph", "open_model", "read_model_metadata", "resolve_runtime"]

RUNTIME_CHOICES = ("auto", "onnxruntime", "openvino")  # the engines behind open_model
PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
_PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                   "tensorrt": "TensorrtExecutionProvider"}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def resolve_providers(provider: str) -> list[str]:
    """onnxruntime provider list for a --provider choice; auto prefers TensorRT, then CUDA."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "auto":
        order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        return [p for p in order if p in available]
    if provider not in _PROVIDER_NAMES:
        raise ModelLoadError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDER_CHOICES)}")
    name = _PROVIDER_NAMES[provider]
    if name not in available:
        raise ModelLoadError(f"provider {provider} is not available here (onnxruntime has {', '.join(available)})")
    return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]


def gpu_provider_available(provider: str) -> bool:
    """Whether a --provider choice would run on a GPU here."""
    import onnxruntime as ort

    if provider not in ("auto", "cuda", "tensorrt"):
        return False
    return any(p in ort.get_available_providers() for p in GPU_PROVIDERS)


# Why the overlapped pipeline of `segdeploy batch` opens onnxruntime with spinning=False (a Predictor may too).
SPINNING_NOTE = """onnxruntime's pool threads spin-wait for work, between a run's operators and after it: the
fastest for one call at a time, but where decode and write threads share the cores the spinning takes their time.
On a quiet 2-core Intel Xeon with AMX (2026-12-06; benchmarks/results/onnxruntime_spinning_*.json: DeepLabV3-
ResNet18 at 256 px, batch 4, 2 threads, the settings interleaved in one process), `segdeploy batch` without
spinning ran INT8 over 258 photos at 25.39 against 23.52 images/s (+8%) and FP32 over 52 at 10.23 against 9.97
(+2.6%); model-only at batch 1, without spinning was 3 to 4% slower."""


class OnnxModel:
    """One onnxruntime session plus the spec that says how to feed it. `spinning=False`: its threads sleep
    while they wait for work (SPINNING_NOTE)."""

    runtime = "onnxruntime"
    runtime_reason = "--runtime onnxruntime"  # open_model says why when it chose

    def __init__(self, path: str | Path, provider: str = "auto", threads: int | None = None,
                 graph_optimization: str = "all", spinning: bool = True) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        meta = read_model_metadata(self.path)
        self.spec, self.provenance, self.metadata = meta.spec, meta.provenance, meta.props
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if not spinning:  # see SPINNING_NOTE
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        levels = dict(zip(GRAPH_OPTIMIZATION_LEVELS, (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                                      ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                                      ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                                      ort.GraphOptimizationLevel.ORT_ENABLE_ALL), strict=True))
        opts.graph_optimization_level = levels[graph_optimization]
        providers = resolve_providers(provider)
        t0 = time.perf_counter()
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:
            raise ModelLoadError(f"{self.path}: onnxruntime cannot load it ({whole_message(e)})") from e
        self.session_seconds = time.perf_counter() - t0
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        check_graph_io(self.path, self.spec, [i.shape or [] for i in inputs], outputs[0].shape or [], outputs[0].type)
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self._output_checked = False

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW (already preprocessed) -> float32 logits NxCxhxw."""
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        if not self._output_checked:
            check_logits(self.path, self.spec, batch, out)
            self._output_checked = True
        return out.astype(np.float32, copy=False)


Model = OnnxModel | OpenVinoModel


class RuntimeChoice(NamedTuple):
    """The engine a --runtime choice resolves to, and why (what `segdeploy batch` reports)."""

    runtime: str  # "onnxruntime" | "openvino"
    reason: str


def resolve_runtime(runtime: str = "auto", provider: str = "auto") -> RuntimeChoice:
    """The engine for --runtime with --provider by rule: auto takes OpenVINO on the CPU when it is installed,
    onnxruntime when a GPU provider is asked for or available, or when OpenVINO is not installed. Where the
    rule gives OpenVINO for auto, both engines could run: runtime_choice.open_chosen then measures."""
    if runtime not in RUNTIME_CHOICES:
        raise ModelLoadError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIME_CHOICES)}")
    if runtime == "openvino" and provider in ("cuda", "tensorrt"):
        raise ModelLoadError(f"--runtime openvino runs on the CPU; --provider {provider} is an onnxruntime "
                             "provider (use --runtime onnxruntime or auto)")
    if runtime != "auto":
        return RuntimeChoice(runtime, f"--runtime {runtime}")
    if provider in ("cuda", "tensorrt"):
        return RuntimeChoice("onnxruntime", f"auto: --provider {provider} is an onnxruntime provider")
    if provider == "auto" and gpu_provider_available(provider):
        return RuntimeChoice("onnxruntime", "auto: onnxruntime has a GPU provider here")
    if not installed("openvino"):
        return RuntimeChoice("onnxruntime", "auto: OpenVINO is not installed")
    return RuntimeChoice("openvino", "auto: OpenVINO on the CPU")


def open_model(path: str | Path, runtime: str = "auto", provider: str = "auto", threads: int | None = None,
               graph_optimization: str = "all", spinning: bool = True) -> Model:
    """A loaded model behind the one interface the inference path uses: `.spec`, `.provenance`,
    `.metadata`, `.path`, `.run(batch)`, `.providers`, `.session_seconds`, `.runtime`, and
    `.runtime_reason` (why that engine). `runtime` is one of RUNTIME_CHOICES (see resolve_runtime);
    `provider`, `graph_optimization` and `spinning` (SPINNING_NOTE) are onnxruntime settings."""
    if threads is not None:
        threads = check_argument("threads", threads, int, THREADS)
    choice = resolve_runtime(runtime, provider)
    if choice.runtime == "openvino":
        model: Model = OpenVinoModel(path, threads=threads)
    else:
        model = OnnxModel(path, provider=provider, threads=threads, graph_optimization=graph_optimization,
                          spinning=spinning)
    model.runtime_reason = choice.reason
    return model

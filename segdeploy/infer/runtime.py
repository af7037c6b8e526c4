"""onnxruntime sessions for self-describing models (torch-free).

An `OnnxModel` reads the model spec from the file's metadata_props, so nothing but the .onnx
file is needed to preprocess inputs and interpret outputs. `read_model_metadata` is the one
place a file's metadata becomes a ModelSpec and a Provenance (or a ModelLoadError).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segtrain.contract import ModelSpec, Provenance
from segtrain.errors import InputError
from segtrain.fileio import looks_like_torch_file

RUNTIME_CHOICES = ("onnxruntime",)  # the engines behind open_model
PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
_PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                   "tensorrt": "TensorrtExecutionProvider"}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class ModelLoadError(InputError):
    """A model file that is missing, not ONNX, or lacks the segtrain spec."""


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported model says about itself: the spec, the provenance and the raw metadata_props."""

    spec: ModelSpec
    provenance: Provenance
    props: dict[str, str]


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


def load_graph(path: str | Path):
    """The ONNX model proto without its weights' external data; ModelLoadError when it is not ONNX.

    Every inference command opens its model file here, so a PyTorch checkpoint given in place of
    an ONNX model gets the same advice everywhere: export it first.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: file not found")
    if looks_like_torch_file(path):  # checked first: protobuf may half-parse a zip archive
        raise ModelLoadError(f"{path}: a PyTorch checkpoint, not an ONNX model; export it first: "
                             f"`segdeploy export {path}`")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends for non-ONNX bytes
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(e).__name__})") from e


def read_model_metadata(path: str | Path, proto=None) -> ModelMetadata:
    """The spec and provenance in an ONNX file's metadata_props (`proto` when already loaded)."""
    proto = load_graph(path) if proto is None else proto
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        spec = ModelSpec.from_metadata(props)
    except (ValueError, TypeError, AttributeError) as e:
        raise ModelLoadError(f"{path}: no segtrain model spec in its metadata ({e})") from e
    return ModelMetadata(spec, Provenance.from_metadata(props), props)


class OnnxModel:
    """One onnxruntime session plus the spec that says how to feed it."""

    def __init__(self, path: str | Path, provider: str = "auto", threads: int | None = None,
                 graph_optimization: str = "all") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        meta = read_model_metadata(self.path)
        self.spec, self.provenance, self.metadata = meta.spec, meta.provenance, meta.props
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
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
            raise ModelLoadError(f"{self.path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from e
        self.session_seconds = time.perf_counter() - t0
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW (already preprocessed) -> float32 logits NxCxhxw."""
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        return out.astype(np.float32, copy=False)


def open_model(path: str | Path, runtime: str = "onnxruntime", provider: str = "auto", threads: int | None = None,
               graph_optimization: str = "all") -> OnnxModel:
    """A loaded model behind the one interface the inference path uses: `.spec`, `.path`, `.run(batch)`,
    `.providers`, `.session_seconds`. `runtime` picks the engine (RUNTIME_CHOICES)."""
    if runtime not in RUNTIME_CHOICES:
        raise ModelLoadError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIME_CHOICES)}")
    return OnnxModel(path, provider=provider, threads=threads, graph_optimization=graph_optimization)

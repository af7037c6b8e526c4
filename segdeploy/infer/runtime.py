"""onnxruntime sessions for self-describing models (torch-free).

An `OnnxModel` reads the model spec from the file's metadata_props, so nothing but the .onnx
file is needed to preprocess inputs and interpret outputs. `read_model_metadata` is the one
place a file's metadata becomes a ModelSpec and a Provenance (or a ModelLoadError).

A model file is not trusted blindly: its spec's values are checked when it is read (ModelSpec),
and its graph when it is opened (`check_graph_io`: one image input of 3 channels, a 4-D float
output with one channel per class of the spec); what the graph leaves open (a dynamic channel
count) is checked on the first run (`check_logits`). Every runtime calls both, so a model whose
output has 7 channels while its metadata lists 5 classes is refused, not turned into masks with
classes 5 and 6.
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
        raise ModelLoadError(f"{path}: {'not a regular file' if path.exists() else 'file not found'}")
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
    except (ValueError, TypeError, AttributeError, RecursionError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"{path}: no segtrain model spec in its metadata ({reason})") from e
    return ModelMetadata(spec, Provenance.from_metadata(props), props)


FLOAT_TENSORS = ("tensor(float)", "tensor(float16)", "tensor(double)")


def check_graph_io(path: str | Path, spec: ModelSpec, inputs: list[list], output: list,
                   output_type: str) -> None:
    """ModelLoadError unless the graph takes one NCHW image and gives NxCxhxw float logits, C = the spec's classes.

    `inputs` are the shapes of the graph's inputs and `output` the shape of its first output, as the
    runtime reports them: an int for a fixed dimension, anything else for a dynamic one; an empty
    shape is unknown (then `check_logits` decides on the first run).
    """
    if len(inputs) != 1:
        raise ModelLoadError(f"{path}: the graph has {len(inputs)} inputs; a segtrain model takes one image batch")
    shape = inputs[0]
    if shape and (len(shape) != 4 or _fixed(shape[1]) not in (None, 3)):
        raise ModelLoadError(f"{path}: the graph's input is {_dims(shape)}; expected N x 3 x H x W")
    if shape and all(_fixed(d) is not None for d in shape[2:]) and tuple(shape[2:]) != spec.input_size:
        raise ModelLoadError(f"{path}: the graph's input is fixed at {_dims(shape[2:])} but its metadata says "
                             f"input size {_dims(spec.input_size)}")
    if output_type not in FLOAT_TENSORS:
        raise ModelLoadError(f"{path}: the graph's output is {output_type}; expected float logits")
    if output and (len(output) != 4 or _fixed(output[1]) not in (None, spec.num_classes)):
        raise ModelLoadError(f"{path}: the graph's output is {_dims(output)}; its metadata lists "
                             f"{spec.num_classes} classes, so N x {spec.num_classes} x H x W was expected")


def check_logits(path: str | Path, spec: ModelSpec, batch: np.ndarray, logits: np.ndarray) -> None:
    """ModelLoadError unless a run's output is N x classes x h x w for an input of N images."""
    if logits.ndim != 4 or logits.shape[0] != batch.shape[0] or logits.shape[1] != spec.num_classes:
        raise ModelLoadError(f"{path}: the model gave {_dims(logits.shape)} for {batch.shape[0]} image(s); its "
                             f"metadata lists {spec.num_classes} classes, so {batch.shape[0]} x "
                             f"{spec.num_classes} x H x W was expected")


def _fixed(dim: object) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def _dims(shape) -> str:
    return " x ".join(str(d) if _fixed(d) is not None else "?" for d in shape) or "a scalar"


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


def open_model(path: str | Path, runtime: str = "onnxruntime", provider: str = "auto", threads: int | None = None,
               graph_optimization: str = "all") -> OnnxModel:
    """A loaded model behind the one interface the inference path uses: `.spec`, `.path`, `.run(batch)`,
    `.providers`, `.session_seconds`. `runtime` picks the engine (RUNTIME_CHOICES)."""
    if runtime not in RUNTIME_CHOICES:
        raise ModelLoadError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIME_CHOICES)}")
    return OnnxModel(path, provider=provider, threads=threads, graph_optimization=graph_optimization)

"""onnxruntime sessions for self-describing models (torch-free).

An `OnnxModel` reads the model spec from the file's metadata_props, so nothing but the .onnx
file is needed to preprocess inputs and interpret outputs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from segtrain.contract import ModelSpec

PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
_PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                   "tensorrt": "TensorrtExecutionProvider"}


class ModelLoadError(Exception):
    """A model file that is missing, not ONNX, or lacks the segtrain spec."""


def resolve_providers(provider: str) -> list[str]:
    """onnxruntime provider list for a --provider choice; auto prefers TensorRT, then CUDA."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "auto":
        order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        return [p for p in order if p in available]
    if provider not in _PROVIDER_NAMES:
        raise ValueError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDER_CHOICES)}")
    name = _PROVIDER_NAMES[provider]
    if name not in available:
        raise ModelLoadError(f"provider {provider} is not available here (onnxruntime has {', '.join(available)})")
    return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file, without loading its weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError as e:
        raise ModelLoadError(f"{path}: file not found") from e
    except Exception as e:  # onnx raises DecodeError and friends for non-ONNX bytes
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(e).__name__})") from e
    return {p.key: p.value for p in model.metadata_props}


class OnnxModel:
    """One onnxruntime session plus the spec that says how to feed it."""

    def __init__(self, path: str | Path, provider: str = "auto", threads: int | None = None,
                 graph_optimization: str = "all") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"{self.path}: file not found")
        self.metadata = read_metadata(self.path)
        try:
            self.spec = ModelSpec.from_metadata(self.metadata)
        except (ValueError, TypeError) as e:
            raise ModelLoadError(f"{self.path}: no segtrain model spec in its metadata ({e})") from e
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        opts.graph_optimization_level = levels[graph_optimization]
        t0 = time.perf_counter()
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=resolve_providers(provider))
        except ModelLoadError:
            raise
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


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)

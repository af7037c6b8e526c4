"""What an exported .onnx file says about itself, and whether its graph fits that (torch-free).

`read_model_metadata` is the one place a file's metadata_props become a ModelSpec and a
Provenance (or a ModelLoadError); every runtime behind `segdeploy.infer.runtime.open_model`
reads the spec through it, so pre- and post-processing never depend on the engine. Every runtime
also checks the graph with `check_graph_io` when it opens a model and the first output with
`check_logits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segtrain.common.errors import InputError
from segtrain.common.files import looks_like_torch_file
from segtrain.contract import ModelSpec, Provenance


class ModelLoadError(InputError):
    """A model file that is missing, not ONNX, or lacks the segtrain spec."""


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported model says about itself: the spec, the provenance and the raw metadata_props."""

    spec: ModelSpec
    provenance: Provenance
    props: dict[str, str]


def load_graph(path: str | Path):
    """The ONNX model proto without its weights' external data; ModelLoadError when it is not ONNX.

    Every inference command opens its model file here, so a PyTorch checkpoint given in place of
    an ONNX model gets the same advice everywhere: export it first.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: {'not a regular file' if path.exists() else 'file not found'}")
    if path.stat().st_size == 0:  # protobuf parses no bytes as an empty model
        raise ModelLoadError(f"{path}: empty file (0 bytes), not an ONNX model")
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

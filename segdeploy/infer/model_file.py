"""What an exported .onnx file says about itself (torch-free): the one reader of its metadata.

`read_model_metadata` is the one place a file's metadata_props become a ModelSpec and a
Provenance (or a ModelLoadError); every runtime behind `segdeploy.infer.runtime.open_model`
reads the spec through it, so pre- and post-processing never depend on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segtrain.contract import ModelSpec, Provenance
from segtrain.errors import InputError


class ModelLoadError(InputError):
    """A model file that is missing, not ONNX, or lacks the segtrain spec."""


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported model says about itself: the spec, the provenance and the raw metadata_props."""

    spec: ModelSpec
    provenance: Provenance
    props: dict[str, str]


def load_graph(path: str | Path):
    """The ONNX model proto without its weights' external data; ModelLoadError when it is not ONNX."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: file not found")
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

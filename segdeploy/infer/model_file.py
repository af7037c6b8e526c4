"""Exported model files (torch-free): which file to run, what it says about itself, whether its graph fits that.

`read_model_metadata` is the one place a file's metadata_props become a ModelSpec and a
Provenance (or a ModelLoadError); every runtime behind `segdeploy.infer.runtime.open_model`
reads the spec through it, so pre- and post-processing never depend on the engine. Every runtime
also checks the graph with `check_graph_io` when it opens a model and the first output with
`check_logits`.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segtrain.common.errors import InputError
from segtrain.common.files import looks_like_torch_file
from segtrain.contract import ModelSpec, Provenance

DEFAULT_MODEL_DIR = Path("exported")  # where `segdeploy export` writes and `segdeploy batch` looks
PRECISIONS = ("fp32", "int8", "fp16")
VARIANTS = PRECISIONS[1:]  # <name>.<variant>.onnx beside <name>.onnx


class ModelLoadError(InputError):
    """A model file that cannot be chosen (none, several, a missing variant), is not ONNX or lacks the spec."""


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported model says about itself: the spec, the provenance and the raw metadata_props."""

    spec: ModelSpec
    provenance: Provenance
    props: dict[str, str]


def _check_model_file(path: Path) -> None:
    """ModelLoadError for what is certainly no ONNX model: missing, not a regular file, empty, a PyTorch file.

    Every inference command opens its model file through here, so a PyTorch checkpoint given in place of
    an ONNX model gets the same advice everywhere: export it first.
    """
    if not path.is_file():
        raise ModelLoadError(f"{path}: {'not a regular file' if path.exists() else 'file not found'}")
    if path.stat().st_size == 0:  # protobuf parses no bytes as an empty model
        raise ModelLoadError(f"{path}: empty file (0 bytes), not an ONNX model")
    if looks_like_torch_file(path):  # checked first: protobuf may half-parse a zip archive
        raise ModelLoadError(f"{path}: a PyTorch checkpoint, not an ONNX model; export it first: "
                             f"`segdeploy export {path}`")


def load_graph(path: str | Path):
    """The ONNX model proto without its weights' external data; ModelLoadError when it is not ONNX."""
    import onnx

    path = Path(path)
    _check_model_file(path)
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends for non-ONNX bytes
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(e).__name__})") from e


class _WireError(ValueError):
    """Bytes that are not protobuf's wire format."""


_METADATA_PROPS = 14  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1; value = 2}


def _varint(data: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: mmap.mmap | bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of the fields of the message in data[pos:end]; start == end == -1 for a field
    that is not length-delimited."""
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError("field number 0")
        if wire == 0:
            _, pos = _varint(data, pos, end)
            yield number, -1, -1
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            yield number, -1, -1
        elif wire == 2:
            size, pos = _varint(data, pos, end)
            if pos + size > end:
                raise _WireError("truncated field")
            yield number, pos, pos + size
            pos += size
        else:  # groups (3, 4) are not in ONNX's schema; 6 and 7 are no wire types
            raise _WireError(f"wire type {wire}")
    if pos != end:
        raise _WireError("truncated field")


def _metadata_props(path: Path) -> dict[str, str]:
    """A model file's metadata_props, read from protobuf's wire format without parsing the graph (onnx.load parses
    every weight, and importing onnx alone takes about half a second: a cost each process and Ray actor paid)."""
    props: dict[str, str] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for number, start, end in _fields(data, 0, len(data)):
            if number != _METADATA_PROPS:
                continue
            if start < 0:
                raise _WireError("metadata_props is not a message")
            entry = {n: data[a:b].decode() for n, a, b in _fields(data, start, end) if n in (1, 2) and a >= 0}
            props[entry.get(1, "")] = entry.get(2, "")
    return props


def read_model_metadata(path: str | Path, proto=None) -> ModelMetadata:
    """The spec and provenance in an ONNX file's metadata_props (`proto`'s when already loaded).

    Read from the file's bytes without parsing its graph or weights (microseconds), so a run may ask it as often
    as it needs (the memory budget, --runtime auto's cache key, each engine that opens the file)."""
    if proto is not None:
        return _parse_metadata(path, {p.key: p.value for p in proto.metadata_props})
    _check_model_file(Path(path))
    try:
        props = _metadata_props(Path(path))
    except (_WireError, UnicodeDecodeError, ValueError, OSError) as e:  # mmap: ValueError, OSError
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(e).__name__})") from e
    return _parse_metadata(path, props)


def _parse_metadata(path: str | Path, props: dict[str, str]) -> ModelMetadata:
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
    """ModelLoadError unless a run's output is N x classes x h x w (h, w > 0) for an input of N images."""
    if logits.ndim != 4 or logits.shape[0] != batch.shape[0] or logits.shape[1] != spec.num_classes:
        raise ModelLoadError(f"{path}: the model gave {_dims(logits.shape)} for {batch.shape[0]} image(s); its "
                             f"metadata lists {spec.num_classes} classes, so {batch.shape[0]} x "
                             f"{spec.num_classes} x H x W was expected")
    if 0 in logits.shape[2:]:
        raise ModelLoadError(f"{path}: the model gave {' x '.join(map(str, logits.shape))} for {batch.shape[0]} "
                             "image(s): an output without pixels")


def _fixed(dim: object) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def _dims(shape) -> str:
    return " x ".join(str(d) if _fixed(d) is not None else "?" for d in shape) or "a scalar"


# --------------------------------------------------------------------------------------------
# Which file: exported/<name>.onnx (FP32) and its variants <name>.int8.onnx, <name>.fp16.onnx beside it


def variant_path(model: Path, precision: str) -> Path:
    """<name>.onnx for fp32, <name>.<precision>.onnx for a variant, whichever of them `model` is."""
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    base = fp32_name(Path(model).name)
    return Path(model).with_name(base if precision == "fp32" else base.removesuffix(".onnx") + f".{precision}.onnx")


def fp32_name(name: str) -> str:
    """The FP32 model's file name for a model or variant file name."""
    for variant in VARIANTS:
        if name.endswith(f".{variant}.onnx"):
            return name.removesuffix(f".{variant}.onnx") + ".onnx"
    return name


def default_model(model_dir: Path = DEFAULT_MODEL_DIR) -> Path:
    """The one FP32 .onnx model in `model_dir` (its .int8/.fp16 variants may sit beside it); ModelLoadError
    when there are none or several."""
    models = sorted(Path(model_dir).glob("*.onnx")) if Path(model_dir).is_dir() else []
    if not models:
        raise ModelLoadError(f"no --model given and {model_dir}/ holds no .onnx model "
                              "(run `segdeploy export` or pass --model)")
    fp32 = sorted({fp32_name(m.name) for m in models})
    if len(fp32) > 1:
        variants = sorted(m.name for m in models if m.name not in fp32)
        also = f"; variants: {', '.join(variants)}" if variants else ""
        raise ModelLoadError(f"no --model given and {model_dir}/ holds {len(fp32)} models ({', '.join(fp32)}{also}); "
                              f"choose one, e.g. --model {Path(model_dir) / fp32[0]}")
    path = Path(model_dir) / fp32[0]
    if not path.is_file():
        raise ModelLoadError(f"no --model given and {model_dir}/ holds only variants of {fp32[0]} "
                              f"({', '.join(m.name for m in models)}), not the model itself; pass --model")
    return path


def choose_model(model: Path | None, precision: str | None = None,
                 model_dir: Path = DEFAULT_MODEL_DIR) -> tuple[Path, str | None]:
    """(the model file to run, a note saying which was picked when it was not named exactly).

    No `model`: the FP32 model in `model_dir`. `precision` (fp32, int8, fp16): that variant of the
    model; ModelLoadError when it is missing.
    """
    chosen = Path(model) if model is not None else default_model(model_dir)
    if precision is not None:
        chosen = variant_path(chosen, precision)
        if not chosen.is_file():
            how = f" (`segdeploy export --{precision}` writes it)" if precision in VARIANTS else ""
            raise ModelLoadError(f"{chosen}: file not found{how}")
    if model is not None and chosen == Path(model):
        return chosen, None
    variants = sorted(p.name for p in chosen.parent.glob("*.onnx")
                      if p != chosen and fp32_name(p.name) == fp32_name(chosen.name))
    extra = f"; also there: {', '.join(variants)} (--precision picks one)" if variants else ""
    how = "no --model given" if model is None else f"--model {model} --precision {precision}"
    return chosen, f"{how}: using {chosen}{extra}"

"""Checkpoint -> self-describing ONNX, verified against PyTorch before it is put in place.

Exporter: ``torch.onnx.export(dynamo=True)`` for both models. The legacy TorchScript exporter
cannot export SegNet's max-unpooling; for DeepLabV3 both exporters give the same onnxruntime
speed, so one path serves both. Batch, height and width are dynamic; height and width are
declared as multiples of the model's input divisor (8 for DeepLabV3's output stride, 32 for
SegNet's five pools), which is what lets torch.export prove the decoder's shapes.

The file is one self-contained .onnx (weights inline; models here are far below protobuf's 2 GB)
whose metadata_props carry the ModelSpec (``segtrain.*``) and the provenance (``segdeploy.*``:
epoch, validation mIoU, checkpoint sha256, precision). It is written under a temporary name in
the output folder and renamed to ``<name>.onnx`` only after `onnx.checker` and the parity check
pass, so a failed export never leaves a model at the final path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segdeploy.verify import ParityReport, Thresholds, run_parity, verification_sizes
from segtrain.checkpoint import file_sha256, load_model
from segtrain.coco import CocoSplit, DataError
from segtrain.contract import ModelSpec
from segtrain.evaluation import split_categories
from segtrain.fileio import atomic_write_text

DEFAULT_OPSET = 20  # what torch's dynamo exporter targets; onnxruntime >= 1.17 runs it on every provider
TRACE_BLOCKS = (2, 3)  # trace input = divisor x these (batch 1): verification uses other sizes and batches
PROVENANCE_PREFIX = "segdeploy."
INPUT_NAME, OUTPUT_NAME = "input", "logits"
Echo = Callable[[str], None]


class ExportError(Exception):
    """Bad input to an export (checkpoint, data, output folder); one line, exit code 2."""


class VerificationError(Exception):
    """The exported model does not match PyTorch; carries the report. Exit code 1."""

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ExportOptions:
    out_dir: Path = Path("exported")
    opset: int = DEFAULT_OPSET
    verify: bool = True
    data: Path | None = None  # default: the dataset the checkpoint was trained on
    split: str = "validation"
    verify_images: int = 8
    verify_batch_size: int = 2
    thresholds: Thresholds = field(default_factory=Thresholds)
    int8: bool = False
    calibration_images: int = 32
    fp16: bool = False


@dataclass
class ExportResult:
    name: str
    path: Path
    report: ParityReport | None = None
    variants: dict[str, tuple[Path, ParityReport]] = field(default_factory=dict)


def output_name(checkpoint: Path) -> str:
    """runs/<name>/best_model.pth -> <name>; any other file -> its stem."""
    checkpoint = Path(checkpoint)
    if checkpoint.stem in ("best_model", "last") and checkpoint.parent.name not in ("", "."):
        return checkpoint.parent.name
    return checkpoint.stem


def find_checkpoints(runs_dir: Path = Path("runs")) -> list[Path]:
    """Every runs/*/best_model.pth."""
    return sorted(Path(runs_dir).glob("*/best_model.pth"))


def to_onnx(model: Any, spec: ModelSpec, divisor: int, opset: int = DEFAULT_OPSET) -> Any:
    """The eval-mode model as an onnx.ModelProto with dynamic batch, height and width."""
    import torch
    from torch.export import Dim

    model = model.eval()
    trace = torch.zeros(1, 3, divisor * TRACE_BLOCKS[0], divisor * TRACE_BLOCKS[1])
    dims = {0: Dim("batch", min=1, max=4096), 2: divisor * Dim("height_blocks", min=1, max=(1 << 15) // divisor),
            3: divisor * Dim("width_blocks", min=1, max=(1 << 15) // divisor)}
    quiet = logging.getLogger("onnx_ir")  # "Attribute type is ambiguous" chatter on empty attribute lists
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(model, (trace,), dynamo=True, verbose=False, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={"x": dims}, optimize=True)
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    _name_dynamic_axes(proto)
    for node in proto.graph.node:  # per-node stack traces and FX dumps: bulk, and local file paths
        del node.metadata_props[:]
        node.doc_string = ""
    return proto


def _name_dynamic_axes(proto: Any) -> None:
    """Call the input's symbolic axes batch/height/width everywhere they appear (not '32*height_blocks')."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    rename = {dims[i].dim_param: name for i, name in ((0, "batch"), (2, "height"), (3, "width")) if dims[i].dim_param}
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param in rename:
                d.dim_param = rename[d.dim_param]


def provenance(ckpt: dict[str, Any], checkpoint: Path, precision: str = "fp32") -> dict[str, str]:
    """The segdeploy.* metadata: where the weights came from and how good they were."""
    import torch

    metrics = ckpt.get("metrics") if isinstance(ckpt.get("metrics"), dict) else {}
    values = {"epoch": ckpt.get("epoch"), "val_miou": metrics.get("miou"),
              "checkpoint": Path(checkpoint).name, "checkpoint_sha256": file_sha256(checkpoint),
              "precision": precision, "exporter": f"torch.onnx dynamo (torch {torch.__version__})"}
    return {PROVENANCE_PREFIX + k: json.dumps(v) for k, v in values.items()}


def set_metadata(proto: Any, metadata: dict[str, str]) -> None:
    """Replace metadata_props entries with these keys (others are kept)."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary path beside `final` (gone afterwards unless the caller renamed it into place)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the model should get the folder's usual mode
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def prepare_out_dir(out_dir: Path) -> None:
    """Create the folder and prove a file can be written there, before any long work."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise ExportError(f"{out_dir}: cannot write exported models there ({e.strerror or type(e).__name__})") from e


def open_split(ckpt: dict[str, Any], checkpoint: Path, spec: ModelSpec, data: Path | None, split: str,
               purpose: str) -> CocoSplit:
    """The split of --data, or of the dataset recorded in the checkpoint's training config."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    root = data or (Path(config["data"]) if config.get("data") else None)
    if root is None:
        raise ExportError(f"{checkpoint}: no dataset recorded in the checkpoint; {purpose} needs --data DIR")
    try:
        return CocoSplit.open(root, split, categories=split_categories(spec))
    except DataError as e:
        raise ExportError(f"{purpose} needs real images: {e} (pass --data DIR)") from e


def write_report(report: ParityReport, path: Path) -> None:
    atomic_write_text(path, report.to_json() + "\n")


def export_checkpoint(checkpoint: Path, opts: ExportOptions, echo: Echo = print) -> ExportResult:
    """Export one checkpoint to `<out>/<name>.onnx`, verify it, then build the requested variants."""
    import torch

    from segdeploy.runtime import OnnxModel
    from segtrain.models import INPUT_DIVISORS
    from segtrain.torch_eval import torch_predictor

    model, spec, ckpt = load_model(checkpoint)
    name = output_name(checkpoint)
    prepare_out_dir(opts.out_dir)
    split = open_split(ckpt, checkpoint, spec, opts.data, opts.split, "verification") if opts.verify else None
    divisor = INPUT_DIVISORS[spec.arch]
    echo(f"exporting {checkpoint} ({spec.arch}/{spec.encoder}, opset {opts.opset})")
    proto = to_onnx(model, spec, divisor, opts.opset)
    set_metadata(proto, {**spec.to_metadata(), **provenance(ckpt, checkpoint)})
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    final = opts.out_dir / f"{name}.onnx"
    result = ExportResult(name=name, path=final)
    with staging(final) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        if split is not None:
            trace = (divisor * TRACE_BLOCKS[0], divisor * TRACE_BLOCKS[1])
            result.report = run_parity(
                torch_predictor(model, torch.device("cpu")), OnnxModel(tmp, provider="cpu").run, split, spec,
                verification_sizes(spec, divisor, avoid=trace), opts.verify_batch_size, opts.verify_images,
                opts.thresholds, ("pytorch", "onnxruntime-cpu"), f"{split.image_dir.parent} ({opts.split})")
            result.report.notes.append(f"exported with batch 1 at {trace[0]}x{trace[1]}")
            echo(result.report.summary())
            if not result.report.passed:
                failed = opts.out_dir / f"{name}.failed.verify.json"
                write_report(result.report, failed)
                raise VerificationError(f"{checkpoint}: ONNX export failed verification, no model written "
                                        f"({'; '.join(result.report.failures())}; report: {failed})",
                                        result.report)
        os.replace(tmp, final)
    if result.report is not None:
        write_report(result.report, opts.out_dir / f"{name}.verify.json")
        (opts.out_dir / f"{name}.failed.verify.json").unlink(missing_ok=True)
    echo(f"wrote {final} ({final.stat().st_size / 2**20:.1f} MiB)")
    if opts.int8 or opts.fp16:
        from segdeploy.quantize import export_variants

        result.variants = export_variants(final, ckpt, checkpoint, spec, split, opts, echo)
    return result

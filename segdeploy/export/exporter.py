"""`segdeploy export`: a checkpoint -> self-describing ONNX, verified against PyTorch before it is put in place.

`export_checkpoint` is the one orchestrator. It loads the checkpoint, opens the data it needs
(the verification split and, for INT8, the calibration split: --data, else the dataset the
checkpoint was trained on) before any long work, traces the model (segdeploy.export.trace),
stamps the spec and provenance into the metadata, checks the graph with `onnx.checker`, verifies
onnxruntime against PyTorch on real images (segdeploy.export.verify; for SegNet the max |logit
diff| bar is checked with PyTorch following onnxruntime's max-pool choices, see
segdeploy.export.routing) and only then renames the file into place. Variants (INT8, FP16) are
made from the FP32 file with the splits handed down (segdeploy.export.variants). A model that
fails verification is not written; its report is kept as ``<name>.failed.verify.json``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from segdeploy.export.artifact import (
    ExportError,
    check_existing,
    fp32_provenance,
    model_path,
    output_name,
    prepare_out_dir,
    report_path,
    set_metadata,
    staging,
    write_report,
)
from segdeploy.export.options import ExportOptions
from segdeploy.export.trace import to_onnx, trace_size
from segdeploy.export.variants import export_variants
from segdeploy.export.verify import ParityReport, run_parity, verification_sizes
from segdeploy.infer.model_file import VARIANTS
from segtrain.common.errors import RunError
from segtrain.contract import ModelSpec
from segtrain.data.coco import CocoSplit, DataError
from segtrain.evaluation import open_split_for
from segtrain.training.checkpoint import Checkpoint

__all__ = ["ExportError", "ExportOptions", "ExportResult", "VerificationError", "export_checkpoint"]

Echo = Callable[[str], None]


class VerificationError(RunError):
    """The exported model does not match PyTorch; carries the report. Exit code 1."""

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ExportResult:
    name: str
    path: Path
    report: ParityReport | None = None
    variants: dict[str, tuple[Path, ParityReport]] = field(default_factory=dict)
    up_to_date: list[str] = field(default_factory=list)  # precisions whose file was kept as it was


@dataclass
class _Data:
    """The real images an export needs, opened before any long work."""

    verification: CocoSplit | None
    calibration: CocoSplit | None


def open_data(ckpt: Checkpoint, opts: ExportOptions) -> _Data:
    """The verification split (unless --no-verify) and, for INT8, the calibration split.

    INT8 calibrates on the training images; a dataset without a train split calibrates on the
    verification split's images instead.
    """
    if not (opts.verify or opts.int8):
        return _Data(None, None)
    purpose = "verification" if opts.verify else "INT8 calibration"
    root = ckpt.data_root(opts.data, purpose=purpose)
    verification = open_split_for(ckpt.spec, root, opts.split) if opts.verify else None
    calibration = None
    if opts.int8:
        try:
            calibration = open_split_for(ckpt.spec, root, "train")
        except DataError:
            calibration = verification or open_split_for(ckpt.spec, root, opts.split)
    return _Data(verification, calibration)


def export_checkpoint(checkpoint: Path, opts: ExportOptions, echo: Echo = print) -> ExportResult:
    """Export one checkpoint to `<out>/<name>.onnx`, verify it, then build the requested variants.

    Files that are already exports of this checkpoint (same sha256 in their provenance) are kept
    and reported as up to date; a file exported from another checkpoint is an ExportError unless
    `opts.overwrite`, checked before any long work.
    """
    from segtrain.models import INPUT_DIVISORS, load_model

    model, ckpt = load_model(checkpoint)
    spec = ckpt.spec
    divisor = INPUT_DIVISORS[spec.arch]
    if any(s % divisor for s in spec.input_size):
        raise ExportError(f"{checkpoint}: input size {spec.input_size[0]}x{spec.input_size[1]} is not a multiple "
                          f"of {divisor}, which {spec.arch} needs")
    prepare_out_dir(opts.out_dir)
    name = output_name(checkpoint)
    result = ExportResult(name=name, path=model_path(opts.out_dir, name))
    wanted = {p: model_path(opts.out_dir, name, p) for p in ("fp32", *VARIANTS) if p == "fp32" or getattr(opts, p)}
    sha256 = ckpt.sha256()
    kept = result.up_to_date = check_existing(wanted, sha256, opts.overwrite)
    for precision in kept:
        echo(f"{wanted[precision]} is up to date (exported from {checkpoint}, sha256 {sha256[:12]}); "
             "kept (--overwrite exports it again)")
    todo = replace(opts, verify=opts.verify and "fp32" not in kept, int8=opts.int8 and "int8" not in kept,
                   fp16=opts.fp16 and "fp16" not in kept)
    if "fp32" in kept and not (todo.int8 or todo.fp16):
        return result
    data = open_data(ckpt, replace(todo, verify=opts.verify))
    if "fp32" not in kept:
        result.report = _export_fp32(model, ckpt, checkpoint, result.path, divisor,
                                     data.verification if todo.verify else None, opts, echo)
    if todo.int8 or todo.fp16:
        result.variants = export_variants(result.path, name, todo, data.calibration, data.verification, echo)
    return result


def _export_fp32(model: Any, ckpt: Checkpoint, checkpoint: Path, final: Path, divisor: int,
                 verification: CocoSplit | None, opts: ExportOptions, echo: Echo) -> ParityReport | None:
    """Trace, stamp, check and verify the FP32 model; rename it into place only when it passed."""
    import onnx
    import torch

    spec = ckpt.spec
    echo(f"exporting {checkpoint} ({spec.arch}/{spec.encoder}, opset {opts.opset})")
    proto = to_onnx(model, divisor, opts.opset)
    provenance = fp32_provenance(ckpt, exporter=f"torch.onnx dynamo (torch {torch.__version__})")
    set_metadata(proto, {**spec.to_metadata(), **provenance.to_metadata()})
    onnx.checker.check_model(proto, full_check=True)
    failed, report = report_path(final, failed=True), None
    with staging(final) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        if verification is not None:
            report = verify_export(model, tmp, spec, verification, divisor, opts)
            echo(report.summary())
            if not report.passed:
                write_report(report, failed)
                raise VerificationError(f"{checkpoint}: ONNX export failed verification, no model written "
                                        f"({'; '.join(report.failures())}; report: {failed})", report)
        os.replace(tmp, final)
    failed.unlink(missing_ok=True)
    if report is not None:
        write_report(report, report_path(final))
    else:
        report_path(final).unlink(missing_ok=True)  # a report about the previous file would mislead
    echo(f"wrote {final} ({final.stat().st_size / 2**20:.1f} MiB)")
    return report


def verify_export(model: Any, onnx_path: Path, spec: ModelSpec, split: CocoSplit, divisor: int,
                  opts: ExportOptions) -> ParityReport:
    """PyTorch vs onnxruntime (CPU, full graph optimisation) on real images, at sizes and a batch unlike the trace."""
    import torch

    from segdeploy.export.routing import RoutedComparer
    from segdeploy.infer.runtime import OnnxModel
    from segtrain.training.evaluate import torch_predictor

    trace = trace_size(divisor)
    report = run_parity(torch_predictor(model, torch.device("cpu")), OnnxModel(onnx_path, provider="cpu").run,
                        split, spec, verification_sizes(spec, divisor, avoid=trace), opts.verify_batch_size,
                        opts.verify_images, opts.thresholds, ("pytorch", "onnxruntime-cpu"),
                        f"{split.image_dir.parent} ({opts.split})",
                        matched=lambda: RoutedComparer.create(model, onnx_path))
    report.notes.append(f"exported with batch 1 at {trace[0]}x{trace[1]}")
    return report

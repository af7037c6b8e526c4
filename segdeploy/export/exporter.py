"""`segdeploy export`: checkpoints -> self-describing ONNX, verified against PyTorch before it is put in place.

`export_checkpoint` is the one orchestrator of a checkpoint: load it, open the data it needs
before any long work, trace (segdeploy.export.trace), stamp spec and provenance, check the graph,
verify onnxruntime against PyTorch on real images (segdeploy.export.verify, .routing), and only
then rename the file into place; variants are made from the FP32 file (segdeploy.export.variants).
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
    prepare_out_dir,
    report_path,
    set_metadata,
    staging,
    write_report,
)
from segdeploy.export.config import ExportConfig
from segdeploy.export.trace import TRACE_BATCH, to_onnx, trace_size
from segdeploy.export.variants import export_variants
from segdeploy.export.verify import ParityReport, run_parity, verification_sizes
from segdeploy.infer.model_file import VARIANTS
from segtrain.common.errors import InputError, RunError, ToolError
from segtrain.contract import ModelSpec
from segtrain.data.coco import CocoSplit, DataError
from segtrain.evaluation import open_split_for
from segtrain.training.checkpoint import Checkpoint
from segtrain.training.runs import BEST_MODEL, RUNS_DIR, best_checkpoints, run_name

__all__ = ["ExportError", "ExportConfig", "ExportResult", "VerificationError", "export_checkpoint"]

Echo = Callable[[str], None]


class VerificationError(RunError):
    """The exported model does not match PyTorch; carries the report."""

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
class ExportData:
    """The real images an export needs, opened before any long work."""

    verification: CocoSplit | None
    calibration: CocoSplit | None


def export_checkpoints(config: ExportConfig, echo: Echo = print,
                       error: Callable[[ToolError], None] = print) -> list[ToolError]:
    """Export every checkpoint of `config` (none: every runs/*/best_model.pth); returns the errors.

    A checkpoint that cannot be exported is handed to `error` and the others are still exported.
    InputError before any work when there is no checkpoint, or two would be written under one name.
    """
    paths = config.checkpoints or best_checkpoints()
    if not paths:
        raise InputError(f"no CHECKPOINT given and no {RUNS_DIR}/*/{BEST_MODEL} found")
    names = [run_name(p) for p in paths]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise InputError(f"several checkpoints would be exported as {', '.join(clashes)}.onnx; export them separately")
    failed = []
    for path in paths:
        try:
            export_checkpoint(path, config, echo=echo)
        except ToolError as e:
            error(e)
            failed.append(e)
    return failed


def open_data(ckpt: Checkpoint, config: ExportConfig) -> ExportData:
    """The verification split (unless --no-verify) and, for INT8, the calibration split.

    INT8 calibrates on the training images; a dataset without a train split calibrates on the
    verification split's images instead.
    """
    if not (config.verify or config.int8):
        return ExportData(None, None)
    purpose = "verification" if config.verify else "INT8 calibration"
    root = ckpt.data_root(config.data, purpose=purpose)
    verification = open_split_for(ckpt.spec, root, config.split) if config.verify else None
    calibration = None
    if config.int8:
        try:
            calibration = open_split_for(ckpt.spec, root, "train")
        except DataError:
            calibration = verification or open_split_for(ckpt.spec, root, config.split)
    return ExportData(verification, calibration)


def export_checkpoint(checkpoint: Path, config: ExportConfig, echo: Echo = print) -> ExportResult:
    """Export one checkpoint to `<out>/<name>.onnx`, verify it, then build the requested variants.

    Files that are already exports of this checkpoint (same sha256 in their provenance) are kept
    and reported as up to date; a file exported from another checkpoint is an ExportError unless
    `config.overwrite`, checked before any long work.
    """
    from segtrain.models import INPUT_DIVISORS, load_model

    model, ckpt = load_model(checkpoint)
    spec = ckpt.spec
    divisor = INPUT_DIVISORS[spec.arch]
    if any(s % divisor for s in spec.input_size):
        raise ExportError(f"{checkpoint}: input size {spec.input_size[0]}x{spec.input_size[1]} is not a multiple "
                          f"of {divisor}, which {spec.arch} needs")
    prepare_out_dir(config.out)
    name = run_name(checkpoint)
    result = ExportResult(name=name, path=model_path(config.out, name))
    wanted = {p: model_path(config.out, name, p) for p in ("fp32", *VARIANTS) if p == "fp32" or getattr(config, p)}
    sha256 = ckpt.sha256()
    kept = result.up_to_date = check_existing(wanted, sha256, config.overwrite)
    for precision in kept:
        echo(f"{wanted[precision]} is up to date (exported from {checkpoint}, sha256 {sha256[:12]}); "
             "kept (--overwrite exports it again)")
    todo = replace(config, verify=config.verify and "fp32" not in kept, int8=config.int8 and "int8" not in kept,
                   fp16=config.fp16 and "fp16" not in kept)
    if "fp32" in kept and not (todo.int8 or todo.fp16):
        return result
    data = open_data(ckpt, replace(todo, verify=config.verify))
    if "fp32" not in kept:
        result.report = _export_fp32(model, ckpt, checkpoint, result.path, divisor,
                                     data.verification if todo.verify else None, config, echo)
    if todo.int8 or todo.fp16:
        result.variants = export_variants(result.path, name, todo, data.calibration, data.verification, echo)
    return result


def _export_fp32(model: Any, ckpt: Checkpoint, checkpoint: Path, final: Path, divisor: int,
                 verification: CocoSplit | None, config: ExportConfig, echo: Echo) -> ParityReport | None:
    """Trace, stamp, check and verify the FP32 model; rename it into place only when it passed."""
    import onnx
    import torch

    spec = ckpt.spec
    echo(f"exporting {checkpoint} ({spec.arch}/{spec.encoder}, opset {config.opset})")
    proto = to_onnx(model, divisor, config.opset)
    provenance = fp32_provenance(ckpt, exporter=f"torch.onnx dynamo (torch {torch.__version__})")
    set_metadata(proto, {**spec.to_metadata(), **provenance.to_metadata()})
    onnx.checker.check_model(proto, full_check=True)
    failed, report = report_path(final, failed=True), None
    with staging(final) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        if verification is not None:
            report = verify_export(model, tmp, spec, verification, divisor, config)
            if ckpt.miou is not None:
                report.notes.append(f"for comparison, the checkpoint's validation mIoU in training: "
                                    f"{100 * ckpt.miou:.2f}% (its whole validation split, scored at the input "
                                    f"size {spec.input_size[0]}x{spec.input_size[1]})")
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
                  config: ExportConfig) -> ParityReport:
    """PyTorch vs onnxruntime (CPU, full graph optimisation) on real images, at sizes and a batch unlike the trace."""
    import torch

    from segdeploy.export.routing import RoutedComparer
    from segdeploy.infer.runtime import OnnxModel
    from segtrain.models import torch_predictor

    trace = trace_size(divisor)
    report = run_parity(torch_predictor(model, torch.device("cpu")), OnnxModel(onnx_path, provider="cpu").run,
                        split, spec, verification_sizes(spec, divisor, avoid=trace), config.verify_batch_size,
                        config.verify_images, config.thresholds, ("pytorch", "onnxruntime-cpu"),
                        f"{split.image_dir.parent} ({config.split})",
                        matched=lambda: RoutedComparer.create(model, onnx_path))
    report.notes.append(f"exported with batch {TRACE_BATCH} at {trace[0]}x{trace[1]}")
    return report

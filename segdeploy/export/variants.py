"""INT8 and FP16 variants of an exported FP32 model, each compared with the FP32 model.

INT8: static QDQ quantization (what ORT's CPU kernels are optimised for), weights int8 per output
channel, activations uint8 (``reduce_range`` off: VNNI-era CPUs accumulate without saturating),
MinMax ranges calibrated on training images through the contract's preprocessing, after
``quant_pre_process``. FP16: every float tensor in float16 but the graph's input and output, so
callers do not change. INT8 is held to ExportConfig.int8_gate; one below it is not written (its
report is kept as ``.int8.failed.verify.json``) and `Int8GateError` is raised once every variant
is done. FP16 is report-only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.export.artifact import model_path, quantize_workdir, report_path, set_metadata, staging, write_report
from segdeploy.export.config import ExportConfig
from segdeploy.export.verify import ParityReport, Thresholds, run_parity
from segdeploy.infer.runtime import ModelLoadError, OnnxModel
from segtrain.common.errors import RunError
from segtrain.contract import ModelSpec, Provenance, preprocess
from segtrain.data.coco import CocoSplit
from segtrain.data.images import ImageReadError

Echo = Callable[[str], None]
FP16_PROVIDERS = ("cuda", "cpu")  # first one that can load the FP16 model verifies it
NO_BARS = Thresholds()


class Int8GateError(RunError):
    """The INT8 model fell short of the accuracy gate and was not written (the FP32 model was)."""


def calibration_batches(split: CocoSplit, spec: ModelSpec, count: int) -> Iterator[np.ndarray]:
    """`count` images spread evenly over the split, each as a preprocessed 1x3xHxW batch."""
    picks = np.unique(np.linspace(0, len(split) - 1, num=min(count, len(split))).round().astype(int))
    for i in picks:
        try:
            yield preprocess(split.load_image(int(i)), spec)
        except ImageReadError:
            continue


def quantize_int8(fp32: Path, out: Path, batches: Iterator[np.ndarray], input_name: str, **overrides: Any) -> int:
    """Static QDQ INT8 of `fp32` written to `out`; returns how many calibration images were used.

    `overrides` replace quantize_static's arguments (benchmarks/experiments.py tries other settings).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.used = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            self.used += 1
            return {input_name: batch}

    reader = Reader()
    with quantize_workdir(out) as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        settings = {"quant_format": QuantFormat.QDQ, "per_channel": True, "reduce_range": False,
                    "activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
                    "calibrate_method": CalibrationMethod.MinMax,
                    "extra_options": {"CalibTensorRangeSymmetric": False}}
        quantize_static(str(prepared), str(out), reader, **{**settings, **overrides})
    if reader.used == 0:
        raise ValueError("no readable calibration image")
    return reader.used


def convert_fp16(fp32: Path, out: Path) -> None:
    """FP16 weights and activations, float32 input and output."""
    import onnx
    import onnx_ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx_ir.from_proto(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True))
    model.graph.sort()  # the converter appends the input casts after their users; the checker wants order
    onnx.save(onnx_ir.to_proto(model), str(out))


def _stamp(path: Path, fp32: OnnxModel, provenance: Provenance) -> None:
    """Copy the FP32 model's metadata into the variant, with the variant's own provenance."""
    import onnx

    model = onnx.load(str(path))
    set_metadata(model, {**fp32.metadata, **provenance.to_metadata()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _compare_with_fp32(fp32: OnnxModel, candidate: Callable[[np.ndarray], np.ndarray], label: str,
                       split: CocoSplit | None, config: ExportConfig, bars: Thresholds = NO_BARS,
                       images: int | None = None) -> ParityReport:
    """Agreement and mIoU of a variant against FP32 at the model's input size, held to `bars`."""
    if split is None:
        notes = ["unverified: --no-verify"] + (["the INT8 gate was not applied (it needs the validation images)"]
                                                if bars.checked else [])
        return ParityReport("onnx fp32", label, "-", NO_BARS, notes=notes)
    return run_parity(fp32.run, candidate, split, fp32.spec, [fp32.spec.input_size], config.verify_batch_size,
                      images or config.verify_images, bars, ("onnx fp32", label),
                      f"{split.image_dir.parent} ({split.name})")


def _int8(fp32: OnnxModel, name: str, calibration: CocoSplit, split: CocoSplit | None, config: ExportConfig,
          echo: Echo) -> tuple[Path | None, ParityReport]:
    """The INT8 model and its report; (None, report) when it fails the gate (an INT8 file of an earlier
    export is removed then: it would pass for a variant of the FP32 model just written)."""
    final = model_path(config.out, name, "int8")
    echo(f"quantizing to INT8 (QDQ, per-channel; calibrating on {min(config.calibration_images, len(calibration))} "
         f"images of {calibration.name})")
    with staging(final) as tmp:
        used = quantize_int8(fp32.path, tmp, calibration_batches(calibration, fp32.spec, config.calibration_images),
                             fp32.input_name)
        quantization = {"format": "QDQ", "weights": "int8 per-channel", "activations": "uint8",
                        "calibration": "MinMax", "calibration_images": used,
                        "calibration_split": str(calibration.image_dir.parent)}
        _stamp(tmp, fp32, dataclasses.replace(fp32.provenance, precision="int8", quantization=quantization))
        report = _compare_with_fp32(fp32, OnnxModel(tmp, provider="cpu").run, "onnx int8 (cpu)", split, config,
                                    config.int8_gate, config.int8_images)
        if report.passed is False:
            if final.exists():
                final.unlink()
                report.notes.append(f"{final.name} of an earlier export was removed")
            return None, report
        os.replace(tmp, final)
    return final, report


def _fp16(fp32: OnnxModel, name: str, split: CocoSplit | None, config: ExportConfig) -> tuple[Path, ParityReport]:
    final = model_path(config.out, name, "fp16")
    with staging(final) as tmp:
        convert_fp16(fp32.path, tmp)
        _stamp(tmp, fp32, dataclasses.replace(fp32.provenance, precision="fp16"))
        runner, problems = None, []
        for provider in FP16_PROVIDERS:
            try:
                runner = OnnxModel(tmp, provider=provider)
                break
            except ModelLoadError as e:
                problems.append(str(e).split(": ", 1)[-1])
        if runner is None:
            report = ParityReport("onnx fp32", "onnx fp16", "-", NO_BARS,
                                  notes=["unverified: no provider here runs it (" + "; ".join(problems) + ")"])
        else:
            label = f"onnx fp16 ({runner.providers[0].replace('ExecutionProvider', '').lower()})"
            report = _compare_with_fp32(fp32, runner.run, label, split, config)
        os.replace(tmp, final)
    return final, report


def export_variants(fp32_path: Path, name: str, config: ExportConfig, calibration: CocoSplit | None,
                    split: CocoSplit | None, echo: Echo) -> dict[str, tuple[Path, ParityReport]]:
    """The INT8 and/or FP16 variants of `fp32_path` requested in `config`, with their reports beside them.

    `calibration` is the split INT8 ranges are calibrated on (needed with config.int8); `split`, when
    given, is where each variant is compared with FP32. Raises Int8GateError after the other
    variants are written when the INT8 model failed its gate.
    """
    fp32 = OnnxModel(fp32_path, provider="cpu")
    made: dict[str, tuple[Path | None, ParityReport]] = {}
    if config.int8:
        if calibration is None:
            raise ValueError("INT8 needs a calibration split")
        made["int8"] = _int8(fp32, name, calibration, split, config, echo)
    if config.fp16:
        made["fp16"] = _fp16(fp32, name, split, config)
    variants, refused = {}, []
    for precision, (path, report) in made.items():
        final = model_path(config.out, name, precision)
        keep = report_path(final, failed=path is None)
        write_report(report, keep)
        report_path(final, failed=path is not None).unlink(missing_ok=True)  # one about an earlier file would mislead
        echo(report.summary())
        if path is None:
            refused.append(f"{final} not written: INT8 failed the accuracy gate ({'; '.join(report.failures())}; "
                           f"report: {keep}); the FP32 model {fp32_path} is in place")
            continue
        variants[precision] = (path, report)
        echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if refused:
        raise Int8GateError("; ".join(refused))
    return variants

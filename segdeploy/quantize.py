"""INT8 and FP16 variants of an exported FP32 model, each compared with the FP32 model.

INT8: static quantization with onnxruntime.quantization in QDQ format (what ORT's CPU kernels
are optimised for), weights int8 per output channel, activations uint8 (the x86 recommendation;
``reduce_range`` off, as VNNI-era CPUs accumulate without saturating), ranges calibrated (MinMax)
on training images run through the contract's preprocessing at the model's input size, after
``quant_pre_process`` (shape inference and graph optimisation). FP16: every float tensor in
float16 except the graph's input and output, which stay float32 so callers do not change.

Neither variant has a pass bar: the report states arg-max agreement with FP32 and the mIoU of
both on the validation images, so the cost of the smaller model is a number, not a guess.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.export import (
    PROVENANCE_PREFIX,
    ExportError,
    ExportOptions,
    open_split,
    set_metadata,
    staging,
    write_report,
)
from segdeploy.verify import ParityReport, Thresholds, run_parity
from segtrain.coco import CocoSplit
from segtrain.contract import ModelSpec, preprocess
from segtrain.images import ImageReadError

Echo = Callable[[str], None]
FP16_PROVIDERS = ("cuda", "cpu")  # first one that can load the FP16 model verifies it


def calibration_batches(split: CocoSplit, spec: ModelSpec, count: int) -> Iterator[np.ndarray]:
    """`count` images spread evenly over the split, each as a preprocessed 1x3xHxW batch."""
    picks = np.unique(np.linspace(0, len(split) - 1, num=min(count, len(split))).round().astype(int))
    for i in picks:
        try:
            yield preprocess(split.load_image(int(i)), spec)
        except ImageReadError:
            continue


def quantize_int8(fp32: Path, out: Path, batches: Iterator[np.ndarray], input_name: str) -> int:
    """Static QDQ INT8 of `fp32` written to `out`; returns how many calibration images were used."""
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
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize.") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"CalibTensorRangeSymmetric": False})
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


def _stamp(path: Path, fp32_metadata: dict[str, str], extra: dict[str, Any]) -> None:
    """Copy the FP32 model's metadata into the variant, with its own precision and details."""
    import onnx

    model = onnx.load(str(path))
    set_metadata(model, {**fp32_metadata, **{PROVENANCE_PREFIX + k: json.dumps(v) for k, v in extra.items()}})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _compare_with_fp32(fp32: Any, candidate: Callable[[np.ndarray], np.ndarray], label: str,
                       split: CocoSplit | None, opts: ExportOptions) -> ParityReport:
    """Agreement and mIoU of a variant against FP32 at the model's input size (report only)."""
    no_bars = Thresholds(max_abs_diff=None, min_agreement=None)
    data = f"{split.image_dir.parent} ({opts.split})" if split is not None else "-"
    if split is None:
        return ParityReport("onnx fp32", label, data, no_bars, notes=["unverified: --no-verify"])
    return run_parity(fp32.run, candidate, split, fp32.spec, [fp32.spec.input_size], opts.verify_batch_size,
                      opts.verify_images, no_bars, ("onnx fp32", label), data)


def _int8(fp32_path: Path, fp32: Any, ckpt: dict, checkpoint: Path, split: CocoSplit | None,
          opts: ExportOptions, echo: Echo) -> tuple[Path, ParityReport]:
    from segdeploy.runtime import OnnxModel

    spec = fp32.spec
    try:
        calib = open_split(ckpt, checkpoint, spec, opts.data, "train", "INT8 calibration")
    except ExportError:  # no training split beside the data: calibrate on the validation images
        calib = open_split(ckpt, checkpoint, spec, opts.data, opts.split, "INT8 calibration")
    final = fp32_path.with_suffix(".int8.onnx")
    echo(f"quantizing to INT8 (QDQ, per-channel; calibrating on {opts.calibration_images} images of {calib.name})")
    with staging(final) as tmp:
        used = quantize_int8(fp32_path, tmp, calibration_batches(calib, spec, opts.calibration_images),
                             fp32.input_name)
        _stamp(tmp, fp32.metadata, {"precision": "int8", "quantization": {
            "format": "QDQ", "weights": "int8 per-channel", "activations": "uint8", "calibration": "MinMax",
            "calibration_images": used, "calibration_split": str(calib.image_dir.parent)}})
        report = _compare_with_fp32(fp32, OnnxModel(tmp, provider="cpu").run, "onnx int8 (cpu)", split, opts)
        os.replace(tmp, final)
    return final, report


def _fp16(fp32_path: Path, fp32: Any, split: CocoSplit | None, opts: ExportOptions) -> tuple[Path, ParityReport]:
    from segdeploy.runtime import ModelLoadError, OnnxModel

    final = fp32_path.with_suffix(".fp16.onnx")
    with staging(final) as tmp:
        convert_fp16(fp32_path, tmp)
        _stamp(tmp, fp32.metadata, {"precision": "fp16"})
        runner, problems = None, []
        for provider in FP16_PROVIDERS:
            try:
                runner = OnnxModel(tmp, provider=provider)
                break
            except ModelLoadError as e:
                problems.append(str(e).split(": ", 1)[-1])
        if runner is None:
            report = ParityReport("onnx fp32", "onnx fp16", "-", Thresholds(None, None),
                                  notes=["unverified: no provider here runs it (" + "; ".join(problems) + ")"])
        else:
            label = f"onnx fp16 ({runner.providers[0].replace('ExecutionProvider', '').lower()})"
            report = _compare_with_fp32(fp32, runner.run, label, split, opts)
        os.replace(tmp, final)
    return final, report


def export_variants(fp32_path: Path, ckpt: dict, checkpoint: Path, spec: ModelSpec, split: CocoSplit | None,
                    opts: ExportOptions, echo: Echo) -> dict[str, tuple[Path, ParityReport]]:
    """The INT8 and/or FP16 variants requested in `opts`, with their reports written beside them."""
    from segdeploy.runtime import OnnxModel

    fp32 = OnnxModel(fp32_path, provider="cpu")
    variants = {}
    if opts.int8:
        variants["int8"] = _int8(fp32_path, fp32, ckpt, checkpoint, split, opts, echo)
    if opts.fp16:
        variants["fp16"] = _fp16(fp32_path, fp32, split, opts)
    for path, report in variants.values():
        write_report(report, path.with_suffix(".verify.json"))
        echo(report.summary())
        echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return variants

"""The `segdeploy bench` report (`--json`, schema segdeploy-bench/1): the one type the bench writes and scripts read.

Each record below is a JSON object with its fields as keys, in order (segtrain.common.json_record);
`BenchReport.read` checks a file against them and names the JSON path of the first value that
does not fit. Figures are measurements only: this project's bars live in benchmarks/.

gflop_per_image counts every kernel tap (torch.utils.flop_counter); the valid-taps count leaves
out taps that fall on zero padding, which kernels that skip padding never compute (DeepLabV3's
dilated 3x3 convolutions at output stride 8 mostly read padding on small feature maps). images/s
is the batch size over the median latency; sgemm_fraction is GFLOP/s over the model's SGEMM
roofline, timed in the same rounds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segdeploy.bench.roofline import Machine, Roofline
from segdeploy.bench.timing import LatencyStats
from segdeploy.export.verify import ParityReport
from segtrain.common.errors import InputError
from segtrain.common.files import atomic_write_text
from segtrain.common.json_record import decode, encode, key
from segtrain.common.json_shape import Record, Shape, ShapeError, String

SCHEMA = "segdeploy-bench/1"
OK, SKIPPED = "ok", "skipped"
Size = tuple[int, int]
# (numerator, denominator) backends of the speed ratios, where both were timed
RATIOS = (("ort-fp32", "torch"), ("ort-int8", "ort-fp32"), ("ort-fp16", "ort-fp32"), ("ov-fp32", "ort-fp32"),
          ("ov-int8", "ort-int8"), ("ov-int8", "ort-fp32"))


class ReportError(InputError):
    """A bench report that cannot be read; the message names the file and the JSON path."""


def size_key(size: Size | list[int]) -> str:
    """"HxW", the key of the per-size GFLOP counts."""
    return f"{size[0]}x{size[1]}"


@dataclass(kw_only=True)
class Difference:
    """A backend's first output against the reference backend's on the same input."""

    against: str
    value: float  # max |logit difference|
    argmax_agreement: float


@dataclass(kw_only=True)
class Measurement:
    """One backend at one image size and batch size."""

    image_size: Size
    batch_size: int
    first_run_seconds: float
    latency_ms: LatencyStats
    images_per_second: float
    max_abs_diff: Difference | None = key(omit_none=True)
    gflops_per_second: float | None = None
    sgemm_fraction: float | None = None
    gflops_per_second_valid_taps: float | None = None
    sgemm_fraction_valid_taps: float | None = None


@dataclass(kw_only=True)
class BackendEntry:
    """One backend of one model: timed (status ok) or skipped with the reason."""

    backend: str
    precision: str
    status: str
    reason: str | None = key(omit_none=True)
    provider: str | None = key(omit_none=True)
    threads: int | None = key(omit_none=True)
    notes: list[str] | None = key(omit_none=True)
    file: str | None = key(omit_none=True)
    session_seconds: float | None = key(omit_none=True)
    peak_rss_mib: float | None = key(omit_none=True)
    rss_at_start_mib: float | None = key(omit_none=True)
    rss_scope: str | None = key(omit_none=True)  # "phase": peak since its start; "process": lifetime peak
    results: list[Measurement] | None = key(omit_none=True)
    timed_with: list[str] | None = key(omit_none=True)  # the backends of the same interleaved rounds

    @property
    def rss_growth_mib(self) -> float:
        return self.peak_rss_mib - self.rss_at_start_mib

    def result_at(self, size: Size, batch: int) -> Measurement | None:
        return next((r for r in self.results or () if r.image_size == tuple(size) and r.batch_size == batch), None)


@dataclass(kw_only=True)
class Ratio:
    name: str  # "numerator / denominator"
    image_size: Size
    batch_size: int
    value: float
    same_rounds: bool


@dataclass(kw_only=True)
class ExportInfo:
    """How a checkpoint's ONNX files were made for the bench (or reused, when of the same checkpoint)."""

    reused: bool
    seconds: float
    files: dict[str, str]


@dataclass(frozen=True)
class _AccuracyShape(Shape):
    """An Int8Accuracy object: status (and reason), the ParityReport's keys when ok, then "openvino"."""

    nested: bool = False
    expected: str = "an object (Int8Accuracy)"

    def check(self, value: object) -> None:
        optional = {"reason": String(nonempty=False)} | ({} if self.nested else {"openvino": _AccuracyShape(True)})
        Record({"status": String()}, optional, expected=self.expected).check(value)
        if value["status"] == OK:
            ParityReport.json_shape().check(value)


@dataclass(kw_only=True)
class Int8Accuracy:
    """FP32 vs INT8 ONNX on the validation split (INT8 on onnxruntime), then the same INT8 file on OpenVINO."""

    status: str
    reason: str | None = None
    parity: ParityReport | None = None  # when ok; its keys sit beside status in the JSON
    openvino: Int8Accuracy | None = None

    @classmethod
    def skipped(cls, reason: str) -> Int8Accuracy:
        return cls(status=SKIPPED, reason=reason)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"status": self.status}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.parity is not None:
            out.update(self.parity.to_dict())
        if self.openvino is not None:
            out["openvino"] = self.openvino.to_dict()
        return out

    @classmethod
    def json_shape(cls) -> Shape:
        return _AccuracyShape(nested=False)

    @classmethod
    def from_dict(cls, value: dict) -> Int8Accuracy:
        return cls(status=value["status"], reason=value.get("reason"),
                   parity=ParityReport.from_dict(value) if value["status"] == OK else None,
                   openvino=cls.from_dict(value["openvino"]) if "openvino" in value else None)


@dataclass(kw_only=True)
class EndToEndRun:
    """`segdeploy batch --runtime R` over the photos with one model, against that model alone."""

    precision: str
    asked: str | None = key(omit_none=True)  # the --runtime of this run; absent in older reports: EndToEnd.runtime
    runtime: str  # the runtime batch used
    runtime_reason: str
    provider: str
    images: int
    failed: int
    image_size: Size
    batch_size: int
    threads: int
    workers: int
    outputs: list[str] | None = key(omit_none=True)  # absent in reports of older versions
    seconds: float
    images_per_second: float
    model_only_backend: str
    model_only_images_per_second: float
    ratio: float
    onnxruntime_model_only_images_per_second: float
    ratio_vs_onnxruntime: float
    pipeline_model_images_per_second: float | None
    stage_ms_per_image: dict[str, float]  # decode, infer, write: ms per image summed over threads


@dataclass(kw_only=True)
class EndToEnd:
    status: str
    reason: str | None = key(omit_none=True)
    photos: str | None = key(omit_none=True)
    runtime: str | None = key(omit_none=True)  # the --runtime values asked for, comma-separated
    runs: list[EndToEndRun] | None = key(omit_none=True)

    def asked(self, run: EndToEndRun) -> str:
        """The --runtime `run` was asked to use (older reports name it once, for all their runs)."""
        return run.asked or self.runtime or "auto"

    @classmethod
    def skipped(cls, reason: str) -> EndToEnd:
        return cls(status=SKIPPED, reason=reason)


@dataclass(kw_only=True)
class AutoChoice:
    """What `--runtime auto` chooses for one model file and batch size (its own measurement, made by the bench
    without the cache), beside both engines' figures from the bench's interleaved rounds."""

    precision: str
    image_size: Size
    batch_size: int
    chosen: str
    reason: str
    rounds_images_per_second: dict[str, float]  # engine -> images/s in the bench rounds, same size and batch
    share_of_faster: float  # the chosen engine's rounds figure over the faster one's (1.0: auto took the faster)


@dataclass(kw_only=True)
class ModelReport:
    """Every backend of one MODEL argument, its roofline, INT8 accuracy and end-to-end figures."""

    name: str
    source: str
    kind: str  # "checkpoint" | "onnx"
    arch: str
    encoder: str
    classes: list[str]
    spec_input_size: Size
    image_sizes: list[Size]
    input: str  # what the backends were fed
    onnx_files: dict[str, str]  # precision -> file
    export: ExportInfo | None  # None for an .onnx MODEL
    gflop_per_image: dict[str, float] | None  # "HxW" -> GFLOP; None without PyTorch
    gflop_per_image_valid_taps: dict[str, float] | None
    sgemm: Roofline
    backends: list[BackendEntry]
    int8_accuracy: Int8Accuracy
    end_to_end: EndToEnd
    ratios: list[Ratio] = field(default_factory=list)
    auto_choices: list[AutoChoice] | None = key(omit_none=True)  # None: not measured (reports of older versions)

    def timed(self) -> dict[str, BackendEntry]:
        """The backends that ran (status ok), by name."""
        return {e.backend: e for e in self.backends if e.status == OK}

    def add_derived(self) -> None:
        """Fill each measurement's GFLOP/s and SGEMM fraction, and the speed ratios."""
        for entry in self.timed().values():
            for row in entry.results:
                row.gflops_per_second, row.sgemm_fraction = self._rate(self.gflop_per_image, row)
                row.gflops_per_second_valid_taps, row.sgemm_fraction_valid_taps = self._rate(
                    self.gflop_per_image_valid_taps, row)
        self.ratios = self._ratios()

    def _rate(self, counts: dict[str, float] | None, row: Measurement) -> tuple[float | None, float | None]:
        gflop = (counts or {}).get(size_key(row.image_size))
        rate = gflop * row.images_per_second if gflop else None
        return rate, (rate / self.sgemm.gflops if rate and self.sgemm.gflops else None)

    def _ratios(self) -> list[Ratio]:
        """images/s of one backend over another's, at each (size, batch) both measured."""
        timed, out = self.timed(), []
        for num, den in RATIOS:
            if num not in timed or den not in timed:
                continue
            same_rounds = den in (timed[num].timed_with or ())
            for row in timed[num].results:
                base = timed[den].result_at(row.image_size, row.batch_size)
                if base is not None:
                    out.append(Ratio(name=f"{num} / {den}", image_size=row.image_size, batch_size=row.batch_size,
                                     value=row.images_per_second / base.images_per_second, same_rounds=same_rounds))
        return out


@dataclass(kw_only=True)
class BenchReport:
    schema: str  # SCHEMA
    created: str
    machine: Machine
    settings: dict[str, Any]  # BenchConfig's fields, paths as text
    flop_convention: str
    models: list[ModelReport]
    command: str | None = key(omit_none=True)  # benchmarks/run_suite.py records the command that made it

    @property
    def threads(self) -> int:
        return self.settings["threads"]

    def to_dict(self) -> dict[str, Any]:
        return encode(self)

    @classmethod
    def from_dict(cls, document: Any, source: str = "bench report") -> BenchReport:
        """ReportError naming `source` and the JSON path when `document` is not a bench report."""
        try:
            report = decode(cls, document)
        except ShapeError as e:
            raise ReportError(f"{source}: {e}") from None
        if report.schema != SCHEMA:
            raise ReportError(f"{source}: schema {report.schema!r} is not {SCHEMA!r}")
        return report

    @classmethod
    def read(cls, path: str | Path) -> BenchReport:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ReportError(f"{path}: cannot read a bench report ({getattr(e, 'strerror', None) or e})") from e
        return cls.from_dict(document, str(path))

    def write(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

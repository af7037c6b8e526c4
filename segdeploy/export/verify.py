"""Parity between two predictors on real images: logit differences, arg-max agreement, both mIoUs.

Export verification compares PyTorch with onnxruntime; the INT8 and FP16 reports compare the FP32
ONNX model with its variant (the INT8 gate holds its agreement and mIoU change to bars). Both
predictors see exactly the same preprocessed batches (the contract's preprocessing, through
`evaluate_split`), and each one's mIoU is scored at the images' original sizes with the same code
as `segtrain evaluate`. Torch-free: a PyTorch predictor is
passed in as a plain function.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from segtrain.common.json_record import decode, encode, record_fields, record_shape, shape_of
from segtrain.common.json_shape import ListOf, Nullable, Record, Shape, String
from segtrain.contract import ModelSpec
from segtrain.data.coco import CocoSplit
from segtrain.evaluation import evaluate_split

Predictor = Callable[[np.ndarray], np.ndarray]


class RoutedCheck(Protocol):
    """Called with each batch; `max_diff` is the routing-matched max |logit diff| so far."""

    max_diff: float

    def __call__(self, x: np.ndarray) -> None: ...


@dataclass(frozen=True)
class Thresholds:
    """Pass bars (segdeploy.export.config holds the export's); None leaves that number as a report only.
    Agreement and mIoU drop are fractions (0.99 = 99%, 0.01 = 1 point of mIoU)."""

    max_abs_diff: float | None = None
    min_agreement: float | None = None
    max_miou_drop: float | None = None

    @property
    def checked(self) -> bool:
        """Whether any bar is set (else the numbers are a report only)."""
        return any(v is not None for v in (self.max_abs_diff, self.min_agreement, self.max_miou_drop))

    def describe(self) -> str:
        """The bars that are set, e.g. "max |diff| <= 0.0001, agreement >= 99.99%"."""
        bars = []
        if self.max_abs_diff is not None:
            bars.append(f"max |diff| <= {self.max_abs_diff:g}")
        if self.min_agreement is not None:
            bars.append(f"agreement >= {100 * self.min_agreement:g}%")
        if self.max_miou_drop is not None:
            bars.append(f"mIoU drop <= {100 * self.max_miou_drop:g} points")
        return ", ".join(bars)


@dataclass
class SizeResult:
    """Both predictors at one input size over the same images."""

    size: tuple[int, int]
    images: int
    batch_size: int
    max_abs_diff: float
    mean_abs_diff: float
    agreement: float  # share of model-resolution pixels whose arg-max class is the same
    miou_reference: float
    miou_candidate: float
    # Max |diff| with the reference re-run on the candidate's max-pool choices (max-unpooling models only).
    matched_max_abs_diff: float | None = None

    @property
    def miou_change(self) -> float:
        return self.miou_candidate - self.miou_reference

    @property
    def checked_diff(self) -> float:
        """The max |diff| the bar applies to: routing-matched where the model has max-unpool routing."""
        return self.max_abs_diff if self.matched_max_abs_diff is None else self.matched_max_abs_diff

    # As JSON: the size as a list, an undefined mIoU (NaN) as null, and the mIoU change after the fields.
    _MIOUS = ("miou_reference", "miou_candidate")

    def to_dict(self) -> dict:
        out = {**dataclasses.asdict(self), "size": list(self.size), "miou_change": _null_nan(self.miou_change)}
        return out | {k: _null_nan(out[k]) for k in self._MIOUS}

    @classmethod
    def json_shape(cls) -> Shape:
        shape = record_shape(cls)
        return dataclasses.replace(shape, required={**shape.required, **{k: Nullable(shape.required[k])
                                                                         for k in cls._MIOUS}})

    @classmethod
    def from_dict(cls, value: dict) -> SizeResult:
        return cls(**record_fields(cls, value) | {k: math.nan for k in cls._MIOUS if value[k] is None})


@dataclass
class ParityReport:
    """What was compared, on which images, and whether it passed (None: report only)."""

    reference: str
    candidate: str
    data: str
    thresholds: Thresholds
    results: list[SizeResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        out = []
        t = self.thresholds
        for r in self.results:
            where = f"at {r.size[0]}x{r.size[1]}"
            if t.max_abs_diff is not None and not r.checked_diff <= t.max_abs_diff:
                kind = "" if r.matched_max_abs_diff is None else " (max-pool routing matched)"
                out.append(f"max |logit diff|{kind} {r.checked_diff:.3g} > {t.max_abs_diff:g} {where}")
            if t.min_agreement is not None and not r.agreement >= t.min_agreement:
                out.append(f"arg-max agreement {100 * r.agreement:.4f}% < {100 * t.min_agreement:.4f}% {where}")
            if t.max_miou_drop is not None and not -r.miou_change <= t.max_miou_drop:  # NaN (undefined) fails
                change = "undefined" if math.isnan(r.miou_change) else f"{_points(r.miou_change)} points"
                out.append(f"mIoU change {change} < -{100 * t.max_miou_drop:g} points {where}")
        return out

    @property
    def checked(self) -> bool:
        return self.thresholds.checked

    @property
    def passed(self) -> bool | None:
        return (not self.failures()) if self.checked and self.results else None

    def to_dict(self) -> dict:
        """The report as JSON (`.verify.json`, and the bench's INT8 accuracy), with its verdict."""
        return {"reference": self.reference, "candidate": self.candidate, "data": self.data,
                "thresholds": encode(self.thresholds), "passed": self.passed, "failures": self.failures(),
                "results": [r.to_dict() for r in self.results], "notes": self.notes}

    @classmethod
    def json_shape(cls) -> Shape:
        """What `from_dict` reads ("passed" and "failures" follow from the rest and are not read)."""
        return Record({"reference": String(nonempty=False), "candidate": String(nonempty=False),
                       "data": String(nonempty=False), "thresholds": shape_of(Thresholds),
                       "results": ListOf(shape_of(SizeResult)), "notes": ListOf(String(nonempty=False))},
                      expected="an object (ParityReport)")

    @classmethod
    def from_dict(cls, value: dict) -> ParityReport:
        return cls(value["reference"], value["candidate"], value["data"], decode(Thresholds, value["thresholds"]),
                   [SizeResult.from_dict(r) for r in value["results"]], list(value["notes"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """One screen: a row per input size, then the verdict."""
        matched = any(r.matched_max_abs_diff is not None for r in self.results)
        lines = [f"{self.candidate} vs {self.reference} on {self.data}",
                 f"  {'size':>9}  {'images':>6}  {'max|diff|':>9}  " + (f"{'matched':>9}  " if matched else "")
                 + f"{'mean|diff|':>10}  {'agreement':>9}  {'mIoU ref':>8}  {'mIoU new':>8}  {'change':>7}"]
        for r in self.results:
            lines.append(f"  {r.size[0]:>4}x{r.size[1]:<4}  {r.images:>6}  {r.max_abs_diff:>9.2e}  "
                         + (f"{r.checked_diff:>9.2e}  " if matched else "")
                         + f"{r.mean_abs_diff:>10.2e}  {100 * r.agreement:>8.4f}%  {_pct(r.miou_reference):>8}  "
                         f"{_pct(r.miou_candidate):>8}  {_points(r.miou_change):>7}")
        if matched:
            lines += ["  matched: max |diff| with PyTorch re-run on onnxruntime's max-pool choices; float32",
                      "  near-ties in pooling windows may route values differently (segdeploy/export/routing.py);",
                      "  the max |diff| bar applies to the matched column"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.passed is None:
            lines.append("  report only (no pass/fail thresholds)" if self.results else "  not verified")
        elif self.passed:
            lines.append(f"  PASSED ({self.thresholds.describe()})")
        else:
            lines.append("  FAILED: " + "; ".join(self.failures()))
        return "\n".join(lines)


def _null_nan(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.2f}%"


def _points(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{round(100 * v, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"


class _Recorder:
    """Runs the reference and keeps its inputs and outputs so the candidate can be compared batch by batch."""

    def __init__(self, predict: Predictor) -> None:
        self.predict = predict
        self.batches: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.predict(x), dtype=np.float32)
        self.batches.append((x.copy(), out))
        return out


class _Comparer:
    """Runs the candidate on the batches the reference saw and accumulates the differences."""

    def __init__(self, predict: Predictor, recorded: list[tuple[np.ndarray, np.ndarray]],
                 observe: Callable[[np.ndarray], None] | None = None) -> None:
        self.predict, self.recorded, self.observe = predict, recorded, observe
        self.calls = 0
        self.max_diff = 0.0
        self.sum_diff = 0.0
        self.agree = 0
        self.count = 0
        self.pixels = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x_ref, ref = self.recorded[self.calls]
        if not np.array_equal(x, x_ref):
            raise RuntimeError("reference and candidate were fed different batches")
        self.calls += 1
        if self.observe is not None:
            self.observe(x)
        out = np.asarray(self.predict(x), dtype=np.float32)
        if out.shape != ref.shape:
            raise RuntimeError(f"output shapes differ: reference {ref.shape}, candidate {out.shape}")
        diff = np.abs(out.astype(np.float64) - ref)
        self.max_diff = max(self.max_diff, float(np.nan_to_num(diff, nan=np.inf).max()))
        self.sum_diff += float(diff.sum())
        self.count += diff.size
        self.agree += int((out.argmax(1) == ref.argmax(1)).sum())
        self.pixels += ref.shape[0] * ref.shape[2] * ref.shape[3]
        return out


def compare(reference: Predictor, candidate: Predictor, split: CocoSplit, spec: ModelSpec,
            size: tuple[int, int], batch_size: int, limit: int, matched: RoutedCheck | None = None) -> SizeResult:
    """Both predictors on the first `limit` images of `split`, preprocessed at `size`.

    `matched`, when given, sees every batch too and keeps the routing-matched max |diff|.
    """
    at_size = dataclasses.replace(spec, input_size=tuple(size))
    recorder = _Recorder(reference)
    ref_metrics = evaluate_split(recorder, split, at_size, batch_size=batch_size, limit=limit)
    comparer = _Comparer(candidate, recorder.batches, matched)
    new_metrics = evaluate_split(comparer, split, at_size, batch_size=batch_size, limit=limit)
    return SizeResult(size=tuple(size), images=min(limit, len(split)), batch_size=batch_size,
                      max_abs_diff=comparer.max_diff, mean_abs_diff=comparer.sum_diff / max(comparer.count, 1),
                      agreement=comparer.agree / max(comparer.pixels, 1),
                      miou_reference=ref_metrics.miou, miou_candidate=new_metrics.miou,
                      matched_max_abs_diff=None if matched is None else matched.max_diff)


def verification_sizes(spec: ModelSpec, divisor: int, avoid: tuple[int, int]) -> list[tuple[int, int]]:
    """The spec's input size plus a non-square one, both multiples of `divisor`, neither equal to `avoid`."""
    h, w = spec.input_size
    alt_h = max(divisor, (3 * h // 4) // divisor * divisor)
    if alt_h == h:
        alt_h = h + divisor
    sizes = [s for s in ((h, w), (alt_h, w)) if s != tuple(avoid)]
    return sizes


def run_parity(reference: Predictor, candidate: Predictor, split: CocoSplit, spec: ModelSpec,
               sizes: Sequence[tuple[int, int]], batch_size: int, limit: int, thresholds: Thresholds,
               names: tuple[str, str], data: str,
               matched: Callable[[], RoutedCheck | None] | None = None) -> ParityReport:
    """A ParityReport over every size in `sizes` (`matched` makes a fresh routing check per size)."""
    report = ParityReport(reference=names[0], candidate=names[1], data=data, thresholds=thresholds)
    for size in sizes:
        check = matched() if matched is not None else None
        report.results.append(compare(reference, candidate, split, spec, size, batch_size, limit, check))
    if report.results:
        report.notes.append(miou_scope(min(limit, len(split)), len(split), split.name))
    return report


def miou_scope(images: int, of: int, split: str) -> str:
    """What the report's mIoU columns are measured on, so no one takes them for the model's accuracy."""
    which = f"all {of}" if images >= of else f"the first {images} of {of}"
    return (f"mIoU ref/new: {which} {split} images, fed at each row's size and scored at the photos' own "
            "sizes; it compares the two models, it is not the model's accuracy (`segdeploy evaluate` scores "
            "a whole split)")

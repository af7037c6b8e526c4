"""summary.json of a `segdeploy batch` run (summary.shard-K-of-N.json for a shard), section by section: each type
writes its part of the JSON and reads it back, checking what it reads (`BatchSummary.read`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.ground_truth import GroundTruthReport
from segdeploy.infer.batch.outputs import write_atomic
from segdeploy.infer.batch.shards import Shard, ShardSection, run_file_name
from segdeploy.infer.pipeline import Failure
from segdeploy.infer.predictor import Predictor
from segtrain.common.errors import printable
from segtrain.common.files import json_text
from segtrain.common.json_shape import (
    Anything,
    Boolean,
    Integer,
    ListOf,
    MapOf,
    Nullable,
    Number,
    Record,
    ShapeError,
    String,
    check,
)

SUMMARY = "summary"  # OUT/summary.json; a shard's is summary.shard-K-of-N.json (shards.run_file_name)
STAGES = ("decode", "infer", "write")  # the stages an image's seconds are summed over in the totals
_COUNT = Integer(lo=0)
_RATE = Nullable(Number(lo=0))  # images/s; null when no image was processed


def summary_name(shard: Shard | None = None) -> str:
    return run_file_name(SUMMARY, shard)


@dataclass(frozen=True)
class ImageRecord:
    """An image's entry in "images": its outputs (relative to --out), size (height, width), model windows (0: not
    tiled), seconds per stage, share of the pixels per class, and with --save rle the mean confidence per class
    index; `resumed` when an earlier run made its outputs (the record is the one its mask carries)."""

    input: str
    outputs: dict[str, str]
    size: tuple[int, int]
    tiles: int
    seconds: dict[str, float]
    class_share: dict[str, float]
    scores: dict[str, float] | None = None
    resumed: bool = False

    SHAPE: ClassVar[Record] = Record(
        {"input": String(), "outputs": MapOf(String()), "size": ListOf(Integer(lo=1), length=2),
         "tiles": _COUNT, "seconds": MapOf(Number(lo=0)), "class_share": MapOf(Number(lo=0))},
        optional={"scores": MapOf(Number()), "resumed": Boolean()})

    @classmethod
    def from_dict(cls, doc: dict) -> ImageRecord:
        """From a document that fits SHAPE."""
        return cls(doc["input"], doc["outputs"], tuple(doc["size"]), doc["tiles"], doc["seconds"], doc["class_share"],
                   doc.get("scores"), doc.get("resumed", False))

    def to_dict(self) -> dict:
        doc = {"input": self.input, "outputs": self.outputs, "size": list(self.size), "tiles": self.tiles,
               "seconds": self.seconds, "class_share": self.class_share}
        if self.scores is not None:
            doc["scores"] = self.scores
        if self.resumed:
            doc["resumed"] = True
        return doc


@dataclass(frozen=True)
class Totals:
    """ "totals": counts, and the speed of the images processed in this run. Stages overlap in threads, so the
    per-stage seconds summed over images exceed the wall-clock "seconds"."""

    images_found: int
    processed: int
    resumed: int
    failed: int
    seconds: float
    model_seconds: float
    stage_seconds_summed: dict[str, float]
    images_per_second: float | None
    model_images_per_second: float | None

    SHAPE: ClassVar[Record] = Record({
        "images_found": _COUNT, "processed": _COUNT, "resumed": _COUNT, "failed": _COUNT, "seconds": Number(lo=0),
        "model_seconds": Number(lo=0), "stage_seconds_summed": MapOf(Number()), "images_per_second": _RATE,
        "model_images_per_second": _RATE})

    @classmethod
    def of_run(cls, found: int, resumed: int, failed: int, wall_seconds: float,
               processed: list[ImageRecord]) -> Totals:
        """The totals of a run that processed these images (the resumed ones not among them)."""
        stages = {stage: sum(r.seconds.get(stage, 0.0) for r in processed) for stage in STAGES}
        model_seconds = stages["infer"]  # each image's share of its model calls
        return cls(found, len(processed), resumed, failed, round(wall_seconds, 3), round(model_seconds, 3),
                   {k: round(v, 3) for k, v in stages.items()}, rate(len(processed), wall_seconds),
                   rate(len(processed), model_seconds))

    @classmethod
    def from_dict(cls, doc: dict) -> Totals:
        """From a document that fits SHAPE."""
        return cls(**{f.name: doc[f.name] for f in fields(cls)})

    def to_dict(self) -> dict:
        return asdict(self)


def rate(images: int, seconds: float) -> float | None:
    """Images per second, rounded; None when there were none."""
    return round(images / seconds, 3) if images and seconds > 0 else None


@dataclass(frozen=True)
class ModelSection:
    """ "model": the file that ran (its sha256 names it), its architecture, precision, classes and input size."""

    path: str
    sha256: str
    arch: str
    encoder: str
    precision: str | None
    classes: tuple[str, ...]
    input_size: tuple[int, int]

    SHAPE: ClassVar[Record] = Record({
        "path": String(), "sha256": String(), "arch": String(), "encoder": String(), "precision": Nullable(String()),
        "classes": ListOf(String()), "input_size": ListOf(Integer(lo=1), length=2)})

    @classmethod
    def from_dict(cls, doc: dict) -> ModelSection:
        """From a document that fits SHAPE."""
        return cls(doc["path"], doc["sha256"], doc["arch"], doc["encoder"], doc["precision"], tuple(doc["classes"]),
                   tuple(doc["input_size"]))

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes), "input_size": list(self.input_size)}


@dataclass(frozen=True)
class RuntimeSection:
    """ "runtime": the --runtime asked for, the engine that ran, and why that one."""

    requested: str
    used: str
    reason: str

    SHAPE: ClassVar[Record] = Record({"requested": String(), "used": String(), "reason": String(nonempty=False)})

    @classmethod
    def from_dict(cls, doc: dict) -> RuntimeSection:
        """From a document that fits SHAPE."""
        return cls(doc["requested"], doc["used"], doc["reason"])

    def to_dict(self) -> dict:
        return asdict(self)


# The settings a summary records, as BatchConfig names them (config.RECORDED_SETTINGS); values are compared
# between shards, so only their presence and what is read of them are checked.
SETTINGS_SHAPE = Record({"alpha": Anything(), "save": ListOf(String()), "legend": Anything(), "tile": Anything(),
                         "tile_overlap": Anything()})


@dataclass(frozen=True)
class BatchSummary:
    """summary.json: what ran (model, runtime, provider, settings, memory budget, sources, --out, --gt), an
    ImageRecord per image and a Failure per input skipped (both sorted by input), the totals, and when they apply
    the ground-truth scores, the shard section and why the run stopped early."""

    model: ModelSection
    runtime: RuntimeSection
    provider: str
    providers: list[str]
    settings: dict[str, object]
    memory_budget_mb: int  # by default from the machine's memory, so recorded beside the settings
    sources: list[str]
    out_dir: str
    ground_truth_file: str | None
    images: list[ImageRecord]
    failures: list[Failure]
    totals: Totals
    ground_truth: GroundTruthReport | None = None
    shard: ShardSection | None = None
    stopped: str | None = None

    SHAPE: ClassVar[Record] = Record({
        "model": ModelSection.SHAPE, "runtime": RuntimeSection.SHAPE, "provider": String(),
        "providers": ListOf(String()), "settings": SETTINGS_SHAPE, "memory_budget_mb": Integer(lo=1),
        "sources": ListOf(String()), "out_dir": String(), "ground_truth_file": Nullable(String()),
        "images": ListOf(ImageRecord.SHAPE), "failures": ListOf(Failure.SHAPE), "totals": Totals.SHAPE},
        optional={"ground_truth": GroundTruthReport.SHAPE, "shard": ShardSection.SHAPE, "stopped": String()},
        expected="a summary object")

    @classmethod
    def from_dict(cls, doc: object) -> BatchSummary:
        """The summary in a JSON document; ShapeError (with the JSON path) when it does not fit."""
        check(doc, cls.SHAPE)
        model = ModelSection.from_dict(doc["model"])
        truth = doc.get("ground_truth")
        try:
            ground_truth = None if truth is None else GroundTruthReport.from_dict(truth, model.classes)
        except ShapeError as e:
            raise e.inside(".ground_truth") from None
        return cls(model, RuntimeSection.from_dict(doc["runtime"]), doc["provider"], doc["providers"],
                   doc["settings"], doc["memory_budget_mb"], doc["sources"], doc["out_dir"], doc["ground_truth_file"],
                   [ImageRecord.from_dict(r) for r in doc["images"]], [Failure.from_dict(f) for f in doc["failures"]],
                   Totals.from_dict(doc["totals"]), ground_truth,
                   None if "shard" not in doc else ShardSection.from_dict(doc["shard"]), doc.get("stopped"))

    @classmethod
    def read(cls, path: Path, of_shard: bool = False) -> BatchSummary:
        """The summary in file `path` (`of_shard`: a shard's, with its "shard" section). Raises what reading and
        json.loads raise, and ShapeError when it is not a batch summary."""
        summary = cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        if of_shard and summary.shard is None:
            raise ShapeError(ShardSection.SHAPE.expected, missing=True).inside(".shard")
        return summary

    def to_dict(self) -> dict:
        doc = {f.name: as_json(getattr(self, f.name)) for f in fields(self)}
        return {k: v for k, v in doc.items() if v is not None or k not in ("ground_truth", "shard", "stopped")}

    def write(self, out_dir: Path) -> Path:
        """Write it atomically as OUT/summary.json (a shard's: summary.shard-K-of-N.json); returns the path."""
        return write_json(Path(out_dir) / summary_name(self.shard.shard if self.shard else None), self.to_dict())


def what_ran(config: BatchConfig, predictor: Predictor, model_sha256: str) -> dict:
    """The fields of a summary that say what ran: model, runtime, provider, settings, sources, --out, --gt."""
    spec, provenance = predictor.spec, getattr(predictor.model, "provenance", None)
    return {"model": ModelSection(str(predictor.path), model_sha256, spec.arch, spec.encoder,
                                  provenance.precision if provenance else None, tuple(spec.classes),
                                  tuple(spec.input_size)),
            "runtime": RuntimeSection(config.runtime, predictor.model.runtime, predictor.model.runtime_reason),
            "provider": predictor.providers[0], "providers": predictor.providers, "settings": config.recorded(),
            "memory_budget_mb": config.memory_budget, "sources": [str(s) for s in config.sources],
            "out_dir": str(config.out_dir), "ground_truth_file": str(config.gt) if config.gt else None}


def as_json(value: object) -> object:
    """A section (or a list of them) as JSON; other values as they are."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def by_input(entries: list) -> list:
    """Image records or failures in the order summaries list them."""
    return sorted(entries, key=lambda e: e.input)


def write_json(path: Path, doc: dict) -> Path:
    """`doc` written atomically as indented UTF-8 JSON (a file-name byte that is not UTF-8 as \\xNN)."""
    write_atomic(path, (json_text(doc, indent=2) + "\n").encode("utf-8"))
    return path


@dataclass
class Written:
    """A summary as written to `path` (by `segdeploy batch` or `merge-summary`), and predictions.json with
    --save rle."""

    summary: BatchSummary  # or merge.MergedSummary
    path: Path
    predictions_path: Path | None = None

    @property
    def failures(self) -> list[Failure]:
        return self.summary.failures

    def describe_failures(self) -> str:
        """The skipped inputs as console lines, each with its reason."""
        lines = [f"{len(self.failures)} input(s) skipped:"]
        return "\n".join(lines + [printable(f"  {f.input}: {f.reason}") for f in self.failures])

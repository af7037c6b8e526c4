"""summary.json of a `segdeploy batch` run (summary.shard-K-of-N.json for a shard), section by section: each type
writes its part of the JSON and reads it back, checking what it reads (`BatchSummary.read`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.ground_truth import GroundTruthReport
from segdeploy.infer.batch.outputs import write_atomic
from segdeploy.infer.batch.shards import Shard, ShardSection, run_file_name
from segdeploy.infer.media import redacted
from segdeploy.infer.pipeline import Failure
from segdeploy.infer.predictor import Predictor
from segdeploy.infer.storage import location, shown
from segtrain.common.errors import printable
from segtrain.common.files import json_text
from segtrain.common.json_record import JsonRecord, key, required
from segtrain.common.json_shape import (
    Anything,
    Integer,
    ListOf,
    MapOf,
    Nullable,
    Number,
    Record,
    ShapeError,
    String,
)
from segtrain.common.outside_text import read_json

SUMMARY = "summary"  # OUT/summary.json; a shard's is summary.shard-K-of-N.json (shards.run_file_name)
STAGES = ("decode", "infer", "write")  # the stages an image's seconds are summed over in the totals
_COUNT = Integer(lo=0)
_RATE = Nullable(Number(lo=0))  # images/s; null when no image was processed
_TEXT = String()  # not empty


def summary_name(shard: Shard | None = None) -> str:
    return run_file_name(SUMMARY, shard)


@dataclass(frozen=True)
class ImageRecord(JsonRecord):
    """An image's entry in "images": its outputs (relative to --out), size (height, width), model windows (0: not
    tiled), seconds per stage, share of the pixels per class, and with --save rle the mean confidence per class
    index; `resumed` when an earlier run made its outputs (the record is the one its mask carries). A video's
    entry has the same keys (size and windows per frame, seconds and shares over all frames) and its `frames`
    and `fps`."""

    input: str = required(_TEXT)
    outputs: dict[str, str] = required(MapOf(_TEXT))
    size: tuple[int, int] = required(ListOf(Integer(lo=1), length=2))
    tiles: int = required(_COUNT)
    seconds: dict[str, float] = required(MapOf(Number(lo=0)))
    class_share: dict[str, float] = required(MapOf(Number(lo=0)))
    scores: dict[str, float] | None = key(omit_none=True)
    resumed: bool | None = key(omit_none=True)  # True, or left out
    frames: int | None = key(omit_none=True, shape=Integer(lo=1))  # a video's
    fps: float | None = key(omit_none=True, shape=Number(lo=0))


@dataclass(frozen=True)
class Totals(JsonRecord):
    """ "totals": counts of inputs (an image or a video each), and the speed of those processed in this run, in
    images (a video's frames count one each: "frames" is their number). Stages overlap in threads, so the
    per-stage seconds summed over images exceed the wall-clock "seconds"."""

    images_found: int = required(_COUNT)
    processed: int = required(_COUNT)
    resumed: int = required(_COUNT)
    failed: int = required(_COUNT)
    seconds: float = required(Number(lo=0))
    model_seconds: float = required(Number(lo=0))
    stage_seconds_summed: dict[str, float] = required(MapOf(Number()))
    images_per_second: float | None = required(_RATE)
    model_images_per_second: float | None = required(_RATE)
    frames: int | None = key(omit_none=True, shape=_COUNT)  # video frames segmented in this run

    @classmethod
    def of_run(cls, found: int, resumed: int, failed: int, wall_seconds: float,
               processed: list[ImageRecord]) -> Totals:
        """The totals of a run that processed these inputs (the resumed ones not among them)."""
        stages = {stage: sum(r.seconds.get(stage, 0.0) for r in processed) for stage in STAGES}
        model_seconds = stages["infer"]  # each image's share of its model calls
        frames = sum(r.frames or 0 for r in processed)
        pictures = frames + sum(1 for r in processed if r.frames is None)
        return cls(found, len(processed), resumed, failed, round(wall_seconds, 3), round(model_seconds, 3),
                   {k: round(v, 3) for k, v in stages.items()}, rate(pictures, wall_seconds),
                   rate(pictures, model_seconds), frames or None)



def _check_entries(summary: BatchSummary) -> None:
    """Its inputs and outputs are relative paths inside the folders they name, each input listed once, and its
    totals count what it lists; ShapeError naming the first entry or count that is not so."""
    seen: set[str] = set()
    for part, entries in (("images", summary.images), ("failures", summary.failures)):
        for i, entry in enumerate(entries):
            if entry.input in seen:
                raise ShapeError("inputs listed once", entry.input).inside(f".{part}[{i}].input")
            seen.add(entry.input)
            if part == "failures":  # a source that could not be listed is named as it was given
                continue
            for field_name, name in [("input", entry.input)] + [(f"outputs.{k}", v) for k, v in
                                                               entry.outputs.items()]:
                if not inside_name(name):
                    raise ShapeError("a relative path without '..'", name).inside(f".{part}[{i}].{field_name}")
    t, listed = summary.totals, len(summary.images)
    if t.failed != len(summary.failures) or t.processed + t.resumed > listed or \
            t.processed + t.resumed + t.failed > t.images_found:
        raise ShapeError(f"counts that agree with the {listed} images and {len(summary.failures)} failures listed",
                         t.to_dict()).inside(".totals")
    if summary.ground_truth is not None and summary.ground_truth.scored > listed:
        raise ShapeError(f"at most the {listed} images listed", summary.ground_truth.scored).inside(
            ".ground_truth.images_scored")


def inside_name(name: str) -> bool:
    """Whether `name` is a relative POSIX path that stays inside its folder (no '..', not absolute, no NUL)."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\0" not in name


def rate(images: int, seconds: float) -> float | None:
    """Images per second, rounded; None when there were none."""
    return round(images / seconds, 3) if images and seconds > 0 else None


@dataclass(frozen=True)
class ModelSection(JsonRecord):
    """ "model": the file that ran (its sha256 names it), its architecture, precision, classes and input size."""

    path: str = required(_TEXT)
    sha256: str = required(_TEXT)
    arch: str = required(_TEXT)
    encoder: str = required(_TEXT)
    precision: str | None = required(_TEXT)
    classes: tuple[str, ...] = required(ListOf(_TEXT))
    input_size: tuple[int, int] = required(ListOf(Integer(lo=1), length=2))
    coco_ids: tuple[int, ...] | None = key(omit_none=True, shape=ListOf(_COUNT))  # of the classes, in order


@dataclass(frozen=True)
class RuntimeSection(JsonRecord):
    """ "runtime": the --runtime asked for, the engine that ran, and why that one."""

    requested: str = required(_TEXT)
    used: str = required(_TEXT)
    reason: str


# The settings a summary records, as BatchConfig names them (config.RECORDED_SETTINGS); values are compared
# between shards, so only their presence and what is read of them are checked.
SETTINGS_SHAPE = Record({"alpha": Anything(), "save": ListOf(String()), "legend": Anything(), "tile": Anything(),
                         "tile_overlap": Anything()})


@dataclass(frozen=True)
class BatchSummary(JsonRecord):
    """summary.json: what ran (model, runtime, provider, settings, memory budget, sources, --out, --gt), an
    ImageRecord per image and a Failure per input skipped (both sorted by input), the totals, and when they apply
    the ground-truth scores, the shard section and why the run stopped early."""

    model: ModelSection
    runtime: RuntimeSection
    provider: str = required(_TEXT)
    providers: list[str] = required(ListOf(_TEXT))
    settings: dict[str, Any] = required(SETTINGS_SHAPE)
    memory_budget_mb: int = required(Integer(lo=1))  # by default from the machine's memory, so recorded
    sources: list[str] = required(ListOf(_TEXT))
    out_dir: str = required(_TEXT)
    ground_truth_file: str | None = required(_TEXT)
    images: list[ImageRecord]
    failures: list[Failure]
    totals: Totals
    ground_truth: GroundTruthReport | None = key(omit_none=True)
    shard: ShardSection | None = key(omit_none=True)
    stopped: str | None = key(omit_none=True)

    @classmethod
    def from_dict(cls, value: dict) -> BatchSummary:
        """The summary in `value`, its parts checked against each other (ShapeError naming the first problem)."""
        summary = super().from_dict(value)
        truth = summary.ground_truth
        if truth is not None and truth.classes != summary.model.classes:
            raise ShapeError(f"the classes of the model ({', '.join(summary.model.classes)})",
                             list(truth.classes)).inside(".ground_truth.iou")
        _check_entries(summary)
        return summary

    @classmethod
    def read(cls, path: Path, of_shard: bool = False) -> BatchSummary:
        """The summary in file `path` (`of_shard`: a shard's, with its "shard" section). Raises what reading and
        json.loads raise, and ShapeError when it is not a batch summary."""
        summary = cls.decode(read_json(location(path), "summary"))
        if of_shard and summary.shard is None:
            raise ShapeError(ShardSection.json_shape().expected, missing=True).inside(".shard")
        return summary

    def write(self, out_dir: Path) -> Path:
        """Write it atomically as OUT/summary.json (a shard's: summary.shard-K-of-N.json); returns the path."""
        return write_json(location(out_dir) / summary_name(self.shard.shard if self.shard else None), self.to_dict())


def what_ran(config: BatchConfig, predictor: Predictor, model_sha256: str) -> dict:
    """The fields of a summary that say what ran: model, runtime, provider, settings, sources, --out, --gt."""
    spec, provenance = predictor.spec, getattr(predictor.model, "provenance", None)
    return {"model": ModelSection(str(predictor.path), model_sha256, spec.arch, spec.encoder,
                                  provenance.precision if provenance else None, tuple(spec.classes),
                                  tuple(spec.input_size), tuple(spec.coco_ids)),
            "runtime": RuntimeSection(config.runtime, predictor.model.runtime, predictor.model.runtime_reason),
            "provider": predictor.providers[0], "providers": predictor.providers, "settings": config.recorded(),
            "memory_budget_mb": config.memory_budget, "sources": [redacted(s) for s in config.sources],
            "out_dir": shown(config.out_dir), "ground_truth_file": str(config.gt) if config.gt else None}


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

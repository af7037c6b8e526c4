"""`segdeploy merge-summary`: the shard summaries of a sharded batch, read through their type (BatchSummary),
checked to agree, and combined into OUT/summary.json (MergedSummary) and OUT/predictions.json (torch-free)."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.infer.batch.ground_truth import GroundTruthReport
from segdeploy.infer.batch.rle import RESULT_ENTRY, predictions_name, write_predictions
from segdeploy.infer.batch.shards import MAX_SHARDS, Shard, run_file_form, shard_of, shard_of_run_file
from segdeploy.infer.batch.summary import (
    SUMMARY,
    BatchSummary,
    ImageRecord,
    ModelSection,
    RuntimeSection,
    Totals,
    Written,
    as_json,
    by_input,
    rate,
    summary_name,
    write_json,
)
from segdeploy.infer.pipeline import Failure
from segdeploy.infer.storage import is_remote, location, shown
from segtrain.common.errors import InputError, printable
from segtrain.common.json_shape import ListOf, ShapeError, check
from segtrain.common.outside_text import OutsideTextError, read_json

# What each shard ran with that may differ between shards (each machine its own); the rest must agree.
PER_SHARD = ("runtime", "provider", "providers", "settings", "memory_budget_mb", "sources", "ground_truth_file")


class MergeError(InputError):
    """Shard summaries that are missing, unreadable or disagree; the message says which."""


@dataclass(frozen=True)
class MergedTotals(Totals):
    """The shards' totals together. "seconds" is the wall span from the earliest shard start to the latest shard
    end (by the machines' clocks) and "images_per_second" the images processed over it: the elapsed-time rate an
    unsharded run reports, queueing between shards included. "images_per_second_summed_over_shards" adds each
    shard's own rate (the shards running all at once); "model_images_per_second" is per model instance."""

    images_per_second_summed_over_shards: float | None = field(kw_only=True)
    shard_seconds_summed: float = field(kw_only=True)

    @classmethod
    def of_shards(cls, shards: list[BatchSummary]) -> MergedTotals:
        totals = [s.totals for s in shards]
        processed = sum(t.processed for t in totals)
        span = max(s.shard.finished_at for s in shards) - min(s.shard.started_at for s in shards)
        model_seconds = sum(t.model_seconds for t in totals)
        stages: dict[str, float] = {}
        for t in totals:
            for stage, seconds in t.stage_seconds_summed.items():
                stages[stage] = stages.get(stage, 0.0) + seconds
        rates = [t.images_per_second for t in totals if t.images_per_second]
        frames = sum(t.frames or 0 for t in totals)
        pictures = processed + frames - sum(1 for s in shards for r in s.images if r.frames and not r.resumed)
        return cls(sum(t.images_found for t in totals), processed, sum(t.resumed for t in totals),
                   sum(t.failed for t in totals), round(span, 3), round(model_seconds, 3),
                   {k: round(v, 3) for k, v in stages.items()}, rate(pictures, span), rate(pictures, model_seconds),
                   frames or None, images_per_second_summed_over_shards=round(sum(rates), 3) if rates else None,
                   shard_seconds_summed=round(sum(t.seconds for t in totals), 3))


@dataclass(frozen=True)
class ShardEntry:
    """An entry of the merged summary's "shards": a shard's summary file, what it ran with, its section, totals."""

    name: str
    summary: BatchSummary

    def to_dict(self) -> dict:
        return {"summary": self.name, **{k: as_json(getattr(self.summary, k)) for k in PER_SHARD},
                **self.summary.shard.to_dict(), "totals": self.summary.totals.to_dict()}


@dataclass(frozen=True)
class MergedSummary:
    """OUT/summary.json of a sharded batch: as an unsharded run's, but a PER_SHARD value that differs between
    shards is None (each shard's is in "shards"), "merged_from" names the shard summaries, and the totals are
    MergedTotals. The model is the same file in every shard (its sha256 was checked); its path is shard 0's."""

    model: ModelSection
    runtime: RuntimeSection | None
    provider: str | None
    providers: list[str] | None
    settings: dict[str, object] | None
    memory_budget_mb: int | None
    sources: list[str] | None
    ground_truth_file: str | None
    out_dir: str
    shards: list[ShardEntry]
    images: list[ImageRecord]
    failures: list[Failure]
    totals: MergedTotals
    ground_truth: GroundTruthReport | None

    def to_dict(self) -> dict:
        first = self.shards[0].summary.shard
        doc = {"model": self.model.to_dict(), **{k: as_json(getattr(self, k)) for k in PER_SHARD},
               "out_dir": self.out_dir, "merged_from": {"count": len(self.shards), "partition": first.partition,
                                                        "summaries": [s.name for s in self.shards]},
               "shards": as_json(self.shards), "images": as_json(self.images), "failures": as_json(self.failures),
               "totals": self.totals.to_dict()}
        if self.ground_truth is not None:
            doc["ground_truth"] = self.ground_truth.to_dict()
        return doc


@dataclass
class MergeResult(Written):
    summary: MergedSummary

    def describe(self) -> str:
        """What the shards did together, their speed, and the combined ground-truth scores."""
        t = self.summary.totals
        lines = [f"merged {len(self.summary.shards)} shard summaries: {t.processed} images segmented, {t.resumed} "
                 f"already done, {t.failed} failed"]
        if t.processed:
            lines.append(f"{t.seconds:.1f} s from the first shard's start to the last one's end "
                         f"({t.images_per_second} images/s); the shards' own rates add up to "
                         f"{t.images_per_second_summed_over_shards} images/s")
        lines.append(f"summary: {self.path}")
        if self.predictions_path is not None:
            lines.append(f"COCO results (RLE): {self.predictions_path}")
        if self.summary.ground_truth is not None:
            lines.append(self.summary.ground_truth.describe())
        return "\n".join(lines)


def merge_shard_summaries(out_dir: Path) -> MergeResult:
    """Check the shard summaries in `out_dir` and combine them into OUT/summary.json.

    Raises MergeError when a shard is missing, a summary is unreadable, the shards disagree
    (model, classes, alpha, shard count, input files, ground-truth scoring) or list an input twice.
    """
    paths = find_shard_summaries(out_dir)
    shards = [_load(path, Shard(k, len(paths))) for k, path in enumerate(paths)]
    _check_agreement(paths, shards)
    images, failures = _combine_entries(paths, shards)
    _check_outputs(location(out_dir), paths, shards)
    truth = [s.ground_truth for s in shards]
    if truth[0] is not None:
        try:
            GroundTruthReport.combine(truth)
        except ValueError as e:
            raise MergeError(f"{out_dir}: {e}; the shard summaries cannot all be right") from None
    merged = MergedSummary(
        model=shards[0].model, **_common_run(shards), out_dir=shown(location(out_dir)),
        shards=[ShardEntry(p.name, s) for p, s in zip(paths, shards, strict=True)], images=images, failures=failures,
        totals=MergedTotals.of_shards(shards), ground_truth=GroundTruthReport.combine(truth) if truth[0] else None)
    predictions = _merge_predictions(out_dir, shards) if "rle" in shards[0].settings["save"] else None
    return MergeResult(merged, write_json(location(out_dir) / summary_name(), merged.to_dict()), predictions)


def _merge_predictions(out_dir: Path, shards: list[BatchSummary]) -> Path:
    """The shards' predictions.shard-K-of-N.json joined into OUT/predictions.json."""
    entries: list[dict] = []
    for summary in shards:
        path = location(out_dir) / predictions_name(summary.shard.shard)
        try:
            part = read_json(path, "predictions shard")
        except FileNotFoundError:
            raise MergeError(f"{path}: missing, though its shard saved COCO RLE (--save rle); "
                             "rerun that shard") from None
        except OutsideTextError as e:
            raise MergeError(str(e)) from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise MergeError(f"{path}: cannot read it ({e})") from e
        try:
            check(part, ListOf(RESULT_ENTRY))
        except ShapeError as e:
            raise MergeError(f"{path}: not a COCO results list written by `segdeploy batch` ({e})") from None
        entries += part
    return write_predictions(out_dir, entries)


def find_shard_summaries(out_dir: Path) -> list[Path]:
    """OUT/summary.shard-K-of-N.json for K = 0..N-1; MergeError when none, some or several N."""
    out_dir = location(out_dir)
    if not out_dir.is_dir():
        raise MergeError(f"{out_dir}: no such folder")
    found: dict[int, dict[int, Path]] = {}
    for path in out_dir.iterdir():
        if (shard := shard_of_run_file(path.name, SUMMARY)) and path.is_file():
            found.setdefault(shard[1], {})[shard[0]] = path
    if not found:
        raise MergeError(f"{out_dir}: no shard summaries ({run_file_form(SUMMARY)}); "
                         "run `segdeploy batch SOURCE... --out OUT --shard K/N` for each shard first")
    if len(found) > 1:
        listing = "; ".join(f"N={n}: {', '.join(sorted(p.name for p in v.values()))}" for n, v in sorted(found.items()))
        raise MergeError(f"{out_dir}: shard summaries of different shard counts ({listing}); remove the stale ones")
    ((count, by_index),) = found.items()
    if count > MAX_SHARDS:  # before anything is enumerated per shard
        raise MergeError(f"{next(iter(by_index.values()))}: a shard count of {count} (at most {MAX_SHARDS})")
    if extra := sorted(k for k in by_index if k >= count):
        raise MergeError(f"{by_index[extra[0]]}: shard index {extra[0]} is not below the shard count {count}")
    if missing := [k for k in range(count) if k not in by_index]:
        names = ", ".join(summary_name(Shard(k, count)) for k in missing)
        raise MergeError(f"{out_dir}: {len(missing)} of {count} shard summaries missing ({names}); "
                         "run those shards (or wait for them to finish), then merge again")
    return [by_index[k] for k in range(count)]


def _load(path: Path, shard: Shard) -> BatchSummary:
    not_ours = f"{path}: not a summary written by `segdeploy batch --shard`"
    try:
        summary = BatchSummary.read(path, of_shard=True)
    except ShapeError as e:
        raise MergeError(f"{not_ours} ({e})") from None
    except OutsideTextError as e:  # too big, too deep, malformed, not a regular file: the reader said which
        raise MergeError(str(e)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MergeError(f"{path}: cannot read it ({e})") from e
    if summary.shard.shard != shard:
        raise MergeError(f"{path}: it describes shard {summary.shard.shard}, its name says {shard}")
    return summary


# What every shard must agree on, with how to show the values in the error message.
_AGREEMENT: tuple[tuple[str, Callable[[BatchSummary], object]], ...] = (
    ("model (sha256)", lambda s: s.model.sha256),
    ("classes", lambda s: list(s.model.classes)),
    ("overlay alpha", lambda s: s.settings["alpha"]),
    ("outputs (--save)", lambda s: s.settings["save"]),
    ("overlay legend (--legend)", lambda s: s.settings["legend"]),
    ("tiling (--tile, --tile-overlap)", lambda s: (s.settings["tile"], s.settings["tile_overlap"])),
    ("partition", lambda s: s.shard.partition),
    ("ground-truth scoring (--gt)", lambda s: s.ground_truth is not None),
)


def _check_agreement(paths: list[Path], shards: list[BatchSummary]) -> None:
    first, ref = paths[0].name, shards[0]
    for path, summary in zip(paths[1:], shards[1:], strict=True):
        for what, value in _AGREEMENT:
            if value(summary) != value(ref):
                raise MergeError(f"{path.name} and {first} disagree on the {what}: {value(summary)} vs {value(ref)}")
        if summary.shard.inputs_sha256 != ref.shard.inputs_sha256:
            raise MergeError(f"{path.name} and {first} saw different input files ({summary.shard.inputs_total} "
                             f"vs {ref.shard.inputs_total} images): the inputs changed between shard runs; "
                             "rerun the shards that ran before the change (finished images are not redone)")


def _combine_entries(paths: list[Path], shards: list[BatchSummary]) -> tuple[list[ImageRecord], list[Failure]]:
    """All shards' image records and failures; MergeError when an input is listed twice or misplaced."""
    owner: dict[str, int] = {}
    for k, (path, summary) in enumerate(zip(paths, shards, strict=True)):
        for entry in [*summary.images, *summary.failures]:
            if entry.input in owner:
                raise MergeError(f"{entry.input} is listed by both {paths[owner[entry.input]].name} and {path.name}")
            if shard_of(entry.input, len(paths)) != k:
                raise MergeError(f"{path.name} lists {entry.input}, which belongs to shard "
                                 f"{shard_of(entry.input, len(paths))}")
            owner[entry.input] = k
    total = shards[0].shard.inputs_total
    if len(owner) != total:
        raise MergeError(f"the shard summaries list {len(owner)} inputs but the sources held {total}")
    return (by_input([r for s in shards for r in s.images]), by_input([f for s in shards for f in s.failures]))


_UNDECODABLE = re.compile(r"\\x([89a-f][0-9a-f])")  # how summaries show a file-name byte that is not UTF-8


def _undecodable(match: re.Match) -> str:
    return chr(0xDC00 + int(match[1], 16))  # the byte as Python carries it in a file name


def _mode(path: Path) -> int | None:
    if is_remote(path):  # an object store has objects and prefixes, no links or special files
        try:
            return stat.S_IFDIR if path.is_dir() else stat.S_IFREG if path.is_file() else None
        except (OSError, ValueError):
            return None
    try:
        return os.lstat(path).st_mode
    except (OSError, ValueError):  # absent, or a name the file system cannot hold
        return None


def _check_outputs(out_dir: Path, paths: list[Path], shards: list[BatchSummary]) -> None:
    """Every output a shard lists is there, inside OUT: a regular file (a folder for a video's frames)."""
    for path, summary in zip(paths, shards, strict=True):
        for record in summary.images:
            for kind, rel in record.outputs.items():
                mode = _mode(out_dir / rel) or _mode(out_dir / _UNDECODABLE.sub(_undecodable, rel))
                wanted = stat.S_ISDIR if kind == "frames" else stat.S_ISREG
                if mode is None or not wanted(mode):
                    what = "missing" if mode is None else f"not a {'folder' if kind == 'frames' else 'regular file'}"
                    raise MergeError(f"{path.name} lists {printable(rel)} for {printable(record.input)}, but it is "
                                     f"{what} in {shown(out_dir)}; rerun that shard")


def _common_run(shards: list[BatchSummary]) -> dict:
    """The PER_SHARD values of the merged summary: a value that differs between shards is None."""
    return {k: getattr(shards[0], k) if all(getattr(s, k) == getattr(shards[0], k) for s in shards) else None
            for k in PER_SHARD}

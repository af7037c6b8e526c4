"""`segdeploy merge-summary`: the shard summaries of a sharded batch combined into summary.json (torch-free).

`merge_shard_summaries` checks that all N shard summaries are there, that they agree (model,
classes, outputs and the settings that change them, input files, ground-truth scoring) and that no
input is listed twice or by the wrong shard, then writes ``OUT/summary.json``; when the shards saved
COCO RLE (``--save rle``) it joins their predictions.shard-K-of-N.json into ``OUT/predictions.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.infer.batch.rle import predictions_name, write_predictions
from segdeploy.infer.batch.shards import SHARD_KEYS, Shard, shard_of
from segdeploy.infer.batch.summary import write_summary
from segtrain.common.errors import InputError, printable
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
    check,
)
from segtrain.metrics import ConfusionMatrix, SegMetrics

_SUMMARY_FILE = re.compile(r"^summary\.shard-(\d+)-of-(\d+)\.json$")

# What the merge reads of a shard summary (other keys may be there): checked once, when it is loaded.
_COUNT = Integer(lo=0)
_SHARD_FIELDS = {"index": _COUNT, "count": Integer(lo=1), "partition": Anything(), "inputs_total": _COUNT,
                 "inputs_sha256": String(), "started_at": Number(), "finished_at": Number()}
_SHARD_SUMMARY = Record({
    "model": Record({"classes": ListOf(String())}, optional={"sha256": Nullable(String())}),
    "settings": Record(),
    "shard": Record({key: _SHARD_FIELDS[key] for key in SHARD_KEYS}),  # a key without a shape fails at import
    "images": ListOf(Record({"input": String()})),
    "failures": ListOf(Record({"input": String(), "reason": String(nonempty=False)})),
    "totals": Record({"images_found": _COUNT, "processed": _COUNT, "resumed": _COUNT, "failed": _COUNT,
                      "seconds": Number(lo=0), "model_seconds": Number(lo=0), "stage_seconds_summed": MapOf(Number()),
                      "images_per_second": Nullable(Number(lo=0))}),
}, optional={"ground_truth": Record({"images_scored": _COUNT, "inputs_without_ground_truth": _COUNT},
                                    optional={"problems": ListOf(String(nonempty=False)),
                                              "confusion_matrix": ListOf(ListOf(_COUNT))})},
    expected="a shard summary object")


class MergeError(InputError):
    """Shard summaries that are missing, unreadable or disagree; the message says which."""


@dataclass
class MergeResult:
    summary: dict
    path: Path
    metrics: SegMetrics | None
    predictions_path: Path | None = None

    @property
    def failures(self) -> list[dict]:
        return self.summary["failures"]

    def describe(self) -> str:
        """What the shards did together, their speed, and the combined ground-truth scores."""
        t, n = self.summary["totals"], self.summary["merged_from"]["count"]
        lines = [f"merged {n} shard summaries: {t['processed']} images segmented, {t['resumed']} already done, "
                 f"{t['failed']} failed"]
        if t["processed"]:
            lines.append(f"{t['seconds']:.1f} s from the first shard's start to the last one's end "
                         f"({t['images_per_second']} images/s); the shards' own rates add up to "
                         f"{t['images_per_second_summed_over_shards']} images/s")
        lines.append(f"summary: {self.path}")
        if self.predictions_path is not None:
            lines.append(f"COCO results (RLE): {self.predictions_path}")
        if self.metrics is not None:
            gt = self.summary["ground_truth"]
            lines.append(f"ground truth: {gt['images_scored']} images scored, "
                         f"{gt['inputs_without_ground_truth']} inputs without ground truth")
            lines.append(self.metrics.table())
        return "\n".join(lines)

    def describe_failures(self) -> str:
        lines = [f"{len(self.failures)} input(s) skipped:"]
        return "\n".join(lines + [printable(f"  {f['input']}: {f['reason']}") for f in self.failures])


def merge_shard_summaries(out_dir: Path) -> MergeResult:
    """Check the shard summaries in `out_dir` and combine them into OUT/summary.json.

    Raises MergeError when a shard is missing, a summary is unreadable, the shards disagree
    (model, classes, alpha, shard count, input files, ground-truth scoring) or list an input twice.
    """
    paths = find_shard_summaries(out_dir)
    docs = [_load(path, Shard(k, len(paths))) for k, path in enumerate(paths)]
    _check_agreement(paths, docs)
    images, failures = _combine_entries(paths, docs)
    ground_truth, metrics = _merge_ground_truth(paths, docs)
    doc = {**_common_run(docs), "out_dir": str(out_dir),
           "merged_from": {"count": len(paths), "partition": docs[0]["shard"]["partition"],
                           "summaries": [p.name for p in paths]},
           "shards": [_shard_entry(p, d) for p, d in zip(paths, docs, strict=True)],
           "images": images, "failures": failures, "totals": merge_totals(docs)}
    if ground_truth is not None:
        doc["ground_truth"] = ground_truth
    predictions = _merge_predictions(out_dir, docs) if "rle" in (docs[0]["settings"].get("save") or ()) else None
    return MergeResult(doc, write_summary(out_dir, doc), metrics, predictions)


def _merge_predictions(out_dir: Path, docs: list[dict]) -> Path:
    """The shards' predictions.shard-K-of-N.json joined into OUT/predictions.json."""
    entries: list[dict] = []
    for doc in docs:
        path = Path(out_dir) / predictions_name(Shard(doc["shard"]["index"], doc["shard"]["count"]))
        try:
            part = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MergeError(f"{path}: missing, though its shard saved COCO RLE (--save rle); "
                             "rerun that shard") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MergeError(f"{path}: cannot read it ({e})") from e
        if not isinstance(part, list):
            raise MergeError(f"{path}: not a COCO results list")
        entries += part
    return write_predictions(out_dir, entries)


def find_shard_summaries(out_dir: Path) -> list[Path]:
    """OUT/summary.shard-K-of-N.json for K = 0..N-1; MergeError when none, some or several N."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise MergeError(f"{out_dir}: no such folder")
    found: dict[int, dict[int, Path]] = {}
    for path in out_dir.iterdir():
        if (m := _SUMMARY_FILE.match(path.name)) and path.is_file():
            found.setdefault(int(m[2]), {})[int(m[1])] = path
    if not found:
        raise MergeError(f"{out_dir}: no shard summaries (summary.shard-K-of-N.json); "
                         "run `segdeploy batch SOURCE... --out OUT --shard K/N` for each shard first")
    if len(found) > 1:
        listing = "; ".join(f"N={n}: {', '.join(sorted(p.name for p in v.values()))}" for n, v in sorted(found.items()))
        raise MergeError(f"{out_dir}: shard summaries of different shard counts ({listing}); remove the stale ones")
    ((count, by_index),) = found.items()
    if extra := sorted(k for k in by_index if k >= count):
        raise MergeError(f"{by_index[extra[0]]}: shard index {extra[0]} is not below the shard count {count}")
    if missing := [k for k in range(count) if k not in by_index]:
        names = ", ".join(Shard(k, count).summary_name for k in missing)
        raise MergeError(f"{out_dir}: {len(missing)} of {count} shard summaries missing ({names}); "
                         "run those shards (or wait for them to finish), then merge again")
    return [by_index[k] for k in range(count)]


def _load(path: Path, shard: Shard) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MergeError(f"{path}: cannot read it ({e})") from e
    except RecursionError as e:
        raise MergeError(f"{path}: not a summary written by `segdeploy batch --shard` (nested too deeply)") from e
    try:
        check(doc, _SHARD_SUMMARY)
    except ShapeError as e:
        raise MergeError(f"{path}: not a summary written by `segdeploy batch --shard` ({e})") from None
    section = doc["shard"]
    if (section["index"], section["count"]) != (shard.index, shard.count):
        raise MergeError(f"{path}: it describes shard {section['index']}/{section['count']}, its name says {shard}")
    return doc


# What every shard must agree on, with how to show the values in the error message.
_AGREEMENT: tuple[tuple[str, Callable[[dict], object]], ...] = (
    ("model (sha256)", lambda d: d["model"].get("sha256")),
    ("classes", lambda d: d["model"].get("classes")),
    ("overlay alpha", lambda d: d["settings"].get("alpha")),
    ("outputs (--save)", lambda d: d["settings"].get("save")),
    ("overlay legend (--legend)", lambda d: d["settings"].get("legend")),
    ("tiling (--tile, --tile-overlap)", lambda d: (d["settings"].get("tile"), d["settings"].get("tile_overlap"))),
    ("partition", lambda d: d["shard"]["partition"]),
    ("ground-truth scoring (--gt)", lambda d: "ground_truth" in d),
)


def _check_agreement(paths: list[Path], docs: list[dict]) -> None:
    first, ref = paths[0].name, docs[0]
    for path, doc in zip(paths[1:], docs[1:], strict=True):
        for what, value in _AGREEMENT:
            if value(doc) != value(ref):
                raise MergeError(f"{path.name} and {first} disagree on the {what}: {value(doc)} vs {value(ref)}")
        if doc["shard"]["inputs_sha256"] != ref["shard"]["inputs_sha256"]:
            raise MergeError(f"{path.name} and {first} saw different input files ({doc['shard']['inputs_total']} "
                             f"vs {ref['shard']['inputs_total']} images): the inputs changed between shard runs; "
                             "rerun the shards that ran before the change (finished images are not redone)")


def _combine_entries(paths: list[Path], docs: list[dict]) -> tuple[list[dict], list[dict]]:
    """All shards' image records and failures; MergeError when an input is listed twice or misplaced."""
    owner: dict[str, int] = {}
    images: list[dict] = []
    failures: list[dict] = []
    for k, (path, doc) in enumerate(zip(paths, docs, strict=True)):
        entries = [(r, images) for r in doc["images"]] + [(f, failures) for f in doc["failures"]]
        for entry, into in entries:
            key = entry["input"]
            if key in owner:
                raise MergeError(f"{key} is listed by both {paths[owner[key]].name} and {path.name}")
            if shard_of(key, len(paths)) != k:
                raise MergeError(f"{path.name} lists {key}, which belongs to shard {shard_of(key, len(paths))}")
            owner[key] = k
            into.append(entry)
    total = docs[0]["shard"]["inputs_total"]
    if len(owner) != total:
        raise MergeError(f"the shard summaries list {len(owner)} inputs but the sources held {total}")
    return sorted(images, key=lambda r: r["input"]), sorted(failures, key=lambda f: f["input"])


def _merge_ground_truth(paths: list[Path], docs: list[dict]) -> tuple[dict | None, SegMetrics | None]:
    """Ground-truth scores of all shards from their summed confusion matrices."""
    parts = [d.get("ground_truth") for d in docs]
    if parts[0] is None:
        return None, None
    classes = docs[0]["model"]["classes"]
    n = len(classes)
    cm = ConfusionMatrix(n)
    for path, part in zip(paths, parts, strict=True):
        mat = np.asarray(part.get("confusion_matrix", []), dtype=np.int64)
        if mat.shape != (n, n):
            raise MergeError(f"{path}: its ground-truth section has no {n}x{n} confusion matrix; "
                             "rerun that shard with this version of segdeploy")
        cm.add(mat)
    metrics = cm.result(classes)
    problems = list(dict.fromkeys(p for part in parts for p in part.get("problems", [])))  # labels.json ones repeat
    doc = {**metrics.to_dict(), "images_scored": sum(p["images_scored"] for p in parts),
           "inputs_without_ground_truth": sum(p["inputs_without_ground_truth"] for p in parts),
           "problems": problems, "confusion_matrix": cm.mat.tolist()}
    return doc, metrics


def merge_totals(docs: list[dict]) -> dict:
    """The shards' totals together.

    "seconds" is the wall span from the earliest shard start to the latest shard end (by the
    machines' clocks) and "images_per_second" is the images processed over that span, the
    elapsed-time rate an unsharded run reports; queueing between shards counts against it.
    "images_per_second_summed_over_shards" adds each shard's own rate: the throughput of the
    shards running all at once. "model_images_per_second" is per model instance (images over the
    summed model seconds).
    """
    totals = [d["totals"] for d in docs]
    processed = sum(t["processed"] for t in totals)
    span = max(d["shard"]["finished_at"] for d in docs) - min(d["shard"]["started_at"] for d in docs)
    model_seconds = sum(t["model_seconds"] for t in totals)
    stages: dict[str, float] = {}
    for t in totals:
        for stage, seconds in t["stage_seconds_summed"].items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    rates = [t["images_per_second"] for t in totals if t["images_per_second"]]

    def rate(seconds: float) -> float | None:
        return round(processed / seconds, 3) if processed and seconds > 0 else None

    return {"images_found": sum(t["images_found"] for t in totals), "processed": processed,
            "resumed": sum(t["resumed"] for t in totals), "failed": sum(t["failed"] for t in totals),
            "seconds": round(span, 3), "model_seconds": round(model_seconds, 3),
            "stage_seconds_summed": {k: round(v, 3) for k, v in stages.items()},
            "images_per_second": rate(span), "model_images_per_second": rate(model_seconds),
            "images_per_second_summed_over_shards": round(sum(rates), 3) if rates else None,
            "shard_seconds_summed": round(sum(t["seconds"] for t in totals), 3)}


_PER_SHARD = ("runtime", "provider", "providers", "settings", "memory_budget_mb", "sources",
              "ground_truth_file")


def _common_run(docs: list[dict]) -> dict:
    """The run description of summary.json; a value that differs between shards is None (see "shards").

    The model is the same file in every shard (its sha256 was checked); its path is shard 0's.
    """
    same = {k: docs[0].get(k) if all(d.get(k) == docs[0].get(k) for d in docs) else None for k in _PER_SHARD}
    return {"model": docs[0]["model"], **same}


def _shard_entry(path: Path, doc: dict) -> dict:
    return {"summary": path.name, **{k: doc.get(k) for k in _PER_SHARD}, **doc["shard"], "totals": doc["totals"]}

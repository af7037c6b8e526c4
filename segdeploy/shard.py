"""Sharded `segdeploy batch`: split one input folder among N machines, then merge their summaries.

Partition: the input ``INPUT_DIR/sub/a.jpg`` belongs to shard ``h mod N``, where ``h`` is the
64-bit BLAKE2b hash (big-endian) of its path relative to INPUT_DIR in POSIX form, Unicode
NFC-normalised ("sub/a.jpg"; NFC so that a filesystem storing decomposed names agrees). A file's
shard depends only on its relative path and N: not on the machine, the order the filesystem lists
files, or which other files exist or fail. Adding or removing a file moves no other file, so the
outputs of earlier shard runs stay valid for a rerun. The price is that shares are balanced only
on average; round-robin over the sorted paths would balance exactly but reassign most files when
one is added.

Each shard (``--shard K/N``, K = 0..N-1) writes its outputs into the shared output tree and its
summary as ``OUT/summary.shard-K-of-N.json``; `merge_shard_summaries` checks that all N are there,
that they agree (model, classes, overlay alpha, input files, ground-truth scoring) and that no
input is listed twice, then writes ``OUT/summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.summary import write_summary
from segtrain.metrics import ConfusionMatrix, SegMetrics

PARTITION = "blake2b-64 of the NFC relative POSIX path, mod N"
SHARD_FORMS = "K/N with 0 <= K < N (for example 0/3), auto (SLURM job array) or auto/N (Kubernetes Indexed Job)"
_EXPLICIT = re.compile(r"^(\d+)/(\d+)$")
_AUTO = re.compile(r"^auto(?:/(\d+))?$")
_SUMMARY_FILE = re.compile(r"^summary\.shard-(\d+)-of-(\d+)\.json$")
_SHARD_KEYS = ("index", "count", "partition", "inputs_total", "inputs_sha256", "started_at", "finished_at")


class ShardError(ValueError):
    """A malformed or out-of-range --shard value; the message is one line."""


class MergeError(Exception):
    """Shard summaries that are missing, unreadable or disagree; the message says which."""


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of the input whose path relative to INPUT_DIR is `key` (POSIX form)."""
    name = unicodedata.normalize("NFC", key).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def summary_name(self) -> str:
        return f"summary.shard-{self.index}-of-{self.count}.json"

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index


def inputs_digest(keys: Iterable[str]) -> str:
    """SHA-256 of the sorted, NFC-normalised input paths: shards that saw the same files agree."""
    names = sorted(unicodedata.normalize("NFC", k) for k in keys)
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def shard_section(shard: Shard, keys: list[str], started_at: float, finished_at: float) -> dict:
    """The "shard" part of a shard's summary: which share it did of which input set, and when."""
    return {"index": shard.index, "count": shard.count, "partition": PARTITION, "inputs_total": len(keys),
            "inputs_sha256": inputs_digest(keys), "started_at": round(started_at, 3),
            "finished_at": round(finished_at, 3)}


# --------------------------------------------------------------------------------------------
# --shard


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """The value of --shard -> Shard; ShardError when it is malformed or out of range.

    "auto" reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (a job array submitted as
    --array=0-(N-1), or any other contiguous range); "auto/N" reads the index from
    JOB_COMPLETION_INDEX (a Kubernetes Indexed Job with N completions) or SLURM.
    """
    value = text.strip()
    if m := _EXPLICIT.match(value):
        return _checked(int(m[1]), int(m[2]), value)
    if m := _AUTO.match(value):
        return _from_environment(m[1], os.environ if environ is None else environ)
    raise ShardError(f"{text!r}: expected {SHARD_FORMS}")


def _checked(index: int, count: int, source: str) -> Shard:
    if count < 1:
        raise ShardError(f"{source}: the shard count N must be at least 1")
    if index >= count:
        raise ShardError(f"{source}: the shard index K must be below N (shards are numbered 0 to {count - 1})")
    return Shard(index, count)


def _from_environment(count_text: str | None, env: Mapping[str, str]) -> Shard:
    if "SLURM_ARRAY_TASK_ID" in env and "JOB_COMPLETION_INDEX" in env:
        raise ShardError("auto: both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are set; pass --shard K/N")
    if "SLURM_ARRAY_TASK_ID" in env:
        index, count = _slurm_task(env)
        if count_text is not None and int(count_text) != count:
            raise ShardError(f"auto/{count_text}: the SLURM job array has {count} tasks, not {count_text}")
        return _checked(index, count, f"auto (SLURM task {index} of {count})")
    if "JOB_COMPLETION_INDEX" in env:
        index = _env_int(env, "JOB_COMPLETION_INDEX")
        if count_text is None:
            raise ShardError("auto: JOB_COMPLETION_INDEX gives this pod's index but not the count; "
                             "pass --shard auto/N with N the Job's completions")
        return _checked(index, int(count_text), f"auto/{count_text} (JOB_COMPLETION_INDEX={index})")
    raise ShardError("auto: neither SLURM_ARRAY_TASK_ID (SLURM job array) nor JOB_COMPLETION_INDEX "
                     "(Kubernetes Indexed Job) is set; pass --shard K/N")


def _slurm_task(env: Mapping[str, str]) -> tuple[int, int]:
    """(0-based index, count) of this SLURM array task; the array must be a contiguous range."""
    task = _env_int(env, "SLURM_ARRAY_TASK_ID")
    if "SLURM_ARRAY_TASK_COUNT" not in env:
        raise ShardError("auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
    count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    first = _env_int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
    last = _env_int(env, "SLURM_ARRAY_TASK_MAX") if "SLURM_ARRAY_TASK_MAX" in env else first + count - 1
    if last - first + 1 != count or not first <= task <= last:
        raise ShardError(f"auto: the SLURM array (tasks {first}..{last}, {count} of them, this one {task}) is not "
                         f"a contiguous range; submit it as --array=0-{max(count - 1, 0)} or pass --shard K/N")
    return task - first, count


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        value = int(env[name])
    except ValueError:
        raise ShardError(f"auto: {name}={env[name]!r} is not a whole number") from None
    if value < 0:
        raise ShardError(f"auto: {name}={value} is negative")
    return value


# --------------------------------------------------------------------------------------------
# merge-summary


@dataclass
class MergeResult:
    summary: dict
    path: Path
    metrics: SegMetrics | None

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
        if self.metrics is not None:
            gt = self.summary["ground_truth"]
            lines.append(f"ground truth: {gt['images_scored']} images scored, "
                         f"{gt['inputs_without_ground_truth']} inputs without ground truth")
            lines.append(self.metrics.table())
        return "\n".join(lines)

    def describe_failures(self) -> str:
        lines = [f"{len(self.failures)} input(s) could not be read:"]
        return "\n".join(lines + [f"  {f['input']}: {f['reason']}" for f in self.failures])


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
    return MergeResult(doc, write_summary(out_dir, doc), metrics)


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
                         "run `segdeploy batch INPUT_DIR --out OUT --shard K/N` for each shard first")
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
    section = doc.get("shard") if isinstance(doc, dict) else None
    if not isinstance(section, dict) or any(k not in section for k in _SHARD_KEYS) or \
            any(k not in doc for k in ("model", "settings", "images", "failures", "totals")):
        raise MergeError(f"{path}: not a summary written by `segdeploy batch --shard`")
    if (section["index"], section["count"]) != (shard.index, shard.count):
        raise MergeError(f"{path}: it describes shard {section['index']}/{section['count']}, its name says {shard}")
    return doc


# What every shard must agree on, with how to show the values in the error message.
_AGREEMENT: tuple[tuple[str, Callable[[dict], object]], ...] = (
    ("model (sha256)", lambda d: d["model"].get("sha256")),
    ("classes", lambda d: d["model"].get("classes")),
    ("overlay alpha", lambda d: d["settings"].get("alpha")),
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
                             f"vs {ref['shard']['inputs_total']} images): INPUT_DIR changed between shard runs; "
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
        raise MergeError(f"the shard summaries list {len(owner)} inputs but INPUT_DIR held {total}")
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


_PER_SHARD = ("provider", "providers", "settings", "input_dir", "ground_truth_file")


def _common_run(docs: list[dict]) -> dict:
    """The run description of summary.json; a value that differs between shards is None (see "shards").

    The model is the same file in every shard (its sha256 was checked); its path is shard 0's.
    """
    same = {k: docs[0].get(k) if all(d.get(k) == docs[0].get(k) for d in docs) else None for k in _PER_SHARD}
    return {"model": docs[0]["model"], **same}


def _shard_entry(path: Path, doc: dict) -> dict:
    return {"summary": path.name, **{k: doc.get(k) for k in _PER_SHARD}, **doc["shard"], "totals": doc["totals"]}

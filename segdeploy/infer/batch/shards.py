"""Sharded `segdeploy batch`: which of N machines does which input (torch-free).

Partition: the input ``SOURCE/sub/a.jpg`` belongs to shard ``h mod N``, where ``h`` is the
64-bit BLAKE2b hash (big-endian) of its key (path relative to the folder given) in POSIX form, Unicode
NFC-normalised ("sub/a.jpg"; NFC so that a filesystem storing decomposed names agrees). A key shows a
file-name byte that is not UTF-8 as ``\\xNN`` (segdeploy.infer.batch.sources), so every key is text and the
hash is the same whether `batch` computes it from the file or `merge-summary` from a summary. A file's
shard depends only on its relative path and N: not on the machine, the order the filesystem lists
files, or which other files exist or fail. Adding or removing a file moves no other file, so the
outputs of earlier shard runs stay valid for a rerun. The price is that shares are balanced only
on average; round-robin over the sorted paths would balance exactly but reassign most files when
one is added.

Each shard (``--shard K/N``, K = 0..N-1) writes its outputs into the shared output tree and its
summary as ``OUT/summary.shard-K-of-N.json``; `segdeploy.infer.batch.merge` combines them.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from segtrain.common.errors import InputError

PARTITION = "blake2b-64 of the NFC relative POSIX path, mod N"
SHARD_FORMS = "K/N with 0 <= K < N (for example 0/3), auto (SLURM job array) or auto/N (Kubernetes Indexed Job)"
_EXPLICIT = re.compile(r"^(\d+)/(\d+)$")
_AUTO = re.compile(r"^auto(?:/(\d+))?$")
SHARD_SUMMARY = "summary.shard-{index}-of-{count}.json"
SHARD_KEYS = ("index", "count", "partition", "inputs_total", "inputs_sha256", "started_at", "finished_at")


class ShardError(InputError):
    """A malformed or out-of-range --shard value; the message is one line."""


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of the input whose key (path relative to its folder, POSIX form) is `key`."""
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
        return SHARD_SUMMARY.format(index=self.index, count=self.count)

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

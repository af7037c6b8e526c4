"""Sharded `segdeploy batch`: which of N machines does which input, the shard section of a shard's summary, and
the file names of a shard's run files (torch-free).

The input ``SOURCE/sub/a.jpg`` belongs to shard ``h mod N``, ``h`` the 64-bit BLAKE2b hash (big-endian) of its
key in Unicode NFC (NFC so that a filesystem storing decomposed names agrees). A key is text (a byte that is not
UTF-8 is ``\\xNN``, segdeploy.infer.batch.sources), so `batch` and `merge-summary` hash the same string. The shard
depends only on the key and N: adding or removing a file moves no other file, so the outputs of earlier shard
runs stay valid for a rerun; the price is that shares are balanced only on average.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from segtrain.common.errors import InputError
from segtrain.common.json_record import JsonRecord, required
from segtrain.common.json_shape import Integer, Number, String
from segtrain.common.limits import MAX_SHARDS

PARTITION = "blake2b-64 of the NFC relative POSIX path, mod N"
SHARD_FORMS = "K/N with 0 <= K < N (for example 0/3), auto (SLURM job array) or auto/N (Kubernetes Indexed Job)"
_EXPLICIT = re.compile(r"^(\d{1,12})/(\d{1,12})$")  # more digits are beyond any range (and int() refuses 4300)
_AUTO = re.compile(r"^auto(?:/(\d{1,12}))?$")
_SHARD_PART = ".shard-{index}-of-{count}"  # between a run file's stem and .json: summary.shard-0-of-3.json
_SHARD_PART_REGEX = re.escape(_SHARD_PART).replace(re.escape("{index}"), r"(\d{1,12})").replace(
    re.escape("{count}"), r"(\d{1,12})")


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

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index


def inputs_digest(keys: Iterable[str]) -> str:
    """SHA-256 of the sorted, NFC-normalised input paths: shards that saw the same files agree."""
    names = sorted(unicodedata.normalize("NFC", k) for k in keys)
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ShardSection(JsonRecord):
    """The "shard" section of a shard's summary: which share it did of which input set, and when."""

    index: int = required(Integer(lo=0))
    count: int = required(Integer(lo=1, hi=MAX_SHARDS))
    partition: str = required(String())
    inputs_total: int = required(Integer(lo=0))
    inputs_sha256: str = required(String())  # inputs_digest of every input of every shard: the same files agree
    started_at: float = required(Number())
    finished_at: float = required(Number())

    @classmethod
    def of_run(cls, shard: Shard, keys: list[str], started_at: float, finished_at: float) -> ShardSection:
        return cls(shard.index, shard.count, PARTITION, len(keys), inputs_digest(keys), round(started_at, 3),
                   round(finished_at, 3))

    @property
    def shard(self) -> Shard:
        return Shard(self.index, self.count)


# --------------------------------------------------------------------------------------------
# Run files: OUT/<stem>.json, or OUT/<stem>.shard-K-of-N.json for a shard's run


def run_file_name(stem: str, shard: Shard | None) -> str:
    """The file name of a run file (summary, predictions): <stem>.json, <stem>.shard-K-of-N.json for a shard."""
    return stem + ("" if shard is None else _SHARD_PART.format(index=shard.index, count=shard.count)) + ".json"


def run_file_form(stem: str) -> str:
    """How a shard's run file is named, for messages: <stem>.shard-K-of-N.json."""
    return stem + _SHARD_PART.format(index="K", count="N") + ".json"


def run_file_regex(*stems: str) -> str:
    """A regex of the run files with these stems, of a whole run or of any shard (K and N as groups 1 and 2)."""
    return f"(?:{'|'.join(map(re.escape, stems))})(?:{_SHARD_PART_REGEX})?\\.json"


def shard_of_run_file(name: str, stem: str) -> tuple[int, int] | None:
    """(K, N) of a file named <stem>.shard-K-of-N.json (K may be out of range), or None."""
    match = re.fullmatch(f"{re.escape(stem)}{_SHARD_PART_REGEX}\\.json", name)
    return (int(match[1]), int(match[2])) if match else None


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
    if not 1 <= count <= MAX_SHARDS:
        raise ShardError(f"{source}: the shard count N must be from 1 to {MAX_SHARDS}")
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

"""Resuming a batch run: the record a finished mask.png (a video's record file) carries, which inputs it shows
are complete, which outputs another run made, and the temporary files a killed run left behind.

An input is complete when every chosen output exists and its record's fingerprint (the model file, the outputs
and the settings that change them, the input file's size and modification time) is the one this run would
write: a replaced photo is redone. Outputs whose record names another model or other output settings belong to
another run (earlier.py decides what happens to them). A stream is never complete: it has no file to compare.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from PIL import Image

from segdeploy.infer.batch.outputs import LEGEND_NAME, OUTPUT_SUFFIXES, RECORD_SUFFIX, RUN_RECORD_KEY, VIDEO_SUFFIXES
from segdeploy.infer.batch.plan import STREAM, Job
from segdeploy.infer.batch.rle import PREDICTIONS
from segdeploy.infer.batch.shards import run_file_regex
from segdeploy.infer.batch.summary import SUMMARY, ImageRecord
from segdeploy.infer.storage import Listing, is_remote, stamp
from segtrain.common.files import json_text, sweep_orphans, temp_name_pattern
from segtrain.common.json_shape import Record, ShapeError, check
from segtrain.common.outside_text import parse_json

RECORD_KEY = RUN_RECORD_KEY  # the mask's PNG text chunk that holds the record (a file format: keep it)
# A temporary file older than this is an orphan whoever wrote it: writes take seconds.
STALE_TEMP_SECONDS = 30 * 60
# Temporary names made by write_atomic beside the run's files.
_TEMP_NAME = temp_name_pattern("|".join([*(r".+" + re.escape(s) for s in (*OUTPUT_SUFFIXES.values(), RECORD_SUFFIX)),
                                         re.escape(LEGEND_NAME), run_file_regex(SUMMARY, PREDICTIONS)]))
# Videos are written under their own container's extension (segdeploy.infer.video.VideoWriter).
_VIDEO_TEMP_NAME = temp_name_pattern("|".join(r".+" + re.escape(s) for s in VIDEO_SUFFIXES.values()),
                                     suffix=r"\.tmp\.(?:mkv|mp4)")


class NotAFileError(OSError):
    """An input that is not a regular file (a FIFO or device would block or never end)."""


def source_stamp(path: Path) -> dict[str, int]:
    """The input file's identity for the fingerprint: a changed photo has a new stamp (an object's: storage.stamp)."""
    if is_remote(path):
        return stamp(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotAFileError(f"{path}: not a regular file")
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True)
class Fingerprint:
    """What a run makes each image's outputs with; `of(stamp)` adds the input file's stamp."""

    model_sha256: str
    alpha: float
    save: tuple[str, ...]
    legend: bool
    tile: str | int
    tile_overlap: float
    tta: str = "off"  # recorded only when on, so outputs made before --tta existed still resume

    def of(self, stamp: dict[str, int]) -> dict:
        made = {**asdict(self), "save": list(self.save), "source": stamp}
        if self.tta == "off":
            del made["tta"]
        return made


# Keys of an image's summary record that describe one run rather than its outputs: kept out of the files, so the
# same photos and model give the same bytes however they are run (summary.json has them).
RUN_SPECIFIC = ("seconds",)


@dataclass(frozen=True)
class ResumeRecord:
    """What a finished mask.png carries in its text chunk: the image's summary record without its run-specific
    values (RUN_SPECIFIC) and its fingerprint. A record read back has no seconds ({}); records written by older
    versions, which carried them, read the same way."""

    record: ImageRecord
    fingerprint: dict

    @classmethod
    def json_shape(cls) -> Record:
        """The image's record with a "fingerprint" object beside its keys."""
        image = ImageRecord.json_shape()
        required = {k: v for k, v in image.required.items() if k not in RUN_SPECIFIC}
        optional = {**image.optional, **{k: image.required[k] for k in RUN_SPECIFIC}}
        return Record({**required, "fingerprint": Record()}, optional=optional)

    def json(self) -> str:
        doc = {k: v for k, v in self.record.to_dict().items() if k not in RUN_SPECIFIC}
        return json_text({**doc, "fingerprint": self.fingerprint}, ascii_only=True)

    def png_text(self) -> dict[str, str]:
        return {RECORD_KEY: self.json()}

    @classmethod
    def read(cls, path: Path) -> ResumeRecord | None:
        """The record in a mask PNG (its header and text chunks only, not the pixels) or a video's record file;
        None when there is none, or one that is unreadable, malformed or not of this mask's size."""
        try:
            if path.name.endswith(RECORD_SUFFIX):
                with path.open("rb") as f:
                    text, size = f.read(1 << 20).decode("utf-8"), None
            else:
                with path.open("rb") as f, Image.open(f) as im:
                    text, (width, height) = im.info.get(RECORD_KEY), im.size
                    size = (height, width)
            doc = parse_json(text, str(path)) if text else None
            check(doc, cls.json_shape())
        except (OSError, ValueError, SyntaxError, ShapeError, RecursionError):
            return None
        record = ImageRecord.from_dict({**doc, "seconds": {}})
        return cls(record, doc["fingerprint"]) if size is None or record.size == size else None


def same_settings(stored: dict, fingerprint: Fingerprint) -> bool:
    """Whether a stored fingerprint was made with this run's model and output settings (whatever the input's stamp)."""
    return {k: v for k, v in stored.items() if k != "source"} == \
        {k: v for k, v in fingerprint.of({}).items() if k != "source"}


ASK_EACH = Listing()  # no listing: each output's existence is asked of its path


def _outputs_exist(job: Job, listing: Listing) -> bool:
    return all(path.is_dir() if kind == "frames" else listing.is_file(path) for kind, path in job.outputs.files.items())


def completed(job: Job, fingerprint: Fingerprint, listing: Listing = ASK_EACH) -> ImageRecord | None:
    """The record of `job` when every chosen output exists (per `listing`) and was made with `fingerprint`, else
    None."""
    if job.kind == STREAM:
        return None
    try:
        if not _outputs_exist(job, listing):
            return None
        expected = fingerprint.of(source_stamp(job.source))
    except OSError:  # gone, not a regular file, a name too long: the later stages name the reason
        return None
    stored = ResumeRecord.read(job.outputs.record)
    return stored.record if stored is not None and stored.fingerprint == expected else None


def made_elsewhere(job: Job, fingerprint: Fingerprint, listing: Listing = ASK_EACH) -> dict | None:
    """The fingerprint of `job`'s record when another model or other output settings made it, else None."""
    try:
        if not listing.is_file(job.outputs.record):
            return None
    except OSError:
        return None
    stored = ResumeRecord.read(job.outputs.record)
    return None if stored is None or same_settings(stored.fingerprint, fingerprint) else stored.fingerprint


def resume(out_dir: Path, jobs: list[Job], fingerprint: Fingerprint, overwrite: bool, log: Callable[[str], None],
           listing: Listing = ASK_EACH) -> tuple[list[Job], list[tuple[Job, ImageRecord]]]:
    """Remove orphaned temporary files, then split `jobs` into (to run, (job, its record) already complete);
    `listing` (storage.list_ahead) says which outputs exist."""
    swept = sweep_temp_files(out_dir)
    if swept:
        log(f"removed {len(swept)} temporary file(s) left by an interrupted run")
    todo, done = [], []
    for job in jobs:
        record = None if overwrite else completed(job, fingerprint, listing)
        if record is None:
            todo.append(job)
        else:
            done.append((job, replace(record, input=job.key, outputs=job.outputs.as_dict(out_dir), resumed=True)))
    if done:
        log(f"{len(done)} of {len(jobs)} inputs already have complete outputs in {out_dir}; "
            "skipping them (--overwrite redoes them)")
    return todo, done


def sweep_temp_files(out_dir: Path) -> list[Path]:
    """Delete the temporary files under `out_dir` that are certainly orphaned (segtrain.common.files.sweep_orphans);
    those of a run still writing, here or on another machine, are left alone. Returns the files deleted. An object
    store has none: an object is written in one request (storage.put)."""
    if is_remote(out_dir):
        return []
    return [*sweep_orphans(out_dir, _TEMP_NAME, STALE_TEMP_SECONDS, recursive=True),
            *sweep_orphans(out_dir, _VIDEO_TEMP_NAME, STALE_TEMP_SECONDS, recursive=True)]

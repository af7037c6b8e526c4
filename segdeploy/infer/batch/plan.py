"""Planning a batch run before any work: a job per input image, video or stream (its outputs mirrored under
--out), the shard's share of them, and the checks of --out and --gt."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segdeploy.infer.batch.outputs import DEFAULT_SAVE, OutputPaths, output_paths, video_output_paths
from segdeploy.infer.batch.shards import Shard
from segdeploy.infer.batch.sources import BatchInputError, list_sources
from segdeploy.infer.pipeline import Failure
from segdeploy.infer.storage import is_remote, is_store_url, location, shown
from segtrain.common.files import ensure_writable_dir

IMAGE, VIDEO, STREAM = "image", "video", "stream"  # the kinds of job


@dataclass(frozen=True)
class Job:
    """One input: its key (path relative to the folder it was found in, POSIX form; a stream's name), source
    (a file; a stream's URL or camera index as given), the folder the key is relative to, outputs and kind."""

    key: str
    source: Path | str
    root: Path
    outputs: OutputPaths
    kind: str = IMAGE


@dataclass(frozen=True)
class Plan:
    """What a run does: its jobs and the inputs it could not list or use (the shard's share of them), and
    the keys of every input of every shard."""

    jobs: list[Job]
    unlisted: list[Failure]
    all_jobs: list[Job]
    all_keys: list[str]


def plan_jobs(sources: Sequence[Path | str], out_dir: Path,
              save: Sequence[str] = DEFAULT_SAVE) -> tuple[list[Job], list[Failure]]:
    """(a job per image the sources name, outputs mirrored under `out_dir`; what could not be listed or used)."""
    out_dir = location(out_dir)
    for source in sources:
        if not is_remote(out_dir) and not is_store_url(source) and Path(source).is_dir() and \
                os.path.realpath(source) == os.path.realpath(out_dir):
            raise BatchInputError(f"--out {out_dir} is the input folder; choose a separate output folder")
    for source in sources:
        if is_remote(out_dir) and is_store_url(source) and str(location(source)) == str(out_dir):
            raise BatchInputError(f"--out {shown(out_dir)} is the input prefix; choose a separate output prefix")
    listing = list_sources(sources, exclude=[out_dir])
    if is_remote(out_dir) and (listing.streams or any(f.video for f in listing.files)):
        raise BatchInputError(f"--out {shown(out_dir)}: videos, streams and cameras write to a local --out only; run "
                              "them separately")
    jobs = [Job(f.key, f.path, f.root, video_output_paths(out_dir, f.rel, save), VIDEO) if f.video else
            Job(f.key, f.path, f.root, output_paths(out_dir, f.rel, save)) for f in listing.files]
    streams = [Job(s.key, s.source, out_dir, video_output_paths(out_dir, Path(s.key), save), STREAM)
               for s in listing.streams]
    return sorted(jobs + streams, key=lambda job: job.key), listing.failures


def plan_run(sources: Sequence[Path | str], out_dir: Path, save: Sequence[str], shard: Shard | None) -> Plan:
    """The jobs of this run (a shard's share of the inputs); BatchInputError for bad sources or an unusable --out."""
    all_jobs, all_unlisted = plan_jobs(sources, out_dir, save)
    owned = shard.owns if shard else (lambda key: True)
    check_out_dir(out_dir)
    return Plan([j for j in all_jobs if owned(j.key)], [f for f in all_unlisted if owned(f.input)], all_jobs,
                [job.key for job in all_jobs] + [f.input for f in all_unlisted])


def check_out_dir(out_dir: Path) -> None:
    """BatchInputError unless --out is, or can be made as, a writable folder; nothing is created (make_out_dir). An
    object store's --out is checked by its first write (legend.png): a refused one stops the run there."""
    if is_remote(out_dir):
        return
    folder = Path(out_dir)
    while not os.path.lexists(folder) and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir():
        what = "is not a folder" if folder == Path(out_dir) else f"cannot be made: {folder} is not a folder"
        raise BatchInputError(f"--out {out_dir}: {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        where = "" if folder == Path(out_dir) else f" ({folder})"
        why = "read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY else "permission denied"
        raise BatchInputError(f"--out {out_dir}: cannot write there{where}: {why}")


def make_out_dir(out_dir: Path) -> None:
    """Create --out once the arguments are known to be good; BatchInputError when it cannot be written. An object
    store has no folders to make."""
    if is_remote(out_dir):
        return
    try:
        ensure_writable_dir(out_dir)
    except OSError as e:
        raise BatchInputError(f"--out {out_dir}: cannot write there ({e.strerror or e})") from e


def ground_truth_root(jobs: list[Job], flag: str = "--gt") -> Path:
    """The one folder the file names of --gt (or --image-ids) are relative to; BatchInputError when the input
    images come from several."""
    roots = {job.root.resolve(): job.root for job in jobs if job.kind == IMAGE}
    if len(roots) != 1:
        raise BatchInputError(f"{flag} matches file names relative to one folder, but the input images come from "
                              f"{len(roots)} ({', '.join(sorted(str(r) for r in roots.values()))}); run each folder "
                              "separately")
    return next(iter(roots.values()))

"""What --out already holds, checked before any work: the runs whose summaries are there, and the records of the
outputs this run would write (torch-free).

An --out never mixes runs. Outputs made with another model or other output settings (--save, --alpha, --legend,
--tile, --tile-overlap), or a summary.json that `segdeploy batch` did not write, stop the run with the choices (a
new --out, or --overwrite, which first removes that run's files: those its summary lists and the outputs of this
run's inputs). Outputs of the same settings are this run's own: its inputs resume as before, and the images an
earlier run into the same folder did that this run does not name stay listed in summary.json, so it always
describes everything in the folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from segdeploy.infer.batch.outputs import FRAMES_SUFFIX, OUTPUT_SUFFIXES, RECORD_SUFFIX, VIDEO_SUFFIXES, OutputPaths
from segdeploy.infer.batch.plan import IMAGE, VIDEO, Job
from segdeploy.infer.batch.resume import ASK_EACH, Fingerprint, made_elsewhere, same_settings
from segdeploy.infer.batch.rle import PREDICTIONS
from segdeploy.infer.batch.shards import Shard, run_file_regex
from segdeploy.infer.batch.sources import BatchInputError
from segdeploy.infer.batch.summary import SUMMARY, ImageRecord, summary_name
from segdeploy.infer.storage import Listing, is_remote, location
from segtrain.common.errors import printable
from segtrain.common.json_shape import ShapeError
from segtrain.common.outside_text import read_json

_RUN_FILE = re.compile(run_file_regex(SUMMARY))
_PREDICTIONS_FILE = re.compile(run_file_regex(PREDICTIONS))
_FRAME_FILE = re.compile(r"^\d{6}\.")


@dataclass(frozen=True)
class EarlierRun:
    """A summary found in --out: the model and output settings its images were made with (one per shard of a
    merged summary), its images and its SOURCEs."""

    path: Path
    made_with: list[dict]
    images: list[ImageRecord]
    sources: list[str]

    @classmethod
    def read(cls, path: Path) -> EarlierRun:
        """Raises OSError, ValueError (json) or ShapeError for a file that is not a batch summary (or a merged one)."""
        doc = read_json(path, "summary")
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise ShapeError("a segdeploy batch summary", doc)
        settings = [doc.get("settings")] if doc.get("settings") is not None else \
            [entry.get("settings") for entry in doc.get("shards") or []]
        sha = (doc.get("model") or {}).get("sha256")
        try:
            made_with = [Fingerprint(sha, s["alpha"], tuple(s["save"]), s["legend"], s["tile"],
                                     s["tile_overlap"], s.get("tta", "off")).of({}) for s in settings]
        except (KeyError, TypeError) as e:
            raise ShapeError("a segdeploy batch summary's settings", settings) from e
        if not made_with or not isinstance(sha, str):
            raise ShapeError("a segdeploy batch summary", doc)
        sources = doc.get("sources") or []
        return cls(path, made_with, [ImageRecord.decode(r) for r in doc["images"]],
                   [s for s in sources if isinstance(s, str)])


@dataclass(frozen=True)
class Earlier:
    """What this run keeps of the earlier runs into its --out: the images it does not redo (outputs present,
    marked resumed) and their SOURCEs."""

    images: list[ImageRecord]
    sources: list[str]


def check_earlier(out_dir: Path, jobs: list[Job], fingerprint: Fingerprint, shard: Shard | None, overwrite: bool,
                  log: Callable[[str], None], listing: Listing = ASK_EACH) -> Earlier:
    """Refuse (BatchInputError) or, with `overwrite`, clear the outputs of other runs in `out_dir`; return what this
    run keeps of earlier runs with its own settings (see the module docstring)."""
    out_dir = location(out_dir)
    others: list[tuple[Path, str]] = []  # (file, how it differs)
    own: EarlierRun | None = None
    for path in _summaries(out_dir):
        try:
            run = EarlierRun.read(path)
        except (OSError, ValueError, ShapeError, RecursionError):
            others.append((path, "a file segdeploy batch did not write"))
            continue
        differ = [d for made in run.made_with if not same_settings(made, fingerprint) for d in _differences(made,
                                                                                                           fingerprint)]
        if differ:
            others.append((path, ", ".join(dict.fromkeys(differ))))
        elif path.name == summary_name(shard):
            own = run
    masks = [(job, made) for job in jobs if (made := made_elsewhere(job, fingerprint, listing)) is not None]
    others += [(job.outputs.record, ", ".join(_differences(made, fingerprint))) for job, made in masks[:1]]
    if others:
        if not overwrite:
            path, how = others[0]
            raise BatchInputError(printable(
                f"--out {out_dir} holds the outputs of another run ({how}; see {path.relative_to(out_dir)}); "
                "choose a new --out folder, or add --overwrite to replace them"))
        removed = _remove_other_runs(out_dir, [p for p, _ in others if p.name.endswith(".json")
                                               and _RUN_FILE.fullmatch(p.name)], [job for job, _ in masks], jobs)
        log(f"--overwrite: removed {removed} file(s) of another run from {out_dir}")
        return Earlier([], [])
    if own is None:
        return Earlier([], [])
    keys = {job.key for job in jobs}
    kept = [replace(r, resumed=True) for r in own.images if r.input not in keys and _present(out_dir, r, listing)]
    return Earlier(kept, own.sources)


def earlier_jobs(out_dir: Path, records: list[ImageRecord]) -> list[tuple[Job, ImageRecord]]:
    """Jobs standing for earlier runs' images (their outputs; no source file), for replaying their masks."""
    root = location(out_dir)
    return [(Job(r.input, Path(), root, OutputPaths({k: root / v for k, v in r.outputs.items()}),
                 VIDEO if r.frames is not None else IMAGE), r) for r in records]


def _summaries(out_dir: Path) -> list[Path]:
    try:
        return sorted(p for p in out_dir.iterdir() if _RUN_FILE.fullmatch(p.name))
    except OSError:
        return []


def _differences(made: dict, fingerprint: Fingerprint) -> list[str]:
    """How the model and output settings of `made` differ from this run's, as flags: "--save mask vs mask,overlay"."""
    ours = fingerprint.of({})
    names = {"model_sha256": "model", "alpha": "--alpha", "save": "--save", "legend": "--legend", "tile": "--tile",
             "tile_overlap": "--tile-overlap"}
    out = []
    for key, flag in names.items():
        theirs, mine = made.get(key), ours[key]
        if theirs != mine:
            shown = [",".join(v) if isinstance(v, list) else (v[:12] if key == "model_sha256" and isinstance(v, str)
                                                              else v) for v in (theirs, mine)]
            out.append(f"{flag} {shown[0]} there, {shown[1]} now" if key != "model_sha256" else
                       f"another model (sha256 {shown[0]}...; this one {shown[1]}...)")
    return out or ["other settings"]


def _present(out_dir: Path, record: ImageRecord, listing: Listing) -> bool:
    if is_remote(out_dir):
        return all(listing.is_file(out_dir / rel) for rel in record.outputs.values())
    return all(os.path.lexists(out_dir / rel) for rel in record.outputs.values())


def _inside(out_dir: Path, rel: str) -> Path | None:
    path = (out_dir / rel)
    try:
        return path if path.resolve().is_relative_to(out_dir.resolve()) else None
    except (OSError, RuntimeError):
        return None


def _remove_other_runs(out_dir: Path, summaries: list[Path], foreign: list[Job], jobs: list[Job]) -> int:
    """Remove what other runs wrote: the outputs their summaries list, their predictions and summary files, and the
    outputs of this run's inputs that the other run made. Returns the number of files removed."""
    paths: list[Path] = []
    for summary in summaries:
        try:
            run = EarlierRun.read(summary)
            paths += [p for r in run.images for rel in r.outputs.values() if (p := _inside(out_dir, rel)) is not None]
        except (OSError, ValueError, ShapeError, RecursionError):
            pass
        paths.append(summary)
    paths += [p for p in out_dir.iterdir() if _PREDICTIONS_FILE.fullmatch(p.name)]
    for job in foreign:
        paths += _every_output(job)
    ours = {p for job in jobs if job not in foreign for p in job.outputs.files.values()}
    return sum(_remove(p) for p in dict.fromkeys(paths) if p not in ours)


def _every_output(job: Job) -> list[Path]:
    """Every file any run may have written for `job`'s input, whatever its --save."""
    record = job.outputs.record
    if job.kind == IMAGE:
        base = record.with_name(record.name.removesuffix(OUTPUT_SUFFIXES["mask"]))
        return [base.with_name(base.name + s) for s in OUTPUT_SUFFIXES.values()]
    base = record.with_name(record.name.removesuffix(RECORD_SUFFIX))
    return [base.with_name(base.name + s) for s in (*VIDEO_SUFFIXES.values(), FRAMES_SUFFIX, RECORD_SUFFIX)]


def _remove(path: Path) -> int:
    """Remove an output file, or a frames folder's frame files (and the folder when that empties it)."""
    try:
        if path.is_dir() and not path.is_symlink():
            frames = [p for p in path.iterdir() if _FRAME_FILE.match(p.name) and p.is_file()]
            for p in frames:
                p.unlink()
            if not any(path.iterdir()):
                path.rmdir()
            return len(frames)
        path.unlink()
        return 1
    except FileNotFoundError:
        return 0

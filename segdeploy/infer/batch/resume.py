"""Resuming a batch run: which images already have complete outputs (the record a finished mask.png carries),
and what a rerun reads back from them for the summary, the --gt scores and predictions.json."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from segdeploy.infer.batch.outputs import completed_record, read_mask, source_stamp, sweep_temp_files
from segdeploy.infer.batch.plan import Job
from segdeploy.infer.batch.write import ImageWriter
from segdeploy.infer.pipeline import prefetch


def split_done(jobs: list[Job], fingerprint: dict, overwrite: bool) -> tuple[list[Job], list[tuple[Job, dict]]]:
    """(jobs to run, (job, stored record) of jobs whose outputs are already complete)."""
    if overwrite:
        return list(jobs), []
    todo, done = [], []
    for job in jobs:
        try:
            record = completed_record(job.outputs, {**fingerprint, "source": source_stamp(job.source)})
        except OSError:  # gone, or not a regular file: the decode stage names the reason
            record = None
        if record is None:
            todo.append(job)
        else:
            done.append((job, record))
    return todo, done


def resume(out_dir: Path, jobs: list[Job], fingerprint: dict, overwrite: bool,
           log: Callable[[str], None]) -> tuple[list[Job], list[tuple[Job, dict]]]:
    """Remove orphaned temporary files, then split `jobs` into (to run, already complete)."""
    swept = sweep_temp_files(out_dir)
    if swept:
        log(f"removed {len(swept)} temporary file(s) left by an interrupted run")
    todo, done = split_done(jobs, fingerprint, overwrite)
    if done:
        log(f"{len(done)} of {len(jobs)} images already have complete outputs in {out_dir}; "
            "skipping them (--overwrite redoes them)")
    return todo, done


def replay_saved(writer: ImageWriter, done: list[tuple[Job, dict]], workers: int) -> list[dict]:
    """Score the masks an earlier run wrote (resumed images) and rebuild their COCO entries; returns the entries."""
    truth, rle = writer.truth, "rle" in writer.save
    jobs = [(job, record) for job, record in done if rle or (truth is not None and truth.has(job.key))]

    def replay(item: tuple[Job, dict]) -> list[dict]:
        job, record = item
        mask = read_mask(job.outputs.mask)
        if truth is not None:
            truth.update(job.key, mask)
        scores = {int(k): v for k, v in record.get("scores", {}).items()}
        return writer.coco_entries(job.key, mask, scores) if rle else []

    with ThreadPoolExecutor(workers, thread_name_prefix="replay") as pool:
        return [entry for entries in prefetch(pool, replay, jobs, 2 * workers) for entry in entries]


def resumed_record(job: Job, record: dict, out_dir: Path) -> dict:
    kept = {k: v for k, v in record.items() if k != "fingerprint"}
    return {**kept, "input": job.key, "outputs": job.outputs.as_dict(out_dir), "resumed": True}

"""`segdeploy batch`: run a model over the images that folders, files and glob patterns name (torch-free).

Built on the Predictor (segdeploy.infer.predictor), which owns the model, its spec and the pre- and
post-processing; this module plans the jobs, drives the Predictor through the shared overlapped
pipeline (segdeploy.infer.pipeline) with a write stage, and keeps runs resumable::

    decode pool (`workers` threads): load_image (EXIF applied) + Predictor.prepare (stretch to the
      input size, or plan the tiles of a large image)
    main thread: Predictor.infer, `batch_size` images per model call (tiles of a large image too), on
      onnxruntime or OpenVINO (segdeploy.infer.runtime.open_model)
    write pool (`workers` threads): the chosen outputs at the original size (mask, overlay, colour
      mask, confidence, COCO RLE), atomic writes, the summary record

At most about ``2 * batch_size + 3 * workers`` decoded images are in flight, and together they hold
at most the memory budget (`memory_budget` MB; an image is counted at `BYTES_PER_PIXEL` of its
size from its header, before it is decoded: see segdeploy.infer.pipeline). When no chosen output
needs the photo itself (no overlay) and tiling is off, JPEGs are decoded at a reduced size no
smaller than the model's input (libjpeg's DCT scaling): the masks are still made at the original size.

Failure policy. Inputs that cannot be listed or read (segdeploy.infer.batch.sources: FIFOs, dangling
symlinks, folders without permission; undecodable files; images beyond the pixel limit) and an
image whose own outputs cannot be written (a name too long) are named with the reason and skipped:
the run goes on and ends with exit 3. A write that fails because --out can take no more (no space,
read-only, I/O error: `outputs.OutputWriteError`) stops the run: started writes finish, summary.json
lists what was finished if it can still be written, and the error (exit 1) says so. --out is checked
to be writable before any work. A rerun skips images whose chosen outputs are complete (see
`segdeploy.infer.batch.outputs`) and removes temporary files a killed run left behind. With a shard
(`segdeploy.infer.batch.shards`) the run does only its share of the inputs and writes
summary.shard-K-of-N.json (and predictions.shard-K-of-N.json).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segdeploy.infer.batch.ground_truth import GroundTruth, GroundTruthReport
from segdeploy.infer.batch.outputs import (
    DEFAULT_SAVE,
    LEGEND_NAME,
    NotAFileError,
    OutputPaths,
    OutputWriteError,
    completed_record,
    confidence_to_grey,
    encode_grey,
    encode_mask,
    encode_rgb,
    output_paths,
    read_mask,
    resolve_save,
    source_stamp,
    sweep_temp_files,
    write_atomic,
)
from segdeploy.infer.batch.rle import rle_entries, write_predictions
from segdeploy.infer.batch.shards import Shard, shard_section
from segdeploy.infer.batch.sources import BatchInputError, list_sources
from segdeploy.infer.batch.summary import SUMMARY_NAME, RunTotals, build_summary, write_summary
from segdeploy.infer.legend import legend_image
from segdeploy.infer.pipeline import Failure, MemoryBudget, Reserve, default_workers, prefetch, run_pipeline
from segdeploy.infer.predictor import DEFAULT_BATCH_SIZE, Prediction, Predictor, Prepared
from segdeploy.infer.tiling import DEFAULT_TILE_OVERLAP, TILE_AUTO, Tiling
from segtrain.common.errors import RunError, printable
from segtrain.common.files import ensure_writable_dir, file_sha256
from segtrain.common.system import available_memory
from segtrain.contract import ModelSpec
from segtrain.data.images import ImageReadError, load_image

__all__ = ["BatchConfig", "BatchResult", "default_memory_budget", "default_workers", "run_batch",
           "sigterm_as_interrupt"]

# Memory an image holds while in flight, in bytes per pixel of its original size: the photo (Pillow's
# 4-byte pixels while it decodes, then the 3-byte array; fewer pixels with a reduced decode) and the
# arrays of each chosen output (tracemalloc on a 6-megapixel image). Each write thread also holds a
# fixed working set of some tens of MB. With the default outputs, 17 bytes per pixel: one 12-megapixel
# PNG in flight raised a run's peak RSS by 198 MB (16.5 bytes per pixel).
BYTES_PER_PIXEL = {"photo": 7, "mask": 2, "overlay": 8, "color": 6, "confidence": 6, "rle": 10}
MIN_MEMORY_BUDGET_MB = 256
FALLBACK_MEMORY_BUDGET_MB = 2048  # where the available memory cannot be read
MAX_MEMORY_BUDGET_MB = 1 << 24


def default_memory_budget() -> int:
    """MB: a quarter of the memory available at start (a container's limit included), at least
    MIN_MEMORY_BUDGET_MB; FALLBACK_MEMORY_BUDGET_MB where it cannot be read."""
    available = available_memory()
    if available is None:
        return FALLBACK_MEMORY_BUDGET_MB
    return max(MIN_MEMORY_BUDGET_MB, available // 4 // 2**20)


@dataclass(frozen=True)
class BatchConfig:
    """Settings of one batch run; the CLI fills it from its options (and reads its defaults here)."""

    sources: tuple[Path | str, ...]  # folders, image files, glob patterns (a single one may be given bare)
    out_dir: Path
    model: Path
    batch_size: int = DEFAULT_BATCH_SIZE
    provider: str = "auto"
    runtime: str = "auto"  # segdeploy.infer.runtime.RUNTIME_CHOICES
    threads: int | None = None
    workers: int = field(default_factory=default_workers)
    alpha: float = 0.5
    overwrite: bool = False
    gt: Path | None = None
    progress: bool | None = None  # None: a progress bar only when stderr is a terminal
    shard: Shard | None = None  # do only this share of the inputs
    save: tuple[str, ...] = DEFAULT_SAVE  # outputs (outputs.SAVE_CHOICES); the mask is always written
    legend: bool = False  # draw a legend of the classes present onto each overlay
    tile: str | int = TILE_AUTO  # auto, off or a window size in pixels (segdeploy.infer.tiling)
    tile_overlap: float = DEFAULT_TILE_OVERLAP
    memory_budget: int = field(default_factory=default_memory_budget)  # MB that the images in flight may hold

    def __post_init__(self) -> None:
        sources = (self.sources,) if isinstance(self.sources, (str, os.PathLike)) else tuple(self.sources)
        if not sources:
            raise BatchInputError("no SOURCE given: name folders, image files or quoted glob patterns")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise BatchInputError(f"--alpha {self.alpha}: the overlay opacity must be from 0 to 1")
        if not (isinstance(self.memory_budget, int) and 1 <= self.memory_budget <= MAX_MEMORY_BUDGET_MB):
            raise BatchInputError(f"--memory-budget {self.memory_budget}: expected MB from 1 to {MAX_MEMORY_BUDGET_MB}")
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "save", resolve_save(self.save))
        tiling = Tiling(self.tile, self.tile_overlap)  # checks them before any work
        object.__setattr__(self, "tile", tiling.tile)
        object.__setattr__(self, "tile_overlap", tiling.overlap)


@dataclass(frozen=True)
class Job:
    """One input image: its key (path relative to the folder it was found in, POSIX form), file, outputs."""

    key: str
    source: Path
    root: Path
    outputs: OutputPaths


@dataclass(frozen=True)
class _Source:
    job: Job
    stamp: dict[str, int]  # source_stamp taken before reading, so a file changed meanwhile is redone


@dataclass
class ImageResult:
    """What the write stage made of one image: its summary record and its COCO result entries."""

    record: dict
    coco: list[dict]


@dataclass
class BatchResult:
    summary: dict
    summary_path: Path
    failures: list[Failure]
    totals: RunTotals
    ground_truth: GroundTruthReport | None
    predictions_path: Path | None = None

    def describe(self) -> str:
        """What the run did, its speed, and the ground-truth scores when there are any."""
        t = self.totals.to_dict()
        speed = (f" ({t['images_per_second']:.2f} images/s end-to-end, {t['model_images_per_second']:.2f} "
                 "images/s in the model)" if t["processed"] else "")
        lines = [f"{t['processed']} images segmented, {t['resumed']} already done, {t['failed']} failed, "
                 f"in {t['seconds']:.1f} s on {self.summary['provider']} [{self.summary['runtime']['reason']}]"
                 f"{speed}", f"summary: {self.summary_path}"]
        if self.predictions_path is not None:
            lines.append(f"COCO results (RLE): {self.predictions_path}")
        if "shard" in self.summary:
            s = self.summary["shard"]
            lines.insert(0, f"shard {s['index']}/{s['count']}: {t['images_found']} of {s['inputs_total']} inputs")
            lines.append(f"when all {s['count']} shards are done: segdeploy merge-summary {self.summary['out_dir']}")
        if self.ground_truth is not None:
            gt = self.ground_truth
            lines.append(f"ground truth: {gt.scored} images scored, {gt.without_truth} inputs without ground truth")
            lines.append(gt.metrics.table())
        return "\n".join(lines)

    def describe_failures(self) -> str:
        lines = [f"{len(self.failures)} input(s) skipped:"]
        return "\n".join(lines + [printable(f"  {f.input}: {f.reason}") for f in self.failures])


# --------------------------------------------------------------------------------------------
# Inputs


def plan_jobs(sources: Sequence[Path | str], out_dir: Path,
              save: Sequence[str] = DEFAULT_SAVE) -> tuple[list[Job], list[Failure]]:
    """(a job per image the sources name, outputs mirrored under `out_dir`; what could not be listed or used)."""
    out_dir = Path(out_dir)
    for source in sources:
        if Path(source).is_dir() and os.path.realpath(source) == os.path.realpath(out_dir):
            raise BatchInputError(f"--out {out_dir} is the input folder; choose a separate output folder")
    listing = list_sources(sources, exclude=[out_dir])
    return [Job(f.key, f.path, f.root, output_paths(out_dir, f.rel, save)) for f in listing.files], listing.failures


def check_out_dir(out_dir: Path) -> None:
    """BatchInputError unless --out is, or can be made as, a writable folder; nothing is created (see run_batch)."""
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


def ground_truth_root(jobs: list[Job]) -> Path:
    """The one folder --gt's file names are relative to; BatchInputError when the inputs come from several."""
    roots = {job.root.resolve(): job.root for job in jobs}
    if len(roots) != 1:
        raise BatchInputError(f"--gt matches file names relative to one folder, but the inputs come from {len(roots)} "
                              f"({', '.join(sorted(str(r) for r in roots.values()))}); score each folder separately")
    return next(iter(roots.values()))


# --------------------------------------------------------------------------------------------
# Stages


def image_bytes(save: Sequence[str]) -> int:
    """Bytes per pixel of its original size that an image's outputs hold in flight (without the photo)."""
    return sum(BYTES_PER_PIXEL[kind] for kind in resolve_save(save))


def reduced_decode(save: Sequence[str], tile: str | int) -> bool:
    """Whether a JPEG may be decoded at a reduced size: no chosen output needs the photo (the overlay
    is drawn on it) and tiling is off (tiles run at the photo's own resolution)."""
    return "overlay" not in save and tile == "off"


def decode(job: Job, predictor: Predictor, reserve: Reserve | None = None, save: Sequence[str] = DEFAULT_SAVE,
           reduced: bool = False) -> Prepared | Failure:
    """Read and prepare one input; an unreadable file becomes a Failure with the reason.

    `reserve(nbytes)`, when given, is called with the image's estimated memory once its header is read
    (the memory budget); `reduced`: decode a JPEG at a reduced size (see `reduced_decode`).
    """
    t0 = time.perf_counter()
    size: tuple[int, int] | None = None

    def before_decode(full: tuple[int, int], pixels: int) -> None:
        nonlocal size
        size = full
        if reserve is not None:
            reserve(full[0] * full[1] * image_bytes(save) + pixels * BYTES_PER_PIXEL["photo"])

    try:
        stamp = source_stamp(job.source)
        image = load_image(job.source, min_size=predictor.spec.input_size if reduced else None,
                           before_decode=before_decode)
        prepared = predictor.prepare(image, source=_Source(job, stamp), size=size)
    except FileNotFoundError:
        return Failure(job.key, "file not found (removed during the run?)")
    except NotAFileError:
        return Failure(job.key, "not a regular file")
    except ImageReadError as e:
        return Failure(job.key, str(e).removeprefix(f"{job.source}: "))
    except MemoryError:
        return Failure(job.key, "not enough memory to decode it")
    prepared.seconds = {"decode": time.perf_counter() - t0}
    return prepared


@dataclass(frozen=True)
class _Writer:
    """The write stage: the chosen outputs of one prediction, written atomically (mask last)."""

    spec: ModelSpec
    out_dir: Path
    save: tuple[str, ...]
    alpha: float
    legend: bool
    fingerprint: dict
    truth: GroundTruth | None

    def __call__(self, prediction: Prediction) -> ImageResult | Failure:
        t0 = time.perf_counter()
        job, stamp = prediction.source.job, prediction.source.stamp
        files = job.outputs.files
        try:
            if "confidence" in self.save or "rle" in self.save:
                prediction.confidence  # noqa: B018 (mask and confidence in one pass)
            record = {"input": job.key, "outputs": job.outputs.as_dict(self.out_dir), "size": list(prediction.size),
                      "tiles": prediction.tiles, "seconds": {}, "class_share": prediction.class_shares,
                      "fingerprint": {**self.fingerprint, "source": stamp}}
            if "rle" in self.save:
                record["scores"] = {str(k): round(v, 6) for k, v in prediction.class_scores.items()}
            if "overlay" in files:
                write_atomic(files["overlay"], encode_rgb(prediction.overlay(self.alpha, self.legend), ".jpg"))
            if "color" in files:
                write_atomic(files["color"], encode_rgb(prediction.colorized(), ".png"))
            if "confidence" in files:
                write_atomic(files["confidence"], encode_grey(confidence_to_grey(prediction.confidence)))
            record["seconds"] = _stage_seconds(prediction.seconds, t0)  # as stored in the mask, for a resumed summary
            write_atomic(files["mask"], encode_mask(prediction.mask, prediction.spec.palette, record))
            coco = self.coco_entries(job.key, prediction.mask, prediction.class_scores) if "rle" in self.save else []
        except OSError as e:  # this image's own files (a name too long...); OutputWriteError stops the run
            return Failure(job.key, f"cannot write its outputs ({e.strerror or e})")
        except MemoryError:
            return Failure(job.key, "not enough memory to write its outputs")
        if self.truth is not None:
            self.truth.update(job.key, prediction.mask)
        record["seconds"] = _stage_seconds(prediction.seconds, t0)
        del record["fingerprint"]
        return ImageResult(record, coco)

    def coco_entries(self, key: str, mask: np.ndarray, scores: dict[int, float]) -> list[dict]:
        """predictions.json entries of one image: --gt's image id and pixel grid when it has the image."""
        image_id = key
        if self.truth is not None and self.truth.has(key):
            image_id, mask = self.truth.image_id(key), self.truth.truth_grid(key, mask)
        return rle_entries(mask, scores, self.spec, image_id)


def _stage_seconds(seconds: dict[str, float], write_start: float) -> dict[str, float]:
    stages = {**seconds, "write": time.perf_counter() - write_start}
    return {**{k: round(v, 4) for k, v in stages.items()}, "total": round(sum(stages.values()), 4)}


# --------------------------------------------------------------------------------------------
# The run


class _Progress:
    """Collects records and failures on the main thread, with a tqdm bar and failure lines."""

    def __init__(self, paths: dict[str, Path], total: int, enabled: bool | None, log: Callable[[str], None]) -> None:
        self.paths = paths
        self.results: list[ImageResult] = []
        self.failures: list[Failure] = []
        self.log = log
        self.bar = tqdm(total=total, unit="img", desc="batch", disable=None if enabled is None else not enabled)

    def done(self, result: ImageResult | Failure) -> None:
        if isinstance(result, Failure):
            self.failures.append(result)
            self.log(printable(f"skipped {self.paths.get(result.input, result.input)}: {result.reason}"))
        else:
            self.results.append(result)
        self.bar.update(1)


def _split_done(jobs: list[Job], fingerprint: dict, overwrite: bool) -> tuple[list[Job], list[tuple[Job, dict]]]:
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


def _resume(config: BatchConfig, jobs: list[Job], fingerprint: dict,
            log: Callable[[str], None]) -> tuple[list[Job], list[tuple[Job, dict]]]:
    """Remove orphaned temporary files, then split `jobs` into (to run, already complete)."""
    swept = sweep_temp_files(config.out_dir)
    if swept:
        log(f"removed {len(swept)} temporary file(s) left by an interrupted run")
    todo, done = _split_done(jobs, fingerprint, config.overwrite)
    if done:
        log(f"{len(done)} of {len(jobs)} images already have complete outputs in {config.out_dir}; "
            "skipping them (--overwrite redoes them)")
    return todo, done


def _replay_saved(writer: _Writer, done: list[tuple[Job, dict]], workers: int) -> list[dict]:
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


def write_legends(out_dir: Path, jobs: list[Job], spec: ModelSpec) -> None:
    """legend.png in OUT and in every folder that receives outputs (rewritten only when it differs).

    Before any image is run: a folder that cannot take it is an OutputWriteError.
    """
    data = encode_rgb(legend_image(spec), ".png")
    for folder in sorted({Path(out_dir)} | {job.outputs.mask.parent for job in jobs}):
        path = folder / LEGEND_NAME
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                continue
        try:
            write_atomic(path, data)
        except OSError as e:
            raise OutputWriteError(path, e) from e


def _resumed_record(job: Job, record: dict, out_dir: Path) -> dict:
    kept = {k: v for k, v in record.items() if k != "fingerprint"}
    return {**kept, "input": job.key, "outputs": job.outputs.as_dict(out_dir), "resumed": True}


def _log_to_stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class BatchStopped(RunError):
    """--out could take no more (OutputWriteError): the run stopped early; exit code 1."""


def run_batch(config: BatchConfig, log: Callable[[str], None] = _log_to_stderr) -> BatchResult:
    """Run the model over every image config.sources name (or config.shard's share of them).

    Writes the chosen outputs, legend.png in every output folder, summary.json (summary.shard-K-of-N.json
    for a shard) and with "rle" predictions.json (predictions.shard-K-of-N.json).

    Raises BatchInputError, ModelLoadError, TileError or segtrain.data.coco.DataError for bad arguments
    (an unwritable --out included) before any output is written, InferenceError when inference fails,
    BatchStopped when --out can take no more (after writing a summary of what was finished, if it
    can), and KeyboardInterrupt after letting started writes finish.
    """
    all_jobs, all_unlisted = plan_jobs(config.sources, config.out_dir, config.save)
    owned = config.shard.owns if config.shard else (lambda key: True)
    jobs, unlisted = [j for j in all_jobs if owned(j.key)], [f for f in all_unlisted if owned(f.input)]
    check_out_dir(config.out_dir)
    predictor = Predictor(config.model, provider=config.provider, threads=config.threads, runtime=config.runtime,
                          tile=config.tile, tile_overlap=config.tile_overlap, batch_size=config.batch_size)
    truth = GroundTruth(config.gt, ground_truth_root(all_jobs), predictor.spec) if config.gt and all_jobs else None
    try:
        ensure_writable_dir(config.out_dir)
    except OSError as e:
        raise BatchInputError(f"--out {config.out_dir}: cannot write there ({e.strerror or e})") from e
    fingerprint = {"model_sha256": file_sha256(predictor.path), "alpha": config.alpha, "save": list(config.save),
                   "legend": config.legend, "tile": predictor.tiling.tile, "tile_overlap": predictor.tiling.overlap}
    todo, done = _resume(config, jobs, fingerprint, log)
    writer = _Writer(predictor.spec, Path(config.out_dir), config.save, config.alpha, config.legend, fingerprint,
                     truth)
    write_legends(config.out_dir, jobs, predictor.spec)
    totals = RunTotals(found=len(jobs) + len(unlisted), resumed=len(done))
    progress = _Progress({job.key: job.source for job in jobs}, len(todo) + len(unlisted), config.progress, log)
    for failure in unlisted:
        progress.done(failure)
    started, t0 = time.time(), time.perf_counter()
    resumed_coco: list[dict] = []
    stopped: OutputWriteError | None = None
    reduced = reduced_decode(config.save, predictor.tiling.tile)
    try:
        resumed_coco = _replay_saved(writer, done, config.workers) if done else []
        results = run_pipeline(todo, lambda job, reserve: decode(job, predictor, reserve, config.save, reduced),
                               predictor.infer, writer, config.batch_size, config.workers,
                               MemoryBudget(config.memory_budget * 2**20))
        with contextlib.closing(results):
            for result in results:
                progress.done(result)
    except OutputWriteError as e:
        stopped = e
    finally:
        progress.bar.close()
    records = [r.record for r in progress.results]
    totals.finish(time.perf_counter() - t0, records, len(progress.failures))
    records += [_resumed_record(job, rec, writer.out_dir) for job, rec in done]
    gt_report = truth.report([job.key for job in jobs]) if truth is not None else None
    doc = build_summary(_describe_run(config, predictor, fingerprint), records, progress.failures, totals,
                        gt_report.to_dict() if gt_report else None)
    if config.shard is not None:
        keys = [job.key for job in all_jobs] + [f.input for f in all_unlisted]
        doc["shard"] = shard_section(config.shard, keys, started, time.time())
    if stopped is not None:
        _stop(config, doc, stopped, len(progress.results), len(todo))
    predictions = None
    if "rle" in config.save:
        coco = [e for r in progress.results for e in r.coco] + resumed_coco
        predictions = _written(lambda: write_predictions(config.out_dir, coco, config.shard))
    path = _written(lambda: write_summary(config.out_dir, doc, _summary_name(config)))
    return BatchResult(doc, path, progress.failures, totals, gt_report, predictions)


def _summary_name(config: BatchConfig) -> str:
    return config.shard.summary_name if config.shard else SUMMARY_NAME


def _written(write: Callable[[], Path]) -> Path:
    """write(), a file of the run's own (summary, predictions); any OSError is an OutputWriteError."""
    try:
        return write()
    except OutputWriteError:
        raise
    except OSError as e:
        raise OutputWriteError(Path(e.filename or "?"), e) from e


def _stop(config: BatchConfig, doc: dict, error: OutputWriteError, finished: int, todo: int) -> None:
    """Write the summary of a run that --out stopped (when it can still be written) and raise BatchStopped."""
    doc["stopped"] = printable(error)
    try:
        note = f"summary of what was finished: {write_summary(config.out_dir, doc, _summary_name(config))}"
    except OutputWriteError as e:
        note = f"no summary written ({_summary_name(config)}: {e.reason} too)"
    except OSError as e:
        note = f"no summary written ({_summary_name(config)}: {e.strerror or e} too)"
    raise BatchStopped(f"{error}: the run stopped after {finished} of {todo} image(s), whose outputs are kept; "
                       f"{note}; make room or fix --out, then run the same command again to do the rest") from error


def _describe_run(config: BatchConfig, predictor: Predictor, fingerprint: dict) -> dict:
    spec = predictor.spec
    provenance = getattr(predictor.model, "provenance", None)
    return {"model": {"path": str(predictor.path), "sha256": fingerprint["model_sha256"], "arch": spec.arch,
                      "encoder": spec.encoder, "precision": provenance.precision if provenance else None,
                      "classes": list(spec.classes), "input_size": list(spec.input_size)},
            "runtime": {"requested": config.runtime, "used": predictor.model.runtime,
                        "reason": predictor.model.runtime_reason},
            "provider": predictor.providers[0], "providers": predictor.providers,
            "settings": {"batch_size": config.batch_size, "runtime": config.runtime, "threads": config.threads,
                         "workers": config.workers, "alpha": config.alpha, "overwrite": config.overwrite,
                         "save": list(config.save), "legend": config.legend, "tile": predictor.tiling.tile,
                         "tile_overlap": predictor.tiling.overlap},
            "memory_budget_mb": config.memory_budget,  # by default from this machine's memory: not a setting
            "sources": [str(s) for s in config.sources], "out_dir": str(config.out_dir),
            "ground_truth_file": str(config.gt) if config.gt else None}


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while the batch runs, so `kill PID` also stops cleanly."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

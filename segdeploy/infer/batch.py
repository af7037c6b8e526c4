"""`segdeploy batch`: run an ONNX segmentation model over a folder of images (torch-free).

The pipeline overlaps decoding and writing with inference and keeps memory bounded for any
number of images::

    decode pool (`workers` threads): load_image (EXIF applied) + contract.preprocess
      -> bounded window of decoded images, in input order
    main thread: stacks `batch_size` tensors, one model call per batch (onnxruntime or OpenVINO)
      -> bounded window of pending writes
    write pool (`workers` threads): contract.logits_to_mask at the original size (bilinear
      resize of the logits, then arg-max), colour mask, overlay, atomic writes, summary record

At most about ``2 * batch_size + 3 * workers`` decoded images are in flight. Every input
goes through the model at the spec's input size, so any mix of image sizes batches together.
Unreadable inputs are reported and skipped; a rerun skips images whose outputs are complete
(see `segdeploy.infer.outputs`) and removes temporary files a killed run left behind. With a shard
(`segdeploy.shard`) the run does only its share of the inputs and writes summary.shard-K-of-N.json.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segdeploy.infer.inputs import BatchInputError, find_images
from segdeploy.infer.outputs import (
    OutputPaths,
    completed_record,
    encode_mask,
    encode_rgb,
    output_paths,
    read_mask,
    source_stamp,
    sweep_temp_files,
    write_atomic,
)
from segdeploy.infer.partition import Shard, shard_section
from segdeploy.infer.runtime import Model, open_model
from segdeploy.infer.scoring import GroundTruth, GroundTruthReport
from segdeploy.infer.summary import SUMMARY_NAME, Failure, RunTotals, build_summary, class_share, write_summary
from segtrain.contract import ModelSpec, colorize, logits_to_mask, overlay, preprocess
from segtrain.errors import RunError
from segtrain.fileio import file_sha256
from segtrain.images import IMAGE_SUFFIXES, ImageReadError, load_image
from segtrain.machine import usable_cores

# Rows of the overlay blended at a time, so a 24-megapixel photo needs no full-size temporaries.
_OVERLAY_BAND_PIXELS = 1 << 21


class BatchRunError(RunError):
    """The model failed on a batch (for example a fixed batch size); the run stops."""


def default_workers() -> int:
    """Decode and write threads per pool: the usable cores, at most 4."""
    return min(4, usable_cores())


@dataclass(frozen=True)
class BatchConfig:
    """Settings of one batch run; the CLI fills it from its options."""

    input_dir: Path
    out_dir: Path
    model: Path
    batch_size: int = 4
    runtime: str = "auto"  # segdeploy.infer.runtime.RUNTIME_CHOICES
    provider: str = "auto"
    threads: int | None = None
    workers: int = field(default_factory=default_workers)
    alpha: float = 0.5
    overwrite: bool = False
    gt: Path | None = None
    progress: bool | None = None  # None: a progress bar only when stderr is a terminal
    shard: Shard | None = None  # do only this share of the inputs


@dataclass(frozen=True)
class Job:
    """One input image: its path relative to INPUT_DIR (POSIX form), where it is, its outputs."""

    key: str
    source: Path
    outputs: OutputPaths


@dataclass
class Decoded:
    job: Job
    image: np.ndarray
    tensor: np.ndarray | None
    seconds: dict[str, float]
    stamp: dict[str, int]  # source_stamp taken before reading, so a file changed meanwhile is redone


@dataclass(frozen=True)
class _WriteContext:
    spec: ModelSpec
    out_dir: Path
    alpha: float
    fingerprint: dict
    truth: GroundTruth | None


@dataclass
class BatchResult:
    summary: dict
    summary_path: Path
    failures: list[Failure]
    totals: RunTotals
    ground_truth: GroundTruthReport | None

    def describe(self) -> str:
        """What the run did, its speed, and the ground-truth scores when there are any."""
        t = self.totals.to_dict()
        speed = (f" ({t['images_per_second']:.2f} images/s end-to-end, {t['model_images_per_second']:.2f} "
                 "images/s in the model)" if t["processed"] else "")
        lines = [f"{t['processed']} images segmented, {t['resumed']} already done, {t['failed']} failed, "
                 f"in {t['seconds']:.1f} s on {self.summary['provider']} [{self.summary['runtime']['reason']}]"
                 f"{speed}", f"summary: {self.summary_path}"]
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
        lines = [f"{len(self.failures)} input(s) could not be read:"]
        return "\n".join(lines + [f"  {f.input}: {f.reason}" for f in self.failures])


# --------------------------------------------------------------------------------------------
# Inputs


def plan_jobs(input_dir: Path, out_dir: Path) -> list[Job]:
    """A job per image under `input_dir`, outputs mirrored under `out_dir`."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if out_dir.resolve() == input_dir.resolve():
        raise BatchInputError(f"--out {out_dir} is the input folder; choose a separate output folder")
    rels = find_images(input_dir, exclude=[out_dir])
    if not rels:
        kinds = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
        raise BatchInputError(f"{input_dir}: no images ({kinds}) found")
    return [Job(rel.as_posix(), input_dir / rel, output_paths(out_dir, rel)) for rel in rels]


# --------------------------------------------------------------------------------------------
# Stages


def decode(job: Job, spec: ModelSpec) -> Decoded | Failure:
    """Read and preprocess one input; an unreadable file becomes a Failure with the reason."""
    t0 = time.perf_counter()
    try:
        stamp = source_stamp(job.source)
        image = load_image(job.source)
    except FileNotFoundError:
        return Failure(job.key, "file not found (removed during the run?)")
    except ImageReadError as e:
        return Failure(job.key, str(e).removeprefix(f"{job.source}: "))
    except MemoryError:
        return Failure(job.key, "not enough memory to decode it")
    tensor = preprocess(image, spec)[0]
    return Decoded(job, image, tensor, {"decode": time.perf_counter() - t0}, stamp)


def blend_overlay(image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float) -> np.ndarray:
    """contract.overlay applied in bands of rows, so temporaries stay small for huge photos."""
    out = np.empty_like(image)
    rows = max(1, _OVERLAY_BAND_PIXELS // max(image.shape[1], 1))
    for r0 in range(0, image.shape[0], rows):
        out[r0:r0 + rows] = overlay(image[r0:r0 + rows], mask[r0:r0 + rows], palette, alpha)
    return out


def write_outputs(item: Decoded, logits: np.ndarray, ctx: _WriteContext) -> dict | Failure:
    """Mask at the original size, colour mask and overlay, written atomically (mask last)."""
    t0 = time.perf_counter()
    job, spec = item.job, ctx.spec
    mask = logits_to_mask(logits, item.image.shape[:2])
    record = {"input": job.key, "outputs": job.outputs.as_dict(ctx.out_dir), "size": list(mask.shape),
              "seconds": {}, "class_share": class_share(mask, spec.classes),
              "fingerprint": {**ctx.fingerprint, "source": item.stamp}}
    try:
        write_atomic(job.outputs.color, encode_rgb(colorize(mask, spec.palette), ".png"))
        write_atomic(job.outputs.overlay, encode_rgb(blend_overlay(item.image, mask, spec.palette, ctx.alpha), ".jpg"))
        record["seconds"] = _stage_seconds(item.seconds, t0)  # as stored in the mask, for a resumed summary
        write_atomic(job.outputs.mask, encode_mask(mask, spec.palette, record))
    except OSError as e:
        return Failure(job.key, f"cannot write outputs ({e})")
    except MemoryError:
        return Failure(job.key, "not enough memory to write its outputs")
    if ctx.truth is not None:
        ctx.truth.update(job.key, mask)
    record["seconds"] = _stage_seconds(item.seconds, t0)
    del record["fingerprint"]
    return record


def _stage_seconds(seconds: dict[str, float], write_start: float) -> dict[str, float]:
    stages = {**seconds, "write": time.perf_counter() - write_start}
    return {**{k: round(v, 4) for k, v in stages.items()}, "total": round(sum(stages.values()), 4)}


def _prefetch(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, depth: int) -> Iterator:
    """fn(item) for each item on `pool`, results in order, at most `depth` submitted ahead."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _batches(decoded: Iterable[Decoded | Failure], size: int,
             on_failure: Callable[[Failure], None]) -> Iterator[list[Decoded]]:
    batch: list[Decoded] = []
    for item in decoded:
        if isinstance(item, Failure):
            on_failure(item)
            continue
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------------------------
# The run


class _Progress:
    """Collects records and failures on the main thread, with a tqdm bar and failure lines."""

    def __init__(self, input_dir: Path, total: int, enabled: bool | None, log: Callable[[str], None]) -> None:
        self.input_dir = input_dir
        self.records: list[dict] = []
        self.failures: list[Failure] = []
        self.log = log
        self.bar = tqdm(total=total, unit="img", desc="batch", disable=None if enabled is None else not enabled)

    def done(self, result: dict | Failure) -> None:
        if isinstance(result, Failure):
            self.failures.append(result)
            self.log(f"skipped {self.input_dir / result.input}: {result.reason}")
        else:
            self.records.append(result)
        self.bar.update(1)


def _run_pipeline(model: Model, todo: list[Job], ctx: _WriteContext, config: BatchConfig,
                  progress: _Progress, totals: RunTotals) -> None:
    """Decode -> batched inference -> write for `todo`; Ctrl-C lets started writes finish."""
    spec = ctx.spec
    with ThreadPoolExecutor(config.workers, thread_name_prefix="decode") as readers, \
            ThreadPoolExecutor(config.workers, thread_name_prefix="write") as writers:
        writes: deque[Future] = deque()
        try:
            decoded = _prefetch(readers, lambda job: decode(job, spec), todo, config.batch_size + config.workers)
            for batch in _batches(decoded, config.batch_size, progress.done):
                logits = _infer(model, batch, totals)
                for item, out in zip(batch, logits, strict=True):
                    while len(writes) >= 2 * config.workers:
                        progress.done(writes.popleft().result())
                    writes.append(writers.submit(write_outputs, item, out, ctx))
            while writes:
                progress.done(writes.popleft().result())
        except BaseException:
            # Queued work is dropped; writes already started complete, so no temporary file is left.
            readers.shutdown(wait=False, cancel_futures=True)
            writers.shutdown(wait=True, cancel_futures=True)
            raise


def _infer(model: Model, batch: list[Decoded], totals: RunTotals) -> np.ndarray:
    tensors = np.stack([item.tensor for item in batch])
    t0 = time.perf_counter()
    try:
        logits = model.run(tensors)
    except Exception as e:  # onnxruntime raises its own exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BatchRunError(f"{model.path}: inference failed on a batch of {len(batch)} ({first}); "
                           "if the model has a fixed batch size, use --batch-size 1") from e
    seconds = time.perf_counter() - t0
    totals.model_seconds += seconds
    for item in batch:
        item.seconds["infer"] = seconds / len(batch)
        item.tensor = None  # the preprocessed copy is no longer needed
    return logits


def _split_done(jobs: list[Job], fingerprint: dict, overwrite: bool) -> tuple[list[Job], list[tuple[Job, dict]]]:
    """(jobs to run, (job, stored record) of jobs whose outputs are already complete)."""
    if overwrite:
        return list(jobs), []
    todo, done = [], []
    for job in jobs:
        try:
            record = completed_record(job.outputs, {**fingerprint, "source": source_stamp(job.source)})
        except FileNotFoundError:
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


def _score_saved(truth: GroundTruth, done: list[tuple[Job, dict]], workers: int) -> None:
    """Score masks that an earlier run wrote (resumed images) against the ground truth."""
    jobs = [job for job, _ in done if truth.has(job.key)]
    with ThreadPoolExecutor(workers, thread_name_prefix="score") as pool:
        for _ in _prefetch(pool, lambda job: truth.update(job.key, read_mask(job.outputs.mask)), jobs, 2 * workers):
            pass


def _resumed_record(job: Job, record: dict, out_dir: Path) -> dict:
    kept = {k: v for k, v in record.items() if k != "fingerprint"}
    return {**kept, "input": job.key, "outputs": job.outputs.as_dict(out_dir), "resumed": True}


def _log_to_stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def run_batch(config: BatchConfig, log: Callable[[str], None] = _log_to_stderr) -> BatchResult:
    """Run the model over every image under config.input_dir (or config.shard's share of them).

    Writes the outputs and summary.json (summary.shard-K-of-N.json for a shard).

    Raises BatchInputError, ModelLoadError or segtrain.coco.DataError for bad arguments before
    any output is written, BatchRunError when inference fails, and KeyboardInterrupt after
    letting started writes finish.
    """
    all_jobs = plan_jobs(config.input_dir, config.out_dir)
    jobs = [job for job in all_jobs if config.shard.owns(job.key)] if config.shard else all_jobs
    model = open_model(config.model, runtime=config.runtime, provider=config.provider, threads=config.threads)
    spec = model.spec
    truth = GroundTruth(config.gt, config.input_dir, spec) if config.gt else None
    fingerprint = {"model_sha256": file_sha256(model.path), "alpha": config.alpha}
    todo, done = _resume(config, jobs, fingerprint, log)
    ctx = _WriteContext(spec, Path(config.out_dir), config.alpha, fingerprint, truth)
    totals = RunTotals(found=len(jobs), resumed=len(done))
    progress = _Progress(Path(config.input_dir), len(todo), config.progress, log)
    started, t0 = time.time(), time.perf_counter()
    try:
        if truth is not None and done:
            _score_saved(truth, done, config.workers)
        _run_pipeline(model, todo, ctx, config, progress, totals)
    finally:
        progress.bar.close()
    totals.finish(time.perf_counter() - t0, progress.records, len(progress.failures))
    records = progress.records + [_resumed_record(job, rec, ctx.out_dir) for job, rec in done]
    gt_report = truth.report([job.key for job in jobs]) if truth is not None else None
    doc = build_summary(_describe_run(config, model, fingerprint), records, progress.failures, totals,
                        gt_report.to_dict() if gt_report else None)
    if config.shard is not None:
        doc["shard"] = shard_section(config.shard, [job.key for job in all_jobs], started, time.time())
    path = write_summary(config.out_dir, doc, config.shard.summary_name if config.shard else SUMMARY_NAME)
    return BatchResult(doc, path, progress.failures, totals, gt_report)


def _describe_run(config: BatchConfig, model: Model, fingerprint: dict) -> dict:
    spec = model.spec
    return {"model": {"path": str(model.path), "sha256": fingerprint["model_sha256"], "arch": spec.arch,
                      "encoder": spec.encoder, "classes": list(spec.classes), "input_size": list(spec.input_size)},
            "runtime": {"requested": config.runtime, "used": model.runtime, "reason": model.runtime_reason},
            "provider": model.providers[0], "providers": model.providers,
            "settings": {"batch_size": config.batch_size, "threads": config.threads, "workers": config.workers,
                         "alpha": config.alpha, "overwrite": config.overwrite},
            "input_dir": str(config.input_dir), "out_dir": str(config.out_dir),
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

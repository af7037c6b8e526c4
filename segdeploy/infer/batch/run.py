"""`segdeploy batch`, stage by stage: plan the jobs (plan.py), find the finished ones (resume.py), run the rest
through the Predictor's overlapped pipeline (segdeploy.infer.pipeline) with the decode stage (decode.py) and the
write stage (write.py), then write the summary (summary.py) and predictions.json (rle.py).

An input or image that fails is a Failure and the run goes on; a write that fails because --out can take no
more (OutputWriteError) stops it: started writes finish and the summary lists what was finished (BatchStopped).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.decode import decode, reduced_decode
from segdeploy.infer.batch.ground_truth import GroundTruth, GroundTruthReport
from segdeploy.infer.batch.outputs import OutputWriteError
from segdeploy.infer.batch.plan import Job, ground_truth_root, make_out_dir, plan_run
from segdeploy.infer.batch.resume import Fingerprint, resume
from segdeploy.infer.batch.rle import write_predictions
from segdeploy.infer.batch.shards import ShardSection
from segdeploy.infer.batch.summary import (
    BatchSummary,
    ImageRecord,
    Totals,
    Written,
    by_input,
    summary_name,
    what_ran,
)
from segdeploy.infer.batch.write import ImageResult, ImageWriter, replay, write_legends
from segdeploy.infer.pipeline import Failure, MemoryBudget, run_pipeline
from segdeploy.infer.predictor import Predictor
from segtrain.common.errors import RunError, printable
from segtrain.common.files import file_sha256

__all__ = ["BatchResult", "BatchStopped", "run_batch", "sigterm_as_interrupt"]


@dataclass
class BatchResult(Written):
    """A finished run: its summary (as written to `path`) and predictions.json when --save rle."""

    summary: BatchSummary

    @property
    def totals(self) -> Totals:
        return self.summary.totals

    @property
    def ground_truth(self) -> GroundTruthReport | None:
        return self.summary.ground_truth

    def describe(self) -> str:
        """What the run did, its speed, and the ground-truth scores when there are any."""
        s, t = self.summary, self.summary.totals
        speed = (f" ({t.images_per_second:.2f} images/s end-to-end, {t.model_images_per_second:.2f} "
                 "images/s in the model)" if t.processed else "")
        lines = [f"{t.processed} images segmented, {t.resumed} already done, {t.failed} failed, in {t.seconds:.1f} s "
                 f"on {s.provider} [{s.runtime.reason}]{speed}", f"summary: {self.path}"]
        if self.predictions_path is not None:
            lines.append(f"COCO results (RLE): {self.predictions_path}")
        if s.shard is not None:
            lines.insert(0, f"shard {s.shard.shard}: {t.images_found} of {s.shard.inputs_total} inputs")
            lines.append(f"when all {s.shard.count} shards are done: segdeploy merge-summary {s.out_dir}")
        if s.ground_truth is not None:
            lines.append(s.ground_truth.describe())
        return "\n".join(lines)


class _Progress:
    """Collects records and failures on the main thread, with a tqdm bar and failure lines."""

    def __init__(self, paths: dict[str, Path], total: int, enabled: bool | None, log: Callable[[str], None]) -> None:
        self.paths = paths
        self.results: list[ImageResult] = []
        self.failures: list[Failure] = []
        self.log = log
        self.bar = tqdm(total=total, unit="img", desc="batch", disable=None if enabled is None else not enabled)
        self.t0, self.seconds = time.perf_counter(), 0.0

    def done(self, result: ImageResult | Failure) -> None:
        if isinstance(result, Failure):
            self.failures.append(result)
            self.log(printable(f"skipped {self.paths.get(result.input, result.input)}: {result.reason}"))
        else:
            self.results.append(result)
        self.bar.update(1)

    def close(self) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.bar.close()


def _log_to_stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class BatchStopped(RunError):
    """--out could take no more (OutputWriteError): the run stopped early."""


def run_batch(config: BatchConfig, log: Callable[[str], None] = _log_to_stderr) -> BatchResult:
    """Run the model over every image config.sources name (or config.shard's share of them).

    Writes the chosen outputs, legend.png in every output folder, summary.json (summary.shard-K-of-N.json
    for a shard) and with "rle" predictions.json (predictions.shard-K-of-N.json).

    Raises BatchInputError, ModelLoadError, TileError or segtrain.data.coco.DataError for bad arguments
    (an unwritable --out included) before any output is written, InferenceError when inference fails,
    BatchStopped when --out can take no more (after writing a summary of what was finished, if it
    can), and KeyboardInterrupt after letting started writes finish.
    """
    plan = plan_run(config.sources, config.out_dir, config.save, config.shard)
    predictor = Predictor(config.model, provider=config.provider, threads=config.threads, runtime=config.runtime,
                          tile=config.tile, tile_overlap=config.tile_overlap, batch_size=config.batch_size)
    truth = (GroundTruth(config.gt, ground_truth_root(plan.all_jobs), predictor.spec)
             if config.gt and plan.all_jobs else None)
    make_out_dir(config.out_dir)
    fingerprint = Fingerprint(file_sha256(predictor.path), config.alpha, config.save, config.legend,
                              predictor.tiling.tile, predictor.tiling.overlap)
    todo, done = resume(config.out_dir, plan.jobs, fingerprint, config.overwrite, log)
    writer = ImageWriter(predictor.spec, Path(config.out_dir), fingerprint, truth)
    write_legends(config.out_dir, plan.jobs, predictor.spec)
    started = time.time()
    progress = _Progress({job.key: job.source for job in plan.jobs}, len(todo) + len(plan.unlisted), config.progress,
                         log)
    resumed_coco, stopped = _run_images(config, predictor, writer, todo, done, plan.unlisted, progress)
    processed = [r.record for r in progress.results]
    summary = BatchSummary(
        **what_ran(config, predictor, fingerprint.model_sha256), images=by_input(processed + [r for _, r in done]),
        failures=by_input(progress.failures),
        totals=Totals.of_run(len(plan.jobs) + len(plan.unlisted), len(done), len(progress.failures), progress.seconds,
                             processed),
        ground_truth=truth.report([job.key for job in plan.jobs]) if truth is not None else None,
        shard=ShardSection.of_run(config.shard, plan.all_keys, started, time.time()) if config.shard else None)
    if stopped is not None:
        _stop(config, summary, stopped, len(progress.results), len(todo))
    predictions = _write_predictions(config, [e for r in progress.results for e in r.coco] + resumed_coco)
    return BatchResult(summary, _written(lambda: summary.write(config.out_dir)), predictions)


def _run_images(config: BatchConfig, predictor: Predictor, writer: ImageWriter, todo: list[Job],
                done: list[tuple[Job, ImageRecord]], unlisted: list[Failure],
                progress: _Progress) -> tuple[list[dict], OutputWriteError | None]:
    """Replay the resumed images, then run the others through the pipeline; (the resumed images' COCO entries,
    the OutputWriteError that stopped the run or None)."""
    for failure in unlisted:
        progress.done(failure)
    resumed_coco: list[dict] = []
    reduced = reduced_decode(config.save, predictor.tiling.tile)
    try:
        resumed_coco = replay(writer, done, config.workers) if done else []
        results = run_pipeline(todo, lambda job, reserve: decode(job, predictor, reserve, config.save, reduced),
                               predictor.infer, writer, config.batch_size, config.workers,
                               MemoryBudget(config.memory_budget * 2**20))
        with contextlib.closing(results):
            for result in results:
                progress.done(result)
    except OutputWriteError as e:
        return resumed_coco, e
    finally:
        progress.close()
    return resumed_coco, None


def _write_predictions(config: BatchConfig, coco: list[dict]) -> Path | None:
    """predictions.json (a shard's predictions.shard-K-of-N.json) with --save rle; its path."""
    return _written(lambda: write_predictions(config.out_dir, coco, config.shard)) if "rle" in config.save else None


def _written(write: Callable[[], Path]) -> Path:
    """write(), a file of the run's own (summary, predictions); any OSError is an OutputWriteError."""
    try:
        return write()
    except OutputWriteError:
        raise
    except OSError as e:
        raise OutputWriteError(Path(e.filename or "?"), e) from e


def _stop(config: BatchConfig, summary: BatchSummary, error: OutputWriteError, finished: int, todo: int) -> None:
    """Write the summary of a run that --out stopped (when it can still be written) and raise BatchStopped."""
    name = summary_name(config.shard)
    try:
        note = f"summary of what was finished: {replace(summary, stopped=printable(error)).write(config.out_dir)}"
    except OutputWriteError as e:
        note = f"no summary written ({name}: {e.reason} too)"
    except OSError as e:
        note = f"no summary written ({name}: {e.strerror or e} too)"
    raise BatchStopped(f"{error}: the run stopped after {finished} of {todo} image(s), whose outputs are kept; "
                       f"{note}; make room or fix --out, then run the same command again to do the rest") from error


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

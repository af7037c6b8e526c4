"""`segdeploy batch`, stage by stage: plan the jobs (plan.py), check what --out holds (earlier.py), find the
finished ones (resume.py), run the images through the Predictor's overlapped pipeline (segdeploy.infer.pipeline)
with the decode stage (decode.py) and the write stage (write.py), then each video (videos.py), and write the
summary (summary.py) and predictions.json (rle.py).

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
from segdeploy.infer.batch.decode import decode, image_bytes, reduced_decode
from segdeploy.infer.batch.earlier import check_earlier, earlier_jobs
from segdeploy.infer.batch.ground_truth import GroundTruth, GroundTruthReport
from segdeploy.infer.batch.image_ids import ImageIds
from segdeploy.infer.batch.outputs import OutputWriteError
from segdeploy.infer.batch.plan import IMAGE, Job, Plan, ground_truth_root, make_out_dir, plan_run
from segdeploy.infer.batch.resume import Fingerprint, resume, sweep_temp_files
from segdeploy.infer.batch.rle import write_predictions
from segdeploy.infer.batch.shards import ShardSection
from segdeploy.infer.batch.sources import BatchInputError
from segdeploy.infer.batch.summary import (
    BatchSummary,
    ImageRecord,
    Totals,
    Written,
    by_input,
    summary_name,
    what_ran,
)
from segdeploy.infer.batch.videos import run_video
from segdeploy.infer.batch.write import ImageResult, ImageWriter, replay, write_legends
from segdeploy.infer.memory import images_budget
from segdeploy.infer.model_file import read_model_metadata
from segdeploy.infer.pipeline import Failure, MemoryBudget, run_pipeline
from segdeploy.infer.predictor import Predictor, Prepared
from segdeploy.infer.storage import list_ahead, location, shown
from segtrain.common.errors import RunError, printable
from segtrain.common.files import file_sha256

__all__ = ["BatchResult", "BatchStopped", "run_batch", "sigterm_as_interrupt"]


@dataclass
class BatchResult(Written):
    """A finished run: its summary (as written to `path`) and predictions.json when --save rle; `notes` are what
    the console should say about predictions.json."""

    summary: BatchSummary
    notes: tuple[str, ...] = ()

    @property
    def totals(self) -> Totals:
        return self.summary.totals

    @property
    def ground_truth(self) -> GroundTruthReport | None:
        return self.summary.ground_truth

    def describe(self) -> str:
        """What the run did, its speed, and the ground-truth scores when there are any."""
        s, t = self.summary, self.summary.totals
        rates = [f"{value:.2f} images/s {where}" for value, where in
                 ((t.images_per_second, "end-to-end"), (t.model_images_per_second, "in the model"))
                 if value is not None]  # None: too fast to time (a rate of 0 seconds)
        speed = f" ({', '.join(rates)})" if t.processed and rates else ""
        lines = [f"{_what_was_segmented(s)}, {t.resumed} already done, {t.failed} failed, in {t.seconds:.1f} s "
                 f"on {s.provider} [{s.runtime.reason}]{speed}", f"summary: {self.path}"]
        tiled = [r for r in s.images if r.tiles and not r.resumed]
        if tiled:
            per = [r.tiles for r in tiled]
            lines.insert(1, f"tiled: {len(tiled)} inputs, {sum(r.tiles * (r.frames or 1) for r in tiled)} model "
                            f"windows in all ({min(per)} to {max(per)} per photo or frame); summary.json lists each "
                            "one's")
        if self.predictions_path is not None:
            lines.append(f"COCO results (RLE): {self.predictions_path}")
            lines += self.notes
        if s.shard is not None:
            lines.insert(0, f"shard {s.shard.shard}: {t.images_found} of {s.shard.inputs_total} inputs")
            lines.append(f"when all {s.shard.count} shards are done: segdeploy merge-summary {s.out_dir}")
        if s.ground_truth is not None:
            lines.append(s.ground_truth.describe())
        return "\n".join(lines)


def _what_was_segmented(summary: BatchSummary) -> str:
    t = summary.totals
    if not t.frames:
        return f"{t.processed} images segmented"
    videos = sum(1 for r in summary.images if r.frames is not None and not r.resumed)
    images = t.processed - videos
    return (f"{images} image{'s' * (images != 1)} and {videos} video{'s' * (videos != 1)} ({t.frames} frames) "
            "segmented")


class _Progress:
    """Collects records and failures on the main thread, with a tqdm bar and failure lines. The bar counts
    inputs; a tiled photo moves it window by window and a video frame by frame."""

    def __init__(self, paths: dict[str, Path | str], total: int, enabled: bool | None, log: Callable[[str], None],
                 fractional: bool = False) -> None:
        self.paths = paths
        self.results: list[ImageResult] = []
        self.failures: list[Failure] = []
        self.log = log
        form = "{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]" if fractional else None
        self.bar = tqdm(total=total, unit="img", desc="batch", disable=None if enabled is None else not enabled,
                        bar_format=form)
        self.t0, self.seconds = time.perf_counter(), 0.0
        self.credit: dict[str, float] = {}  # the share of an input in progress already shown on the bar
        self.windows_seen: dict[tuple[int, int], int] = {}

    def done(self, result: ImageResult | Failure) -> None:
        key = result.input if isinstance(result, Failure) else result.record.input
        if isinstance(result, Failure):
            self.failures.append(result)
            self.log(printable(f"skipped {self.paths.get(result.input, result.input)}: {result.reason}"))
        else:
            self.results.append(result)
        self.bar.update(min(1 - self.credit.pop(key, 0.0), self.bar.total - self.bar.n))

    def partial(self, key: str, fraction: float | None) -> None:
        """Input `key` is `fraction` done (None: unknown, as a stream's)."""
        if fraction is None:
            self.bar.set_postfix_str(f"{key}: streaming", refresh=True)
            return
        shown = self.credit.get(key, 0.0)
        target = min(fraction, 0.999)
        if target > shown:
            self.credit[key] = target
            self.bar.update(target - shown)

    def tiled(self, items: list[Prepared]) -> None:
        """Say how many windows the photos of a new size run as (the first few sizes)."""
        for p in items:
            if p.plan is None:
                continue
            (h, w), n = p.plan.image_size, len(p.plan.windows)
            if (h, w) not in self.windows_seen and len(self.windows_seen) < 3:
                self.windows_seen[(h, w)] = n
                self.log(printable(f"{p.source.job.key}: {w}x{h} runs as {n} windows"
                                   + (" (later sizes: see summary.json)" if len(self.windows_seen) == 3 else "")))

    def windows(self, prepared: Prepared, count: int) -> None:
        key = prepared.source.job.key
        self.partial(key, self.credit.get(key, 0.0) + count / len(prepared.plan.windows))

    def close(self) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.bar.close()


def _log_to_stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class BatchStopped(RunError):
    """--out could take no more (OutputWriteError): the run stopped early."""


def run_batch(config: BatchConfig, log: Callable[[str], None] = _log_to_stderr) -> BatchResult:
    """Run the model over every image and video config.sources name (or config.shard's share of them).

    Writes the chosen outputs, legend.png in every output folder, summary.json (summary.shard-K-of-N.json
    for a shard) and with "rle" predictions.json (predictions.shard-K-of-N.json).

    Raises BatchInputError, ModelLoadError, TileError or segtrain.data.coco.DataError for bad arguments
    (an unwritable --out, or one that holds another run's outputs, included) before any output is written,
    InferenceError when inference fails, BatchStopped when --out can take no more (after writing a summary of
    what was finished, if it can), and KeyboardInterrupt after letting started writes finish.
    """
    if config.engine == "ray":
        from segdeploy.infer.ray_batch import require_ray

        require_ray()
    plan = plan_run(config.sources, config.out_dir, config.save, config.shard)
    # Does one model call fit the budget? Asked of the file's spec before the Predictor opens it: --runtime auto
    # runs the model on a synthetic batch of that size to choose its engine.
    images_budget(read_model_metadata(config.model).spec, config.batch_size, config.memory_budget,
                  image_bytes(config.save))
    if config.engine == "ray" and any(job.kind == IMAGE for job in plan.jobs):
        from segdeploy.infer.ray_batch import connect

        connect(config.ray_address)  # a cluster that cannot be reached is one line before anything is written
    predictor = Predictor(config.model, provider=config.provider, threads=config.threads, runtime=config.runtime,
                          tile=config.tile, tile_overlap=config.tile_overlap, batch_size=config.batch_size,
                          tta=config.tta, expected_images=len(plan.jobs), note=log,
                          spinning=False)  # decode and write threads share the cores (runtime.SPINNING_NOTE)
    truth, ids = _ground_truth_and_ids(config, plan, predictor)
    fingerprint = Fingerprint(file_sha256(predictor.path), config.alpha, config.save, config.legend,
                              predictor.tiling.tile, predictor.tiling.overlap, config.tta)
    listing = list_ahead(config.out_dir)  # one listing answers the existence checks below (a store: no request each)
    earlier = check_earlier(config.out_dir, plan.jobs, fingerprint, config.shard, config.overwrite, log, listing)
    make_out_dir(config.out_dir)
    todo, done = resume(config.out_dir, plan.jobs, fingerprint, config.overwrite, log, listing)
    writer = ImageWriter(predictor.spec, location(config.out_dir), fingerprint, truth, ids)
    write_legends(config.out_dir, plan.jobs, predictor.spec)
    notes = _announce(config, predictor, plan, ids, log)
    started = time.time()
    progress = _Progress({job.key: shown(job.source) for job in plan.jobs}, len(todo) + len(plan.unlisted),
                         config.progress, log, fractional=predictor.tiles or any(job.kind != IMAGE for job in todo))
    replayed = done + earlier_jobs(config.out_dir, earlier.images)
    resumed_coco, stopped = _run_inputs(config, predictor, writer, todo, replayed, plan.unlisted, progress)
    if config.engine == "ray" and (swept := sweep_temp_files(config.out_dir)):
        # an actor stopped mid-write (killed, lost with its node) leaves its temporary file; Ray redid its photos
        log(f"removed {len(swept)} temporary file(s) of Ray actors that stopped mid-write")
    processed = [r.record for r in progress.results]
    summary = BatchSummary(
        **what_ran(config, predictor, fingerprint.model_sha256),
        images=by_input(processed + [r for _, r in done] + earlier.images), failures=by_input(progress.failures),
        totals=Totals.of_run(len(plan.jobs) + len(plan.unlisted), len(done), len(progress.failures), progress.seconds,
                             processed),
        ground_truth=truth.report([job.key for job in plan.jobs]) if truth is not None else None,
        shard=ShardSection.of_run(config.shard, plan.all_keys, started, time.time()) if config.shard else None)
    summary = replace(summary, sources=list(dict.fromkeys([*earlier.sources, *summary.sources])))
    if stopped is not None:
        _stop(config, summary, stopped, len(progress.results), len(todo))
    predictions = _write_predictions(config, [e for r in progress.results for e in r.coco] + resumed_coco)
    return BatchResult(summary, _written(lambda: summary.write(config.out_dir)), predictions, notes)


def _ground_truth_and_ids(config: BatchConfig, plan: Plan,
                          predictor: Predictor) -> tuple[GroundTruth | None, GroundTruth | ImageIds | None]:
    """--gt's ground truth (None without it, or without images) and where predictions.json's image ids come from."""
    if config.gt and config.image_ids:
        raise BatchInputError("--image-ids: --gt gives the image ids already; give one of them")
    images = [job for job in plan.all_jobs if job.kind == IMAGE]
    truth = GroundTruth(config.gt, ground_truth_root(images), predictor.spec) if config.gt and images else None
    if truth is not None:
        return truth, truth
    return None, ImageIds(config.image_ids, plan.all_jobs) if config.image_ids and images else None


def _announce(config: BatchConfig, predictor: Predictor, plan: Plan, ids: GroundTruth | ImageIds | None,
              log: Callable[[str], None]) -> tuple[str, ...]:
    """Say how photos run when they are tiled, and what predictions.json's image ids will be; returns the notes
    that the end of the run repeats."""
    if predictor.tiles:
        log(predictor.tiling.describe(predictor.spec))
    if "rle" not in config.save:
        return ()
    keys = [job.key for job in plan.jobs if job.kind == IMAGE]
    if ids is None:
        note = ("predictions.json: image_id is each file's path (no --gt or --image-ids), which pycocotools' "
                "COCO.loadRes does not take; add --image-ids labels.json for COCO's image ids")
    else:
        missing = sum(1 for key in keys if not ids.has(key))
        source = f"--gt {config.gt}" if config.gt else f"--image-ids {config.image_ids}"
        if not missing:
            return ()
        note = f"predictions.json: {missing} of {len(keys)} images are not in {source}: no entries for them"
    log(note)
    return (note,)


def _run_inputs(config: BatchConfig, predictor: Predictor, writer: ImageWriter, todo: list[Job],
                done: list[tuple[Job, ImageRecord]], unlisted: list[Failure],
                progress: _Progress) -> tuple[list[dict], OutputWriteError | None]:
    """Replay the resumed images, then run the other images through the pipeline and the videos one by one; (the
    resumed images' COCO entries, the OutputWriteError that stopped the run or None)."""
    for failure in unlisted:
        progress.done(failure)
    resumed_coco: list[dict] = []
    reduced = reduced_decode(config.save, predictor.tiles)
    budget = images_budget(predictor.spec, config.batch_size, config.memory_budget, image_bytes(config.save))

    def infer(items: list[Prepared]) -> list:
        progress.tiled(items)
        return predictor.infer(items, on_windows=progress.windows)

    try:
        resumed_coco = replay(writer, done, config.workers) if done else []
        images = [job for job in todo if job.kind == IMAGE]
        if config.engine == "ray":
            results = _on_ray(config, predictor, writer, images, reduced, budget)
        else:
            results = run_pipeline(
                images, lambda job, reserve: decode(job, predictor, reserve, config.save, reduced, budget),
                infer, writer, config.batch_size, config.workers, MemoryBudget(budget))
        with contextlib.closing(results):
            for result in results:
                progress.done(result)
        for job in todo:
            if job.kind != IMAGE:
                progress.done(run_video(job, predictor, writer, config.workers, budget,
                                        lambda fraction, key=job.key: progress.partial(key, fraction)))
    except OutputWriteError as e:
        return resumed_coco, e
    finally:
        progress.close()
    return resumed_coco, None


def _on_ray(config: BatchConfig, predictor: Predictor, writer: ImageWriter, images: list[Job],
            reduced: bool, budget: int) -> Iterator[ImageResult | Failure]:
    """The images run by Ray Data actors (segdeploy.infer.ray_batch), each writing its outputs to --out; each
    actor holds `budget` bytes of images in flight, as a local run does."""
    from segdeploy.infer.ray_batch import ActorSettings, run_on_ray

    settings = ActorSettings(str(predictor.path.resolve()), str(writer.out_dir), writer.made_with, config.provider,
                             config.runtime, config.threads, config.batch_size, reduced, config.workers,
                             budget)
    return run_on_ray(images, writer, settings, config.ray_address, config.actors)


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

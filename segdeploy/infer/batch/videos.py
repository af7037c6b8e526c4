"""The video stage of a batch run: a video's (or stream's) frames through the Predictor's overlapped pipeline,
written as mask, overlay and confidence videos at the source's size and frame rate (or, with --save frames, as
each frame's image outputs in a folder), then its record file, last, which a rerun resumes from.

A video is one input: it fails as a whole (cannot be opened, no frame decodes, its outputs cannot be written) and
is redone as a whole when it was interrupted. A stream or camera runs until it ends or Ctrl-C (or SIGTERM), which
ends it like its end: the videos hold what was recorded and the run goes on to its summary.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segdeploy.infer.batch.decode import BYTES_PER_PIXEL, image_bytes
from segdeploy.infer.batch.outputs import (
    VIDEO_SUFFIXES,
    OutputWriteError,
    confidence_palette,
    confidence_to_grey,
    encode_confidence,
    encode_mask,
    encode_rgb,
    frame_paths,
    write_atomic,
)
from segdeploy.infer.batch.plan import STREAM, Job
from segdeploy.infer.batch.resume import ResumeRecord, source_stamp
from segdeploy.infer.batch.summary import ImageRecord
from segdeploy.infer.batch.write import ImageResult, ImageWriter, stage_seconds
from segdeploy.infer.media import redacted
from segdeploy.infer.memory import prediction_bytes
from segdeploy.infer.pipeline import Failure, MemoryBudget, Reserve, run_pipeline
from segdeploy.infer.predictor import OutputError, Prediction, Predictor, Prepared
from segdeploy.infer.video import Frame, VideoError, VideoInfo, VideoReader, VideoWriter
from segtrain.common.contained import contained_folder
from segtrain.common.files import owner_tag

_FRAME_FILE = re.compile(r"^\d{6}\.")


@dataclass
class FrameResult:
    """One frame after the finish stage: the pictures of the chosen videos (RGB), its class pixel counts, windows
    and seconds per stage."""

    index: int
    pictures: dict[str, np.ndarray]
    pixels: list[int]
    tiles: int
    seconds: dict[str, float]


@dataclass
class _Totals:
    """What the frames of one video add up to."""

    frames: int = 0
    tiles: int = 0
    pixels: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.tiles = result.tiles
        counts = np.asarray(result.pixels, np.int64)
        self.pixels = counts if self.pixels is None else self.pixels + counts
        for stage, seconds in result.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class _Outputs:
    """The outputs of one video being written: a VideoWriter per chosen kind, or the frames folder."""

    def __init__(self, job: Job, info: VideoInfo, save: tuple[str, ...]) -> None:
        self.files = job.outputs.files
        self.writers: dict[str, VideoWriter] = {}
        if "frames" in self.files:
            folder = self.files["frames"]
            contained_folder(folder)
            for old in folder.iterdir():  # frames of an earlier, interrupted or replaced run of this video
                if _FRAME_FILE.match(old.name) and old.is_file():
                    old.unlink()
            return
        try:
            for kind in VIDEO_SUFFIXES:
                if kind in self.files:
                    self.writers[kind] = VideoWriter(self.files[kind], info.fps, info.size, lossless=kind != "overlay",
                                                     tag=owner_tag())
        except BaseException:
            self.abort()
            raise

    def add(self, result: FrameResult) -> None:
        for kind, writer in self.writers.items():
            writer.write(result.pictures[kind])

    def finish(self) -> None:
        for writer in self.writers.values():
            writer.finish()

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


def _finisher(writer: ImageWriter, job: Job) -> Callable[[Prediction], FrameResult]:
    """The finish stage of a frame (worker threads): the pictures of its videos, or its files in the frames folder."""
    save, alpha, legend = writer.made_with.save, writer.made_with.alpha, writer.made_with.legend
    classes = writer.spec.num_classes
    folder = job.outputs.files.get("frames")
    colours = confidence_palette(classes)

    def finish(prediction: Prediction) -> FrameResult:
        t0 = time.perf_counter()
        index = prediction.source.index
        pictures: dict[str, np.ndarray] = {}
        if folder is not None:
            files = frame_paths(folder, index, save).files
            if "overlay" in files:
                write_atomic(files["overlay"], encode_rgb(prediction.overlay(alpha, legend), ".jpg"))
            if "color" in files:
                write_atomic(files["color"], encode_rgb(prediction.colorized(), ".png"))
            if "confidence" in files:
                write_atomic(files["confidence"], encode_confidence(prediction.confidence, classes))
            write_atomic(files["mask"], encode_mask(prediction.mask, writer.spec.palette))
        else:
            pictures["mask"] = prediction.colorized()
            if "overlay" in save:
                pictures["overlay"] = prediction.overlay(alpha, legend)
            if "confidence" in save:
                pictures["confidence"] = colours[confidence_to_grey(prediction.confidence)]
        return FrameResult(index, pictures, prediction.class_pixels, prediction.tiles,
                           stage_seconds(prediction.seconds, t0))

    return finish


def run_video(job: Job, predictor: Predictor, writer: ImageWriter, workers: int, memory_budget: int,
              progress: Callable[[float | None], None]) -> ImageResult | Failure:
    """Segment every frame of `job`'s video and write its outputs; a Failure (with the reason) when the video
    cannot be read or its outputs cannot be written. `progress(fraction)` after each frame (None for a stream,
    whose length is unknown); OutputWriteError when --out can take no more."""
    live = job.kind == STREAM
    try:
        stamp = {} if live else source_stamp(Path(job.source))
        reader = VideoReader(job.source, live=live)
    except VideoError as e:
        return Failure(job.key, str(e).removeprefix(f"{redacted(job.source)}: "))
    except OSError as e:
        return Failure(job.key, f"cannot read it ({e.strerror or e})")
    info, totals = reader.info, _Totals()
    frame_bytes = info.size[0] * info.size[1] * (image_bytes(writer.save) + BYTES_PER_PIXEL["photo"]) + \
        prediction_bytes(predictor.spec, predictor.tiling.plan(info.size, predictor.spec))

    def load(item: tuple[Frame, np.ndarray], reserve: Reserve) -> Prepared:
        reserve(frame_bytes)
        return predictor.prepare(item[1], source=item[0])

    outputs = None
    try:
        outputs = _Outputs(job, info, writer.save)
        results = run_pipeline(reader.frames(), load, predictor.infer, _finisher(writer, job), predictor.batch_size,
                               workers, MemoryBudget(memory_budget))
        with contextlib.closing(results), _stops(reader) if live else contextlib.nullcontext():
            for result in results:
                outputs.add(result)
                totals.add(result)
                progress(None if info.frames is None else min(1.0, totals.frames / info.frames))
        if not totals.frames:
            outputs.abort()
            return Failure(job.key, "no frame could be decoded")
        outputs.finish()
        record = _record(job, writer, info, totals)
        write_atomic(job.outputs.record, ResumeRecord(record, writer.made_with.of(stamp)).json().encode("ascii"))
    except OutputWriteError:
        _abort(outputs)
        raise
    except OSError as e:  # this video's own files (a name too long...)
        _abort(outputs)
        return Failure(job.key, f"cannot write its outputs ({e.strerror or e})")
    except OutputError as e:  # NaN scores for a frame: the video has no complete outputs
        _abort(outputs)
        return Failure(job.key, f"frame {totals.frames}: {e}")
    except BaseException:
        _abort(outputs)
        raise
    finally:
        reader.close()
    return ImageResult(record, [])


def _abort(outputs: _Outputs | None) -> None:
    if outputs is not None:
        outputs.abort()


def _record(job: Job, writer: ImageWriter, info: VideoInfo, totals: _Totals) -> ImageRecord:
    pixels = totals.pixels if totals.pixels is not None else np.zeros(writer.spec.num_classes, np.int64)
    total = max(int(pixels.sum()), 1)
    shares = {name: round(int(n) / total, 6) for name, n in zip(writer.spec.classes, pixels, strict=True)}
    seconds = {k: round(v, 4) for k, v in totals.seconds.items()}
    return ImageRecord(job.key, job.outputs.as_dict(writer.out_dir), info.size, totals.tiles, seconds, shares,
                       frames=totals.frames, fps=round(info.fps, 6))


@contextlib.contextmanager
def _stops(reader: VideoReader) -> Iterator[None]:
    """Ctrl-C and SIGTERM end a stream (as its end would) instead of interrupting the run."""
    def stop(signum: int, frame: object) -> None:
        reader.stopped = True

    try:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""The write stage of a batch run: an image's chosen outputs at its original size, written atomically with the
mask last (it carries the record a rerun resumes from), and legend.png in every output folder (write threads)."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segdeploy.infer.batch.decode import StampedJob
from segdeploy.infer.batch.ground_truth import GroundTruth
from segdeploy.infer.batch.image_ids import ImageIds
from segdeploy.infer.batch.outputs import (
    LEGEND_NAME,
    OutputWriteError,
    encode_confidence,
    encode_mask,
    encode_rgb,
    read_mask,
    write_atomic,
)
from segdeploy.infer.batch.plan import IMAGE, Job
from segdeploy.infer.batch.resume import Fingerprint, ResumeRecord
from segdeploy.infer.batch.rle import rle_entries
from segdeploy.infer.batch.sources import BatchInputError
from segdeploy.infer.batch.summary import ImageRecord
from segdeploy.infer.legend import legend_image
from segdeploy.infer.pipeline import Failure, prefetch
from segdeploy.infer.predictor import OutputError, Prediction
from segdeploy.infer.storage import location
from segtrain.common.contained import EscapesOutputError
from segtrain.contract import ModelSpec


@dataclass
class ImageResult:
    """What the write stage made of one image: its summary record and its COCO result entries."""

    record: ImageRecord
    coco: list[dict]


@dataclass(frozen=True)
class ImageWriter:
    """The write stage: the chosen outputs of one prediction, written atomically (mask last)."""

    spec: ModelSpec
    out_dir: Path
    made_with: Fingerprint  # the outputs and the settings that change them
    truth: GroundTruth | None
    ids: GroundTruth | ImageIds | None = None  # predictions.json's image ids (--gt or --image-ids)

    @property
    def save(self) -> tuple[str, ...]:
        return self.made_with.save

    def __call__(self, prediction: Prediction) -> ImageResult | Failure:
        t0 = time.perf_counter()
        key = prediction.source.job.key
        try:
            record = self._write(prediction, prediction.source, t0)
            coco = self.coco_entries(key, prediction.mask, prediction.class_scores) if "rle" in self.save else []
        except OSError as e:  # this image's own files (a name too long...); OutputWriteError stops the run
            return Failure(key, f"cannot write its outputs ({e.strerror or e})")
        except MemoryError:
            return Failure(key, "not enough memory to write its outputs")
        except OutputError as e:  # NaN scores: no mask to write
            return Failure(key, str(e))
        if self.truth is not None:
            self.truth.update(key, prediction.mask)
        return ImageResult(replace(record, seconds=stage_seconds(prediction.seconds, t0)), coco)

    def _write(self, prediction: Prediction, source: StampedJob, t0: float) -> ImageRecord:
        """The chosen outputs, then the mask with the resume record (its seconds as they are then); the record."""
        files = source.job.outputs.files
        if "confidence" in self.save or "rle" in self.save:
            prediction.confidence  # noqa: B018 (mask and confidence in one pass)
        if "overlay" in files:
            overlay = prediction.overlay(self.made_with.alpha, self.made_with.legend)
            write_atomic(files["overlay"], encode_rgb(overlay, ".jpg"))
        if "color" in files:
            write_atomic(files["color"], encode_rgb(prediction.colorized(), ".png"))
        if "confidence" in files:
            write_atomic(files["confidence"], encode_confidence(prediction.confidence, self.spec.num_classes))
        scores = {str(k): round(v, 6) for k, v in prediction.class_scores.items()} if "rle" in self.save else None
        record = ImageRecord(source.job.key, source.job.outputs.as_dict(self.out_dir), prediction.size,
                             prediction.tiles, stage_seconds(prediction.seconds, t0), prediction.class_shares, scores)
        text = ResumeRecord(record, self.made_with.of(source.stamp)).png_text()
        write_atomic(files["mask"], encode_mask(prediction.mask, prediction.spec.palette, text))
        return record

    def coco_entries(self, key: str, mask: np.ndarray, scores: dict[int, float]) -> list[dict]:
        """predictions.json entries of one image, with the image id and in the pixel grid of --gt or --image-ids
        (none for an image that file does not list); without either, the image's key stands for its id."""
        if self.ids is None:
            return rle_entries(mask, scores, self.spec, key)
        if not self.ids.has(key):
            return []
        return rle_entries(self.ids.truth_grid(key, mask), scores, self.spec, self.ids.image_id(key))


def stage_seconds(seconds: dict[str, float], write_start: float) -> dict[str, float]:
    stages = {**seconds, "write": time.perf_counter() - write_start}
    return {**{k: round(v, 4) for k, v in stages.items()}, "total": round(sum(stages.values()), 4)}


def write_legends(out_dir: Path, jobs: list[Job], spec: ModelSpec) -> None:
    """legend.png in OUT and in every folder that receives outputs (rewritten only when it differs).

    Before any image is run: a folder that cannot take it is an OutputWriteError.
    """
    data = encode_rgb(legend_image(spec), ".png")
    for folder in sorted({location(out_dir)} | {job.outputs.folder for job in jobs}):
        path = folder / LEGEND_NAME
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                continue
        try:
            write_atomic(path, data)
        except EscapesOutputError as e:  # a symlinked folder planted in --out: the folder is bad input
            raise BatchInputError(f"--out {out_dir}: {e.strerror}") from e
        except OSError as e:
            raise OutputWriteError(path, e) from e


def replay(writer: ImageWriter, done: list[tuple[Job, ImageRecord]], workers: int) -> list[dict]:
    """The write stage of images an earlier run finished: score their masks against --gt and rebuild their
    COCO entries; returns the entries."""
    truth, rle = writer.truth, "rle" in writer.save
    jobs = [(job, record) for job, record in done
            if job.kind == IMAGE and (rle or (truth is not None and truth.has(job.key)))]

    def replay_one(item: tuple[Job, ImageRecord]) -> list[dict]:
        job, record = item
        mask = read_mask(job.outputs.mask)
        if truth is not None:
            truth.update(job.key, mask)
        scores = {int(k): v for k, v in (record.scores or {}).items()}
        return writer.coco_entries(job.key, mask, scores) if rle else []

    with ThreadPoolExecutor(workers, thread_name_prefix="replay") as pool:
        return [entry for entries in prefetch(pool, replay_one, jobs, 2 * workers) for entry in entries]

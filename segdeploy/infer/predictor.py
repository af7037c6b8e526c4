"""`from segdeploy import Predictor` (README: Python API), torch-free: the model, its spec and the contract's pre-
and post-processing. `prepare` turns an image into model input (stretched, or a tile plan: tiling.py) and
`infer` runs a group of them; `predict_iter` drives both through the pipeline `segdeploy batch` uses. A Prediction
keeps the low-resolution logits and makes every view at the original size on demand.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from segdeploy.infer.legend import draw_legend
from segdeploy.infer.pipeline import Failure, default_workers, run_pipeline
from segdeploy.infer.runtime import open_model
from segdeploy.infer.tiling import DEFAULT_TILE_OVERLAP, TILE_AUTO, TilePlan, Tiling, run_tiles, working_image
from segtrain.common.errors import RunError, ToolError
from segtrain.contract import (
    ModelSpec,
    colorize,
    logits_to_mask,
    logits_to_mask_and_confidence,
    logits_to_probabilities,
    overlay,
    preprocess,
)
from segtrain.data.images import ImageReadError, load_image, to_rgb

ImageLike = str | os.PathLike | Image.Image | np.ndarray
DEFAULT_BATCH_SIZE = 4


class InferenceError(RunError):
    """The model failed on a batch (for example a fixed batch size)."""


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """A path (EXIF orientation applied), a PIL image (likewise) or an HxW / HxWx3 uint8 array -> HxWx3 uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.exists() and not path.is_file():  # a folder, or a FIFO that would block the read forever
            raise ImageReadError(f"{path}: not a regular file")
        return load_image(path)
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image))
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8 and image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ValueError(f"expected an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")
        return np.ascontiguousarray(image)
    raise TypeError(f"expected a path, a PIL image or a numpy array, got {type(image).__name__}")


@dataclass
class Prepared:
    """An image ready for the model: stretched to the input (`tensor`) or tiled (`plan`, `work`).

    `size` is the original (height, width) the outputs are made at; `image` has it too, unless it was
    decoded at a reduced size (then there is no overlay).
    """

    image: np.ndarray
    source: object
    tensor: np.ndarray | None = None
    plan: TilePlan | None = None
    work: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    size: tuple[int, int] | None = None


class Prediction:
    """The model's answer for one image. Every view is at the image's original size (after EXIF
    orientation) and computed on first use.

    `mask`: HxW uint8 class indices; `confidence`: HxW float32 softmax probability of each pixel's
    class; `probabilities()`: CxHxW float32; `colorized()`, `overlay(alpha)`: HxWx3 uint8 RGB;
    `class_shares`: fraction of the pixels per class name; `class_scores`: mean confidence over the
    pixels of each predicted class index. `tiles` is the number of windows of a tiled image (0: the
    image was stretched into one input); `source` is what was given (a path, or None).
    """

    def __init__(self, image: np.ndarray, logits: np.ndarray, spec: ModelSpec, source: object = None,
                 plan: TilePlan | None = None, seconds: dict[str, float] | None = None,
                 size: tuple[int, int] | None = None) -> None:
        self.image, self.logits, self.spec, self.source = image, logits, spec, source
        self.tiles = len(plan.windows) if plan is not None else 0
        self.seconds = seconds or {}
        self.size: tuple[int, int] = tuple(size) if size is not None else image.shape[:2]
        self._span = plan.span if plan is not None else self.size  # the original pixels the logits cover
        self._mask: np.ndarray | None = None
        self._confidence: np.ndarray | None = None
        self._counts: list[int] | None = None

    def __repr__(self) -> str:
        h, w = self.size
        return f"Prediction(source={self.source!r}, size={w}x{h}, tiles={self.tiles})"

    @property
    def mask(self) -> np.ndarray:
        if self._mask is None:
            self._mask = logits_to_mask(self.logits, self._span, keep=self.size)
        return self._mask

    @property
    def confidence(self) -> np.ndarray:
        if self._confidence is None:
            self._mask, self._confidence = logits_to_mask_and_confidence(self.logits, self._span, keep=self.size)
        return self._confidence

    def probabilities(self) -> np.ndarray:
        """CxHxW float32 softmax probabilities (C x 4 bytes per pixel: large for large images)."""
        return logits_to_probabilities(self.logits, self._span, keep=self.size)

    def colorized(self) -> np.ndarray:
        return colorize(self.mask, self.spec.palette)

    def overlay(self, alpha: float = 0.5, legend: bool = False) -> np.ndarray:
        """The colour mask blended over the photo (background keeps the photo); `legend` draws one in a corner."""
        if self.image.shape[:2] != self.size:
            raise ValueError(f"no overlay: the photo was decoded at {self.image.shape[1]}x{self.image.shape[0]}, "
                             f"not at its size {self.size[1]}x{self.size[0]}")
        out = overlay(self.image, self.mask, self.spec.palette, alpha)
        if legend:
            draw_legend(out, self.spec, [k for k, share in enumerate(self._pixel_counts()) if share])
        return out

    @property
    def class_shares(self) -> dict[str, float]:
        total = max(self.mask.size, 1)
        return {name: round(int(n) / total, 6) for name, n in zip(self.spec.classes, self._pixel_counts(),
                                                                   strict=True)}

    @property
    def class_scores(self) -> dict[int, float]:
        """Mean confidence over the pixels of each class present in the mask."""
        counts = self._pixel_counts()
        sums = np.bincount(self.mask.ravel(), weights=self.confidence.ravel(), minlength=self.spec.num_classes)
        return {k: float(sums[k] / n) for k, n in enumerate(counts) if n}

    def _pixel_counts(self) -> list[int]:
        if self._counts is None:
            # One comparison per class: several times faster than np.bincount on 24-megapixel uint8 masks.
            self._counts = [int(np.count_nonzero(self.mask == k)) for k in range(self.spec.num_classes)]
        return self._counts


class Predictor:
    """A self-describing model (from `segdeploy export`) with its pre- and post-processing.

    `provider`: auto (TensorRT or CUDA when present), cpu, cuda, tensorrt; `threads`: intra-op
    threads (None: the runtime's choice); `runtime`: the engine behind segdeploy.infer.runtime.open_model;
    `tile`: "auto" (tile images larger than 2.5x the input's long side), "off" or a window size in
    pixels, with `tile_overlap` (fraction of the window side); `batch_size`: images (or tiles) per
    model call.
    """

    def __init__(self, model: str | os.PathLike, provider: str = "auto", threads: int | None = None,
                 runtime: str = "auto", tile: str | int = TILE_AUTO, tile_overlap: float = DEFAULT_TILE_OVERLAP,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.tiling = Tiling(tile, tile_overlap)
        self.model = open_model(Path(model), runtime=runtime, provider=provider, threads=threads)
        self.spec: ModelSpec = self.model.spec
        self.tiling.check(self.spec)
        self.batch_size = int(batch_size)

    def __repr__(self) -> str:
        h, w = self.spec.input_size
        return (f"Predictor({str(self.path)!r}, {self.spec.arch}/{self.spec.encoder}, {w}x{h}, "
                f"classes={list(self.spec.classes)}, provider={self.providers[0]}, tile={self.tiling.tile!r})")

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def providers(self) -> list[str]:
        return self.model.providers

    def predict(self, image: ImageLike) -> Prediction:
        """Segment one image (see `as_rgb_array` for what it may be)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Iterable[ImageLike]) -> list[Prediction]:
        """Segment several images, `batch_size` per model call; results in the same order."""
        prepared = [self.prepare(as_rgb_array(im), source=_source_of(im)) for im in images]
        out: list[Prediction] = []
        for i in range(0, len(prepared), self.batch_size):
            out += self.infer(prepared[i:i + self.batch_size])
        return out

    def predict_iter(self, images: Iterable[ImageLike], workers: int | None = None) -> Iterator[Prediction | Failure]:
        """Segment a stream of images with decoding and post-processing overlapping inference.

        Yields a Prediction per image in input order (its mask already made), or a Failure
        (`.input`, `.reason`) for a file that cannot be read. Memory stays bounded for any number of images.
        """
        def finish(prediction: Prediction) -> Prediction:
            prediction.mask  # noqa: B018 (made here, on a worker thread)
            return prediction

        return run_pipeline(images, self._load, self.infer, finish, self.batch_size, workers or default_workers())

    def _load(self, image: ImageLike) -> Prepared | Failure:
        try:
            return self.prepare(as_rgb_array(image), source=_source_of(image))
        except ImageReadError as e:
            return Failure(str(image), str(e).removeprefix(f"{image}: "))

    def prepare(self, image: np.ndarray, source: object = None, size: tuple[int, int] | None = None) -> Prepared:
        """Model input for an HxWx3 uint8 RGB image: stretched to the input size, or its tile plan (thread-safe).

        `size`: the original (height, width) when `image` was decoded smaller (stretched only, not tiled).
        """
        t0 = time.perf_counter()
        if size is not None and tuple(size) != image.shape[:2] and self.tiling.tile != "off":
            raise ValueError("a reduced image can only be stretched into the input (tile='off')")
        plan = self.tiling.plan(image.shape[:2], self.spec)
        if plan is None:
            prepared = Prepared(image, source, tensor=preprocess(image, self.spec)[0], size=size)
        else:
            prepared = Prepared(image, source, plan=plan, work=working_image(image, plan), size=size)
        prepared.seconds["preprocess"] = time.perf_counter() - t0
        return prepared

    def infer(self, items: list[Prepared]) -> list[Prediction]:
        """Run prepared images: the stretched ones in one model call, each tiled one window batch by window batch."""
        logits: dict[int, np.ndarray] = {}
        stretched = [i for i, p in enumerate(items) if p.plan is None]
        if stretched:
            t0 = time.perf_counter()
            out = self._run(np.stack([items[i].tensor for i in stretched]))
            share = (time.perf_counter() - t0) / len(stretched)
            for i, lg in zip(stretched, out, strict=True):
                logits[i], items[i].seconds["infer"], items[i].tensor = lg, share, None
        for i, p in enumerate(items):
            if p.plan is not None:
                t0 = time.perf_counter()
                logits[i] = run_tiles(self._run, p.work, p.plan, self.spec, self.batch_size)
                p.seconds["infer"], p.work = time.perf_counter() - t0, None
        return [Prediction(p.image, logits[i], self.spec, p.source, p.plan, p.seconds, p.size)
                for i, p in enumerate(items)]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.model.run(batch)
        except ToolError:  # the model's own check (check_logits): an unusable model, an input error
            raise
        except Exception as e:  # the runtimes raise their own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InferenceError(f"{self.model.path}: inference failed on a batch of {len(batch)} ({first}); "
                                 "if the model has a fixed batch size, use a batch size of 1 (--batch-size 1)") from e


def _source_of(image: ImageLike) -> object:
    return image if isinstance(image, (str, os.PathLike)) else None

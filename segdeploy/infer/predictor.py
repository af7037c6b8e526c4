"""`from segdeploy import Predictor` (README: Python API), torch-free: the model, its spec and the contract's pre-
and post-processing. Its methods take any source (items.py: paths, folders, globs, videos, arrays, PIL images,
bytes, lists). `prepare` turns an image into model input (stretched, or a tile plan: tiling.py) and `infer` runs a
group of them; `predict_iter` drives both through the pipeline `segdeploy batch` uses. A Prediction keeps the
low-resolution logits and makes every view at the original size on demand.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segdeploy.infer.items import (
    CHANNELS,
    Item,
    check_type,
    describe,
    expand,
    name_of,
    one_image,
    source_of,
    to_rgb_array,
)
from segdeploy.infer.legend import draw_legend
from segdeploy.infer.pipeline import Failure, default_workers, run_pipeline
from segdeploy.infer.runtime_choice import open_chosen
from segdeploy.infer.tiling import DEFAULT_TILE_OVERLAP, TILE_AUTO, TilePlan, Tiling, run_tiles, working_image
from segtrain.common.errors import RunError, ToolError, whole_message
from segtrain.common.settings import ALPHA, RUN_BATCH_SIZE, check_argument
from segtrain.contract import (
    ModelSpec,
    colorize,
    logits_to_mask,
    logits_to_mask_and_confidence,
    logits_to_probabilities,
    overlay,
    preprocess,
)
from segtrain.data.images import ImageReadError
from segtrain.evaluation import with_tta

DEFAULT_BATCH_SIZE = 4


class InferenceError(RunError):
    """The model failed on a batch (for example a fixed batch size)."""


class OutputError(ValueError):
    """The model's output for one image cannot be a prediction (NaN or infinite scores): that image fails."""


NON_FINITE = "the model gave NaN or infinite scores for it (no mask)"


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
    name: str = ""  # how a Failure names it (a stream's item)


class Prediction:
    """The model's answer for one image. Every view is at the image's original size (after EXIF
    orientation) and computed on first use.

    `mask`: HxW uint8 class indices; `confidence`: HxW float32 softmax probability of each pixel's
    class; `probabilities()`: CxHxW float32; `colorized()`, `overlay(alpha)`: HxWx3 uint8 RGB;
    `class_shares`: fraction of the pixels per class name; `class_scores`: mean confidence over the
    pixels of each predicted class index. `tiles` is the number of windows of a tiled image (0: the
    image was stretched into one input); `source` is what was given: a path, a video frame's
    segdeploy.infer.video.Frame (video, index, seconds), or None for an image given in memory.
    """

    def __init__(self, image: np.ndarray, logits: np.ndarray, spec: ModelSpec, source: object = None,
                 plan: TilePlan | None = None, seconds: dict[str, float] | None = None,
                 size: tuple[int, int] | None = None, name: str = "") -> None:
        self.image, self.logits, self.spec, self.source, self.name = image, logits, spec, source, name
        self.tiles = len(plan.windows) if plan is not None else 0
        self.seconds = seconds or {}
        self.size: tuple[int, int] = tuple(size) if size is not None else image.shape[:2]
        self._span = plan.span if plan is not None else self.size  # the original pixels the logits cover
        self.problem = None if np.isfinite(logits).all() else NON_FINITE  # why it has no views (OutputError)
        self._mask: np.ndarray | None = None
        self._confidence: np.ndarray | None = None
        self._counts: list[int] | None = None

    def __repr__(self) -> str:
        h, w = self.size
        return f"Prediction(source={self.source!r}, size={w}x{h}, tiles={self.tiles})"

    def _usable(self) -> None:
        if self.problem is not None:
            raise OutputError(self.problem)

    @property
    def mask(self) -> np.ndarray:
        self._usable()
        if self._mask is None:
            self._mask = logits_to_mask(self.logits, self._span, keep=self.size)
        return self._mask

    @property
    def confidence(self) -> np.ndarray:
        self._usable()
        if self._confidence is None:
            self._mask, self._confidence = logits_to_mask_and_confidence(self.logits, self._span, keep=self.size)
        return self._confidence

    def probabilities(self) -> np.ndarray:
        """CxHxW float32 softmax probabilities (C x 4 bytes per pixel: large for large images)."""
        self._usable()
        return logits_to_probabilities(self.logits, self._span, keep=self.size)

    def colorized(self) -> np.ndarray:
        return colorize(self.mask, self.spec.palette)

    def overlay(self, alpha: float = 0.5, legend: bool = False) -> np.ndarray:
        """The colour mask blended over the photo (background keeps the photo); `legend` draws one in a corner."""
        if self.image.shape[:2] != self.size:
            raise ValueError(f"no overlay: the photo was decoded at {self.image.shape[1]}x{self.image.shape[0]}, "
                             f"not at its size {self.size[1]}x{self.size[0]}")
        out = overlay(self.image, self.mask, self.spec.palette, check_argument("alpha", alpha, float, ALPHA))
        if legend:
            draw_legend(out, self.spec, [k for k, share in enumerate(self.class_pixels) if share])
        return out

    @property
    def class_shares(self) -> dict[str, float]:
        total = max(self.mask.size, 1)
        return {name: round(int(n) / total, 6) for name, n in zip(self.spec.classes, self.class_pixels,
                                                                   strict=True)}

    @property
    def class_scores(self) -> dict[int, float]:
        """Mean confidence over the pixels of each class present in the mask."""
        counts = self.class_pixels
        sums = np.bincount(self.mask.ravel(), weights=self.confidence.ravel(), minlength=self.spec.num_classes)
        return {k: float(sums[k] / n) for k, n in enumerate(counts) if n}

    @property
    def class_pixels(self) -> list[int]:
        """The number of mask pixels of each class index."""
        if self._counts is None:
            # One comparison per class: several times faster than np.bincount on 24-megapixel uint8 masks.
            self._counts = [int(np.count_nonzero(self.mask == k)) for k in range(self.spec.num_classes)]
        return self._counts


class Predictor:
    """A self-describing model (from `segdeploy export`) with its pre- and post-processing.

    `provider`: auto (TensorRT or CUDA when present), cpu, cuda, tensorrt; `threads`: intra-op
    threads (None: the runtime's choice); `runtime`: auto, onnxruntime or openvino; auto on the CPU with both
    installed measures which is faster for this model, batch size and threads, once per machine
    (segdeploy.infer.runtime_choice; `expected_images`, the job's size, bounds that measurement's time, and
    `note` receives its notes on the cache, default the "segdeploy" logger); `self.model.runtime_reason` says
    which engine and why;
    `tile`: "auto" (as the model was trained: stretched into one input, or windows for a model trained on
    crops), "off" (stretched) or a window size in photo pixels, with `tile_overlap` (fraction of the window
    side); `batch_size`: images (or windows) per model call; `channels`: the order of arrays' channels, "bgr"
    (OpenCV's, the default) or "rgb"; `tta`: "off" or "flip" (segtrain.evaluation.with_tta: twice the model
    runs, the logits of each photo averaged with its mirror image's); `spinning`: whether onnxruntime's threads
    spin-wait for work, the fastest for one call at a time; False (what `segdeploy batch` uses) leaves the cores
    to the decode and write threads of `predict_iter` over many images (segdeploy.infer.runtime.SPINNING_NOTE).
    """

    def __init__(self, model: str | os.PathLike, provider: str = "auto", threads: int | None = None,
                 runtime: str = "auto", tile: str | int = TILE_AUTO, tile_overlap: float = DEFAULT_TILE_OVERLAP,
                 batch_size: int = DEFAULT_BATCH_SIZE, channels: str = CHANNELS[0], tta: str = "off",
                 expected_images: int | None = None, note: Callable[[str], None] | None = None,
                 spinning: bool = True) -> None:
        batch_size = check_argument("batch_size", batch_size, int, RUN_BATCH_SIZE)
        spinning = check_argument("spinning", spinning, bool, lambda v: None)  # "no" is not taken for True
        if channels not in CHANNELS:
            raise ValueError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
        self.tiling = Tiling(tile, tile_overlap)
        self.model = open_chosen(Path(model), runtime=runtime, provider=provider, threads=threads,
                                 batch_size=int(batch_size), expected_images=expected_images, note=note,
                                 spinning=spinning)
        self.spec: ModelSpec = self.model.spec
        self.tiling.check(self.spec)
        self.batch_size = int(batch_size)
        self.channels = channels
        self.tta = tta
        self._logits = with_tta(self.model.run, tta)

    def __repr__(self) -> str:
        h, w = self.spec.input_size
        return (f"Predictor({str(self.path)!r}, {self.spec.arch}/{self.spec.encoder}, {w}x{h}, "
                f"classes={list(self.spec.classes)}, provider={self.providers[0]}, tile={self.tiling.tile!r}, "
                f"channels={self.channels!r})")

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def providers(self) -> list[str]:
        return self.model.providers

    @property
    def tiles(self) -> bool:
        """Whether photos run as windows (tiling.Tiling.tiles) rather than stretched into one input."""
        return self.tiling.tiles(self.spec)

    def predict(self, image: object) -> Prediction:
        """Segment one image: a path, an array, a PIL image or encoded bytes (items.py). A source that names
        several images (a folder, glob, video, list) is a ValueError: predict_batch or predict_iter take those."""
        check_type(image)
        if not one_image(image):
            raise ValueError(f"predict() segments one image, but {describe(image)}: use predict_batch() for a "
                             "list of results or predict_iter() for a stream")
        return self.predict_batch(image)[0]

    def predict_batch(self, source: object) -> list[Prediction]:
        """Segment every image `source` names (any source: items.py), `batch_size` per model call; results in
        order. Raises ImageReadError for an image that cannot be read."""
        out: list[Prediction] = []
        group: list[Prepared] = []
        for item in expand(source):
            if isinstance(item, Failure):
                raise ImageReadError(f"{item.input}: {item.reason}")
            group.append(self.prepare(to_rgb_array(item, self.channels), source=source_of(item)))
            if len(group) == self.batch_size:
                out += self.infer(group)
                group = []
        return out + (self.infer(group) if group else [])

    def predict_iter(self, source: object, workers: int | None = None) -> Iterator[Prediction | Failure]:
        """Segment a stream of images (any source: items.py; a video's frames one by one) with decoding and
        post-processing overlapping inference.

        Yields a Prediction per image in input order (its mask already made), or, in its place, a Failure
        (`.input`, `.reason`) for an image that cannot be read or used (a file that is not an image, an empty or
        wrongly typed array, NaN scores from the model); the stream goes on. Memory stays bounded for any number
        of images.
        """
        def finish(prediction: Prediction) -> Prediction | Failure:
            try:
                prediction.mask  # noqa: B018 (made here, on a worker thread)
            except OutputError as e:
                return Failure(prediction.name, str(e))
            return prediction

        return run_pipeline(expand(source), self._load, self.infer, finish, self.batch_size,
                            workers or default_workers())

    def _load(self, item: Item) -> Prepared | Failure:
        if isinstance(item, Failure):
            return item
        try:
            prepared = self.prepare(to_rgb_array(item, self.channels), source=source_of(item))
        except (ImageReadError, ValueError, TypeError) as e:  # a file that cannot be read, an unusable array
            return Failure(name_of(item), str(e).removeprefix(f"{name_of(item)}: "))
        prepared.name = name_of(item)
        return prepared

    def prepare(self, image: np.ndarray, source: object = None, size: tuple[int, int] | None = None) -> Prepared:
        """Model input for an HxWx3 uint8 RGB image: stretched to the input size, or its tile plan (thread-safe).

        `size`: the original (height, width) when `image` was decoded smaller (stretched only, not tiled).
        """
        t0 = time.perf_counter()
        if size is not None and tuple(size) != image.shape[:2] and self.tiles:
            raise ValueError("a reduced image can only be stretched into the input (no tiling)")
        plan = self.tiling.plan(image.shape[:2], self.spec)
        if plan is None:
            prepared = Prepared(image, source, tensor=preprocess(image, self.spec)[0], size=size)
        else:
            prepared = Prepared(image, source, plan=plan, work=working_image(image, plan), size=size)
        prepared.seconds["preprocess"] = time.perf_counter() - t0
        return prepared

    def infer(self, items: list[Prepared],
              on_windows: Callable[[Prepared, int], None] | None = None) -> list[Prediction]:
        """Run prepared images: the stretched ones in one model call, each tiled one window batch by window batch
        (`on_windows(prepared, n)` after each model call of its windows: a progress bar)."""
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
                done = None if on_windows is None else (lambda n, p=p: on_windows(p, n))
                logits[i] = run_tiles(self._run, p.work, p.plan, self.spec, self.batch_size, done)
                p.seconds["infer"], p.work = time.perf_counter() - t0, None
        return [Prediction(p.image, logits[i], self.spec, p.source, p.plan, p.seconds, p.size, p.name)
                for i, p in enumerate(items)]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._logits(batch)
        except ToolError:  # the model's own check (check_logits): an unusable model, an input error
            raise
        except Exception as e:  # the runtimes raise their own exception types
            raise InferenceError(f"{self.model.path}: inference failed on a batch of {len(batch)} "
                                 f"({whole_message(e)}); "
                                 "if the model has a fixed batch size, use a batch size of 1 (--batch-size 1)") from e

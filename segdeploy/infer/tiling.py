"""Tiled inference (torch-free): MMSegmentation's "slide" mode on the contract's pre-processing (README: --tile).

A photo is run as the model was trained (`--tile auto`, the default): a model whose spec records training on whole
photos stretched to its input (every segtrain model) sees each photo stretched into one input; a model trained on
crops at the photo's own scale sees windows of its input at that scale. Tiling a stretch-trained model is an
explicit choice (`--tile N`): it keeps fine objects of a 6000x4000 photo that stretching would shrink away, at the
cost of one model call per window.

A tiled image is resized by ``input size / tile size`` (1 for ``--tile auto``), covered by evenly spaced windows
of the input size that overlap by `overlap` (edge windows padded with the mean colour), run `batch_size` windows
at a time, and their logits averaged with tent weights (highest in a window's centre, where the model sees the
most context) onto a canvas of cells of 1, 2, 4... input pixels, the finest within CANVAS_BUDGET_BYTES. The
blended canvas stands in for the model's output: the contract resizes it and takes the arg-max. Memory is the
window batch plus the canvas, never a stack of every tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from segtrain.common.errors import InputError
from segtrain.contract import ModelSpec, normalize, resize_image

TILE_AUTO, TILE_OFF = "auto", "off"
# Whether --tile auto tiles a model, by the resize rule of its spec (segtrain.contract.RESIZE_RULES): how it was
# trained to see photos.
AUTO_TILES = {"stretch": False, "crop": True}
DEFAULT_TILE_OVERLAP = 0.25  # fraction of the window side shared by neighbouring windows
MAX_TILE_OVERLAP = 0.75
TILE_SIZE_RANGE = (16, 65536)  # --tile N, in photo pixels
CANVAS_BUDGET_BYTES = 256 << 20


class TileError(InputError):
    """A bad --tile or --tile-overlap value (or one the model cannot use)."""


def parse_tile(value: str | int) -> str | int:
    """--tile: "auto", "off" or a window size in pixels -> "auto", "off" or the int; TileError otherwise."""
    text = str(value).strip().lower()
    if text in (TILE_AUTO, TILE_OFF):
        return text
    lo, hi = TILE_SIZE_RANGE
    try:
        size = int(text)
    except ValueError:
        raise TileError(f"--tile {value!r}: expected auto, off or a tile size in pixels ({lo} to {hi})") from None
    if not lo <= size <= hi:
        raise TileError(f"--tile {value!r}: a tile size must be {lo} to {hi} pixels")
    return size


def check_overlap(overlap: float) -> float:
    """--tile-overlap: a finite fraction of the window side in [0, MAX_TILE_OVERLAP]; TileError otherwise."""
    try:
        value = float(overlap)
    except (TypeError, ValueError):
        raise TileError(f"--tile-overlap {overlap!r}: expected a fraction of the tile side") from None
    if not (math.isfinite(value) and 0.0 <= value <= MAX_TILE_OVERLAP):
        raise TileError(f"--tile-overlap {overlap!r}: must be a fraction from 0 to {MAX_TILE_OVERLAP} of the tile side")
    return value


@dataclass(frozen=True)
class TilePlan:
    """Where the windows of one image go. Sizes are (height, width); positions are in canvas cells."""

    image_size: tuple[int, int]
    work_size: tuple[int, int]  # the image resized by the tile scale
    window: tuple[int, int]  # the model's input size
    cell: int  # model-input pixels per canvas cell (per side)
    grid: tuple[int, int]  # canvas cells
    tops: tuple[int, ...]
    lefts: tuple[int, ...]

    @property
    def windows(self) -> list[tuple[int, int]]:
        return [(top, left) for top in self.tops for left in self.lefts]

    @property
    def span(self) -> tuple[int, int]:
        """Original-image pixels the canvas covers: the image, plus part of a cell at the bottom and right."""
        return tuple(round(g * self.cell * i / w) for g, i, w in zip(self.grid, self.image_size, self.work_size,
                                                                      strict=True))


@dataclass(frozen=True)
class Tiling:
    """How large images are treated: `tile` auto, off or a window size in pixels; `overlap` of the windows."""

    tile: str | int = TILE_AUTO
    overlap: float = DEFAULT_TILE_OVERLAP

    def __post_init__(self) -> None:
        object.__setattr__(self, "tile", parse_tile(self.tile))
        object.__setattr__(self, "overlap", check_overlap(self.overlap))

    def check(self, spec: ModelSpec) -> None:
        """TileError when a fixed window is smaller than the model's input (tiles are never enlarged)."""
        if isinstance(self.tile, int) and self.tile < max(spec.input_size):
            raise TileError(f"--tile {self.tile}: smaller than the model's input size "
                            f"({spec.input_size[1]}x{spec.input_size[0]}); tiles are never enlarged")

    def scale(self, spec: ModelSpec) -> float | None:
        """How much photos are resized before they are cut into windows of the model's input (1: at their own
        scale), or None when each photo is stretched into one input."""
        if self.tile == TILE_OFF or (self.tile == TILE_AUTO and not AUTO_TILES[spec.resize]):
            return None
        return 1.0 if self.tile == TILE_AUTO else max(spec.input_size) / self.tile

    def tiles(self, spec: ModelSpec) -> bool:
        """Whether photos are run as windows with this model (rather than stretched into one input)."""
        return self.scale(spec) is not None

    def plan(self, image_size: tuple[int, int], spec: ModelSpec) -> TilePlan | None:
        """The windows for an image of `image_size`, or None when it is stretched into one input."""
        scale = self.scale(spec)
        return None if scale is None else make_plan(image_size, spec, scale, self.overlap)

    def describe(self, spec: ModelSpec) -> str:
        """How photos are run with this model, in one line for the console."""
        h, w = spec.input_size
        if not self.tiles(spec):
            why = "--tile off" if self.tile == TILE_OFF else f"as trained: its resize rule is {spec.resize!r}"
            return f"each photo is stretched into one {w}x{h} input ({why})"
        overlap = f"overlapping by {self.overlap:.0%}"
        if self.tile == TILE_AUTO:
            return (f"each photo runs as {w}x{h} windows at its own scale, {overlap} (--tile auto: the model was "
                    f"trained on crops, resize rule {spec.resize!r}); one model input per window")
        return (f"each photo runs as {self.tile}x{self.tile}-pixel windows, each resized to the {w}x{h} input, "
                f"{overlap} (--tile {self.tile}); one model input per window")


def make_plan(image_size: tuple[int, int], spec: ModelSpec, scale: float, overlap: float) -> TilePlan:
    """Windows of the input size over the image resized by `scale`, on the finest canvas within budget."""
    window = tuple(spec.input_size)
    work = tuple(max(1, round(n * scale)) for n in image_size)
    cells = [c for c in (1 << i for i in range(16)) if all(w % c == 0 for w in window)]  # divide the window
    cell = next((c for c in cells if _canvas_bytes(work, c, spec.num_classes) <= CANVAS_BUDGET_BYTES), cells[-1])
    grid = tuple(math.ceil(n / cell) for n in work)
    tops, lefts = (window_positions(g, w // cell, overlap) for g, w in zip(grid, window, strict=True))
    return TilePlan(tuple(image_size), work, window, cell, grid, tops, lefts)


def _canvas_bytes(work: tuple[int, int], cell: int, classes: int) -> int:
    return 4 * (classes + 1) * math.ceil(work[0] / cell) * math.ceil(work[1] / cell)


def window_positions(length: int, window: int, overlap: float) -> tuple[int, ...]:
    """Start positions of windows of `window` covering `length` with at least `overlap` shared, evenly spaced."""
    if length <= window:
        return (0,)
    stride = max(1, math.floor(window * (1.0 - overlap)))
    n = math.ceil((length - window) / stride) + 1
    return tuple(round(i * (length - window) / (n - 1)) for i in range(n))


def tent(cells: int) -> np.ndarray:
    """1-D blending weights over a window of `cells`: rising linearly from its edges to its centre."""
    i = np.arange(cells, dtype=np.float32)
    return np.minimum(i + 0.5, cells - i - 0.5) / (cells / 2.0)


def window_tensor(work: np.ndarray, top: int, left: int, plan: TilePlan, spec: ModelSpec) -> np.ndarray:
    """The normalised 3xHxW input of the window at (top, left) cells; past the image's edge: mean colour."""
    y0, x0 = top * plan.cell, left * plan.cell
    crop = work[y0:y0 + plan.window[0], x0:x0 + plan.window[1]]
    out = np.zeros((3, *plan.window), np.float32)
    out[:, :crop.shape[0], :crop.shape[1]] = normalize(crop, spec)
    return out


class TileCanvas:
    """The weighted sum of the windows' logits over the canvas, and the sum of their weights."""

    def __init__(self, plan: TilePlan, classes: int) -> None:
        self.plan = plan
        self.sum = np.zeros((classes, *plan.grid), np.float32)
        self.weight = np.zeros(plan.grid, np.float32)
        cells = tuple(w // plan.cell for w in plan.window)
        self.tent = np.outer(tent(cells[0]), tent(cells[1]))

    def add(self, top: int, left: int, logits: np.ndarray) -> None:
        """Blend one window's CxHxW logits (at the input size) in at (top, left) cells."""
        cells = self.tent.shape
        if logits.shape[1:] == self.plan.window:
            f = self.plan.cell
            pooled = logits.reshape(logits.shape[0], cells[0], f, cells[1], f).mean(axis=(2, 4))
        else:  # a model whose output is not at its input size
            pooled = np.stack([cv2.resize(p, cells[::-1], interpolation=cv2.INTER_AREA) for p in logits])
        h, w = min(cells[0], self.plan.grid[0] - top), min(cells[1], self.plan.grid[1] - left)
        weight = self.tent[:h, :w]
        self.sum[:, top:top + h, left:left + w] += pooled[:, :h, :w] * weight
        self.weight[top:top + h, left:left + w] += weight

    def logits(self) -> np.ndarray:
        return self.sum / self.weight


def working_image(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    """The image at the tile scale (the contract's resize rule; the image itself when the scale is 1)."""
    return resize_image(image, plan.work_size)


def run_tiles(run: Callable[[np.ndarray], np.ndarray], work: np.ndarray, plan: TilePlan, spec: ModelSpec,
              batch_size: int, on_windows: Callable[[int], None] | None = None) -> np.ndarray:
    """The blended CxHxW canvas logits of the working image `work` (covering `plan.span` original pixels).

    `on_windows(n)` is called after each model call with the number of windows it ran (a progress bar).
    """
    canvas = TileCanvas(plan, spec.num_classes)
    windows = plan.windows
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        logits = run(np.stack([window_tensor(work, top, left, plan, spec) for top, left in chunk]))
        for (top, left), out in zip(chunk, logits, strict=True):
            canvas.add(top, left, out)
        if on_windows is not None:
            on_windows(len(chunk))
    return canvas.logits()

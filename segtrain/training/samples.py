"""samples.png: a few fixed validation images as photo | ground truth | prediction, with a class legend.

Torch-free: the prediction comes from a `LogitsFn` (NCHW float32 -> logits, segtrain.evaluation) through the contract's
pre- and post-processing, so a sample's prediction is exactly what `segtrain evaluate` scores
(each image at its original size). The picture is composed in NumPy/Pillow on a fixed grid
(`cell_box`), so it looks the same on every machine and a test can find each cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from segtrain.contract import ModelSpec, colorize, logits_to_mask, preprocess
from segtrain.data.coco import CocoSplit
from segtrain.data.images import ImageReadError

SAMPLE_IMAGES = 4
CELL_W, CELL_H, MARGIN, HEADER, SWATCH = 200, 150, 8, 26, 14
COLUMNS = ("photo", "ground truth", "prediction")
BACKDROP = (236, 236, 236)
INK = (20, 20, 20)
IGNORE_COLOUR = (255, 255, 255)  # colorize() paints ignore (255) white


@dataclass
class Samples:
    """The fixed validation images of a run: file names, photos and ground-truth masks (original sizes)."""

    names: list[str]
    photos: list[np.ndarray]
    truths: list[np.ndarray]


def pick_samples(split: CocoSplit, count: int = SAMPLE_IMAGES) -> list[int]:
    """`count` image indices spread over the split, images with a target annotation first."""
    annotated = [i for i, r in enumerate(split.records) if r.anns]
    if len(annotated) >= count:
        picks = np.unique(np.linspace(0, len(annotated) - 1, num=count).round().astype(int))
        return [annotated[i] for i in picks]
    others = [i for i in range(len(split)) if i not in set(annotated)]
    return (annotated + others)[:count]


def load_samples(split: CocoSplit, count: int = SAMPLE_IMAGES) -> Samples:
    """The picked images and masks; an image that cannot be decoded is left out."""
    samples = Samples([], [], [])
    for i in pick_samples(split, count):
        try:
            photo = split.load_image(i)
        except ImageReadError:
            continue
        samples.names.append(split.records[i].file_name)
        samples.photos.append(photo)
        samples.truths.append(split.load_mask(i))
    return samples


def predict_masks(predict, photos: Sequence[np.ndarray], spec: ModelSpec) -> list[np.ndarray]:
    """Class masks at each photo's size: preprocess, `predict`, logits resized back, arg-max."""
    return [logits_to_mask(predict(preprocess(photo, spec))[0], photo.shape[:2]) for photo in photos]


def canvas_size(rows: int, classes: int) -> tuple[int, int]:
    """(height, width) of samples.png for `rows` images and `classes` legend entries."""
    width = len(COLUMNS) * (CELL_W + MARGIN) + MARGIN
    return HEADER + rows * (CELL_H + MARGIN) + _legend_height(classes, width), width


def cell_box(row: int, col: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a cell: row = sample, col = 0 photo, 1 ground truth, 2 prediction."""
    x0 = MARGIN + col * (CELL_W + MARGIN)
    y0 = HEADER + row * (CELL_H + MARGIN)
    return x0, y0, x0 + CELL_W, y0 + CELL_H


def placed_box(shape: tuple[int, int], row: int, col: int) -> tuple[int, int, int, int]:
    """Where an image of (height, width) `shape` lands in its cell: scaled to fit, aspect kept, centred."""
    x0, y0, x1, y1 = cell_box(row, col)
    h, w = shape
    scale = min(CELL_W / w, CELL_H / h)
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    left, top = x0 + (CELL_W - pw) // 2, y0 + (CELL_H - ph) // 2
    return left, top, left + pw, top + ph


def _legend_entries(spec: ModelSpec) -> list[tuple[str, tuple[int, int, int]]]:
    return [*zip(spec.classes, spec.palette, strict=False), ("ignore", IGNORE_COLOUR)]


def _legend_height(classes: int, width: int) -> int:
    per_row = max(1, (width - MARGIN) // 130)
    return MARGIN + -(-(classes + 1) // per_row) * (SWATCH + 8) + MARGIN


def compose(samples: Samples, predictions: Sequence[np.ndarray], spec: ModelSpec, title: str) -> np.ndarray:
    """The samples picture as HxWx3 uint8 RGB (see module docstring)."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = canvas_size(len(samples.photos), spec.num_classes)
    canvas = np.full((h, w, 3), 255, np.uint8)
    for row, (photo, truth, pred) in enumerate(zip(samples.photos, samples.truths, predictions, strict=True)):
        for col, picture in enumerate((photo, colorize(truth, spec.palette), colorize(pred, spec.palette))):
            x0, y0, x1, y1 = cell_box(row, col)
            canvas[y0:y1, x0:x1] = BACKDROP
            left, top, right, bottom = placed_box(picture.shape[:2], row, col)
            interp = cv2.INTER_AREA if col == 0 else cv2.INTER_NEAREST
            canvas[top:bottom, left:right] = cv2.resize(picture, (right - left, bottom - top), interpolation=interp)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    for col, name in enumerate(COLUMNS):
        label = f"{name} ({title})" if col == 2 and title else name
        draw.text((cell_box(0, col)[0], 6), label, fill=INK, font=font)
    x, y = MARGIN, HEADER + len(samples.photos) * (CELL_H + MARGIN) + MARGIN
    for name, colour in _legend_entries(spec):
        if x + 130 > w:
            x, y = MARGIN, y + SWATCH + 8
        draw.rectangle((x, y, x + SWATCH, y + SWATCH), fill=tuple(colour), outline=(120, 120, 120))
        draw.text((x + SWATCH + 5, y), name, fill=INK, font=font)
        x += 130
    return np.asarray(image)

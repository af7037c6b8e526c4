"""Which colour is which class: `legend.png` beside the outputs, and a compact legend drawn on overlays (torch-free).

legend.png has a row per class of the model: a swatch in the model's palette, the class index (the
pixel value in mask.png), the class name and its COCO id. The overlay legend lists only the classes
present in that image (background has no colour there), in the top-left corner on a darkened box,
sized to the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segtrain.contract import ModelSpec

LEGEND_ROW = 30  # pixels per class row in legend.png
LEGEND_SWATCH = 22
LEGEND_MARGIN = 10
LEGEND_TEXT = 16
TEXT_COLOUR, LEGEND_BACKGROUND, SWATCH_BORDER = (20, 20, 20), (255, 255, 255), (128, 128, 128)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def legend_lines(spec: ModelSpec) -> list[str]:
    """The text of each class row: index (mask value), name, COCO id."""
    return [f"{k}  {name}  (COCO id {cid})" for k, (name, cid) in enumerate(zip(spec.classes, spec.coco_ids,
                                                                                 strict=True))]


def swatch_box(row: int) -> tuple[slice, slice]:
    """(rows, columns) of class `row`'s swatch in legend.png, inside its border."""
    y0 = LEGEND_MARGIN + row * LEGEND_ROW + (LEGEND_ROW - LEGEND_SWATCH) // 2
    return slice(y0, y0 + LEGEND_SWATCH), slice(LEGEND_MARGIN, LEGEND_MARGIN + LEGEND_SWATCH)


def legend_image(spec: ModelSpec) -> np.ndarray:
    """legend.png as an RGB array: a row per class, swatch in the palette, index, name and COCO id."""
    lines = legend_lines(spec)
    font = _font(LEGEND_TEXT)
    text_x = 2 * LEGEND_MARGIN + LEGEND_SWATCH
    width = text_x + max(int(font.getlength(line)) for line in lines) + LEGEND_MARGIN
    height = 2 * LEGEND_MARGIN + LEGEND_ROW * len(lines)
    im = Image.new("RGB", (width, height), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(im)
    for k, line in enumerate(lines):
        rows, cols = swatch_box(k)
        draw.rectangle((cols.start - 1, rows.start - 1, cols.stop, rows.stop), outline=SWATCH_BORDER)
        draw.rectangle((cols.start, rows.start, cols.stop - 1, rows.stop - 1), fill=tuple(spec.palette[k]))
        draw.text((text_x, LEGEND_MARGIN + k * LEGEND_ROW + LEGEND_ROW // 2), line, fill=TEXT_COLOUR, font=font,
                  anchor="lm")
    return np.asarray(im)


def draw_legend(image: np.ndarray, spec: ModelSpec, classes: Sequence[int]) -> np.ndarray:
    """Draw a compact legend of `classes` (swatch + name) onto the top-left corner of `image`, in place.

    Sized to the image (text about 1/30 of its shorter side, 10 to 96 pixels) and clipped to it.
    """
    classes = [k for k in classes if 0 < k < spec.num_classes]
    if not classes or min(image.shape[:2]) < 8:
        return image
    size = int(np.clip(min(image.shape[:2]) / 30, 10, 96))
    font, pad, row = _font(size), max(2, size // 3), size + max(2, size // 3)
    names = [spec.classes[k] for k in classes]
    width = min(image.shape[1], 3 * pad + size + max(int(font.getlength(n)) for n in names))
    height = min(image.shape[0], 2 * pad + row * len(classes) - (row - size))
    region = image[:height, :width]
    region[:] = region // 3  # darken the box so the text reads on any photo
    im = Image.fromarray(region)
    draw = ImageDraw.Draw(im)
    for i, (k, name) in enumerate(zip(classes, names, strict=True)):
        y = pad + i * row
        draw.rectangle((pad, y, pad + size - 1, y + size - 1), fill=tuple(spec.palette[k]), outline=(255, 255, 255))
        draw.text((2 * pad + size, y + size // 2), name, fill=(255, 255, 255), font=font, anchor="lm")
    region[:] = np.asarray(im)
    return image

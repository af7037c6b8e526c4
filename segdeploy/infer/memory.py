"""What the memory budget of `segdeploy batch` counts (torch-free): everything that grows with the inputs or the model.

- The model call, held once: `batch_size` inputs of the model's input size (3 channels) and their outputs (one
  channel per class), float32: `model_call_bytes`. A run whose budget cannot hold it and one image of the input
  size is refused before it starts, naming the budget it needs (`images_budget`); the rest is the images' room.
- Each image in flight: its decode, per format (DECODE_BYTES_PER_PIXEL, measured by benchmarks/decode_memory.py:
  the peak while Pillow decodes and the RGB array is made), its chosen outputs at the original size
  (segdeploy.infer.batch.decode.image_bytes), and what its prediction holds until it is written
  (`prediction_bytes`): the model's logits (classes x input size, float32), or for a tiled photo the tile canvas
  (classes + 1 float32 planes over its cells) and the resized working image.
An image larger than the images' room still runs, alone (segdeploy.infer.pipeline.MemoryBudget).
"""

from __future__ import annotations

import math
from pathlib import Path

from segtrain.common.errors import InputError
from segtrain.contract import ModelSpec

FLOAT32 = 4
# Peak bytes per pixel while decoding, rounded up from benchmarks/results/decode_memory.json (3000x2000 photos):
# jpeg 10.43, png 10.32, webp 19.04, bmp 10.32, tiff 10.72 (18.2 to 26.9 before load_image stopped copying the
# pixels for the EXIF transpose and the RGB conversion when neither changes them).
DECODE_BYTES_PER_PIXEL = {"jpeg": 11, "png": 11, "bmp": 11, "tiff": 11, "webp": 20}
FORMAT_OF_SUFFIX = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff",
                    ".webp": "webp"}
UNKNOWN_FORMAT_BYTES = max(DECODE_BYTES_PER_PIXEL.values())  # bytes in memory, a format told by content only
MB = 2**20


class MemoryBudgetError(InputError):
    """A --memory-budget too small for one model call and one image; the message says what it needs."""


def decode_bytes_per_pixel(source: object) -> int:
    """The decode cost of an input, by its suffix (the costliest format when it has none we know)."""
    suffix = Path(str(source)).suffix.lower()
    return DECODE_BYTES_PER_PIXEL.get(FORMAT_OF_SUFFIX.get(suffix, ""), UNKNOWN_FORMAT_BYTES)


def model_call_bytes(spec: ModelSpec, batch_size: int) -> int:
    """One model call's input and output arrays: batch x (3 + classes) x the input size, float32."""
    h, w = spec.input_size
    return batch_size * (3 + spec.num_classes) * h * w * FLOAT32


def prediction_bytes(spec: ModelSpec, plan: object | None) -> int:
    """What an image's prediction holds until it is written: its logits, or a tiled photo's canvas and working
    image (`plan`: its segdeploy.infer.tiling.TilePlan)."""
    if plan is None:
        h, w = spec.input_size
        return spec.num_classes * h * w * FLOAT32
    cells = math.prod(plan.grid)
    return (spec.num_classes + 1) * cells * FLOAT32 + 3 * math.prod(plan.work_size)


def images_budget(spec: ModelSpec, batch_size: int, budget_mb: int, image_bytes_per_pixel: int) -> int:
    """The bytes left for images in flight once a model call is held; MemoryBudgetError when the budget cannot
    hold a model call and one image of the model's input size."""
    call = model_call_bytes(spec, batch_size)
    h, w = spec.input_size
    one_image = h * w * (image_bytes_per_pixel + UNKNOWN_FORMAT_BYTES) + prediction_bytes(spec, None)
    need = math.ceil((call + one_image) / MB)
    if need > budget_mb:
        raise MemoryBudgetError(
            f"--memory-budget {budget_mb} MB cannot hold one model call: {batch_size} x {w}x{h} inputs with "
            f"{spec.num_classes} classes take {math.ceil(call / MB)} MB as float32 (input and output), and an image "
            f"in flight more; pass --memory-budget {need} or more, or a smaller --batch-size")
    return budget_mb * MB - call

"""Decoding photos into RGB uint8 arrays, whatever the file holds (torch-free).

Greyscale, palette, RGBA/LA (alpha dropped), CMYK, 16-bit and 32-bit integer images all become
HxWx3 uint8 RGB. EXIF orientation is applied when asked, so sizes match what a viewer shows.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segtrain.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Photos of 24+ megapixels are real inputs; keep Pillow's guard but well above them.
Image.MAX_IMAGE_PIXELS = 400_000_000


class ImageReadError(InputError):
    """An image file that cannot be decoded; the message names the file and the reason."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def to_rgb(im: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any mode -> HxWx3 uint8 RGB."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        # 16-bit samples keep their top 8 bits; 32-bit integer images are scaled by their range.
        if arr.dtype.itemsize >= 4 and arr.max(initial=0) > 65535:
            arr = arr.astype(np.float64) * (255.0 / arr.max())
        else:
            arr = arr.astype(np.float64) / 257.0
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=1.0))
        grey = np.clip((arr - lo) * (255.0 / max(hi - lo, 1e-12)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if im.mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def load_image(path: str | Path, exif: bool = True) -> np.ndarray:
    """Read `path` as HxWx3 uint8 RGB; raises ImageReadError naming the file and the problem."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                if exif:
                    im = ImageOps.exif_transpose(im)
                return to_rgb(im)
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: file not found") from e
    except UnidentifiedImageError as e:
        reason = "empty file" if path.stat().st_size == 0 else "not an image Pillow can identify"
        raise ImageReadError(f"{path}: {reason}") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: cannot decode ({e})") from e


def image_size(path: str | Path, exif: bool = True) -> tuple[int, int]:
    """(height, width) from the header alone, after EXIF orientation when asked."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if exif and im.getexif().get(0x0112) in (5, 6, 7, 8):
                w, h = h, w
            return h, w
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot read image header ({e})") from e

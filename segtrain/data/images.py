"""Decoding photos into RGB uint8 arrays, whatever the file holds (torch-free).

Greyscale, palette, RGBA/LA (alpha dropped), CMYK, 16- and 32-bit images all become HxWx3 uint8
RGB, EXIF orientation applied when asked. One read policy: a file that cannot be decoded raises
`ImageReadError` (callers skip, name and count it); only regular files are opened (a FIFO would
block the reader); an image whose header declares more than `max_image_pixels()` is refused before
its pixels are decoded (`ImageTooLargeError`), since masks are made at the original size.

`load_image(..., min_size=(h, w))` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
scaling) while both sides stay at least (h, w): for callers that use the pixels only as model input.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segtrain.common.errors import InputError
from segtrain.common.limits import MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_RANGE
from segtrain.common.outside_text import env_value
from segtrain.common.settings import between

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS_ENV = "SEGTRAIN_MAX_IMAGE_PIXELS"
_TRANSPOSING = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def max_image_pixels() -> int:
    """The pixel limit in effect: $SEGTRAIN_MAX_IMAGE_PIXELS when set (within MAX_IMAGE_PIXELS_RANGE), else
    MAX_IMAGE_PIXELS; OutsideTextError (an InputError) naming the variable when it is not a number in range."""
    return env_value(MAX_PIXELS_ENV, int, between(*MAX_IMAGE_PIXELS_RANGE), MAX_IMAGE_PIXELS)


def _pillow_limit() -> int:
    """Pillow's own bomb check: never below the default, since the tools' fonts and legends are Pillow images
    too (a lower $SEGTRAIN_MAX_IMAGE_PIXELS is enforced from each input's header)."""
    try:
        return max(max_image_pixels(), MAX_IMAGE_PIXELS)
    except InputError:  # reported when an image is read; Pillow keeps the default meanwhile
        return MAX_IMAGE_PIXELS


# Pillow warns above its limit and refuses twice it; the limit here is checked first, from the header.
Image.MAX_IMAGE_PIXELS = _pillow_limit()


class ImageReadError(InputError):
    """An image file that cannot be decoded; the message names the file and the reason."""


class ImageTooLargeError(ImageReadError):
    """An image whose header declares more pixels than the limit (max_image_pixels)."""


def is_image_name(name: str) -> bool:
    """Whether a file name ends in an image suffix, as pathlib reads suffixes (so `..jpg` and `.a.png` do;
    os.path.splitext would give `..jpg` no suffix at all)."""
    return PurePath(name).suffix.lower() in IMAGE_SUFFIXES


def is_image_file(path: Path) -> bool:
    return is_image_name(path.name)


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
    return np.ascontiguousarray(np.asarray(im if im.mode == "RGB" else im.convert("RGB")))  # RGB: no copy first


def load_image(path: str | Path, exif: bool = True, min_size: tuple[int, int] | None = None,
               before_decode: Callable[[tuple[int, int], int], object] | None = None) -> np.ndarray:
    """Read `path` as HxWx3 uint8 RGB; raises ImageReadError naming the file and the problem.

    `min_size` (height, width, after EXIF orientation) allows a reduced JPEG decode no smaller than
    it (see the module docstring); without it the image is decoded at its full size.
    `before_decode(size, pixels)`, when given, is called once the header is read and before any pixel
    is decoded, with the image's full (height, width) after EXIF orientation and the number of
    pixels the decode will make (fewer with a reduced decode): `segdeploy batch` waits there for
    room in its memory budget.
    """
    path = Path(path)
    with _opened(path) as im:
        return _decoded(im, path, exif, min_size, before_decode)


def load_image_bytes(data: bytes | bytearray | memoryview, name: str = "<bytes>", exif: bool = True,
                     min_size: tuple[int, int] | None = None,
                     before_decode: Callable[[tuple[int, int], int], object] | None = None) -> np.ndarray:
    """The encoded image `data` (the bytes of a JPEG, PNG, ... file) as HxWx3 uint8 RGB, by the rules of
    `load_image` (pixel limit, EXIF orientation, `min_size`, `before_decode`); ImageReadError naming `name`
    otherwise."""
    with _opened_file(io.BytesIO(bytes(data)), name, None, lambda: len(data) == 0) as im:
        return _decoded(im, name, exif, min_size, before_decode)


def _decoded(im: Image.Image, name: str | Path, exif: bool, min_size: tuple[int, int] | None,
             before_decode: Callable[[tuple[int, int], int], object] | None) -> np.ndarray:
    try:
        swap = exif and (min_size is not None or before_decode is not None) and \
            im.getexif().get(0x0112) in _TRANSPOSING
        w, h = im.size
        if min_size is not None:
            need_h, need_w = min_size
            im.draft(None, (need_h, need_w) if swap else (need_w, need_h))
        if before_decode is not None:
            before_decode((w, h) if swap else (h, w), im.size[0] * im.size[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
            if exif:
                ImageOps.exif_transpose(im, in_place=True)  # in place: without a tag, no copy of the pixels
            return to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{name}: cannot decode ({e})") from e


def image_size(path: str | Path, exif: bool = True) -> tuple[int, int]:
    """(height, width) from the header alone, after EXIF orientation when asked."""
    with _opened(path, header="cannot read image header") as im:
        w, h = im.size
        try:
            if exif and im.getexif().get(0x0112) in _TRANSPOSING:
                w, h = h, w
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageReadError(f"{path}: cannot read image header ({e})") from e
        return h, w


@contextlib.contextmanager
def _opened(path: str | Path, header: str | None = None) -> Iterator[Image.Image]:
    """Image.open of a regular file within the pixel limit (header only); ImageReadError otherwise.

    `header` is how a failure to open is described when only the header is wanted.
    """
    path = Path(path)
    with regular_file(path) as file, _opened_file(file, path, header, lambda: _is_empty(path)) as image:
        yield image


@contextlib.contextmanager
def _opened_file(file: BinaryIO, name: str | Path, header: str | None,
                 empty: Callable[[], bool]) -> Iterator[Image.Image]:
    """Image.open of an open file (`name` in messages) within the pixel limit; ImageReadError otherwise."""
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(file)
    except Image.DecompressionBombError as e:  # Pillow's guard, at twice the limit: the size is in its message
        size = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(size[1]):,} pixels" if size else "twice the limit or more"
        raise ImageTooLargeError(f"{name}: {pixels}, {_beyond(limit)}") from e
    except UnidentifiedImageError as e:
        reason = "empty file" if empty() else "not an image Pillow can identify"
        raise ImageReadError(f"{name}: {reason}" if header is None else f"{name}: {header} ({reason})") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{name}: {header or 'cannot decode'} ({e})") from e
    with image:
        check_pixels(name, *image.size, limit=limit)
        yield image


def check_pixels(name: str, width: int, height: int, limit: int | None = None) -> None:
    """ImageTooLargeError when a `width` x `height` image is beyond the pixel limit (max_image_pixels())."""
    limit = max_image_pixels() if limit is None else limit
    if width * height > limit:
        raise ImageTooLargeError(f"{name}: {width}x{height} is {width * height:,} pixels, {_beyond(limit)}")


@contextlib.contextmanager
def regular_file(path: str | Path) -> Iterator[BinaryIO]:
    """`path` opened for reading if it is a regular file; ImageReadError naming it otherwise.

    The file is opened without blocking and checked on the open descriptor, so a FIFO (which would
    block a reader until something writes to it) or a device is refused, even one put in place of a
    file after it was listed.
    """
    def opener(name: str, flags: int) -> int:
        return os.open(name, flags | getattr(os, "O_NONBLOCK", 0))

    try:
        file = open(path, "rb", opener=opener)  # closed below; file.name is the path, as Pillow reports it
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot open ({e.strerror or e})") from e
    with file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise ImageReadError(f"{path}: not a regular file")
        yield file


def _beyond(limit: int) -> str:
    return f"more than the limit of {limit:,} pixels ({MAX_PIXELS_ENV} changes it), not decoded"


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False

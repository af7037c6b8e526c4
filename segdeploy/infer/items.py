"""What the Predictor's methods take (torch-free): any SOURCE a user passes, turned into the images it names.

A source is a path or text (a file, folder, glob, video, stream URL or camera index: segdeploy.infer.media, the
rule `segdeploy batch` follows too; an object-store URL, s3://bucket/photos/, through segdeploy.infer.storage), a
NumPy array, a PIL image, the bytes of an encoded image, a binary file object (open(path, "rb"), an fsspec file),
or a list (any iterable that is not text) of those. Text is always one source, never iterated character by
character. Folders and globs are listed as `segdeploy batch` lists them; a video, stream or camera gives its frames.

Arrays follow one channel order, OpenCV's by default (`channels="bgr"`, as `cv2.imread` returns and as
Ultralytics and MMSegmentation take arrays), or RGB when the Predictor is told (`channels="rgb"`, as
`np.asarray(pil_image)` gives); HxW greyscale and HxWx4 (alpha dropped) arrays are taken too. PIL images carry
their own mode, so they need no convention.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from segdeploy.infer.batch.sources import list_sources
from segdeploy.infer.media import Kind, classify, url_unsupported
from segdeploy.infer.pipeline import Failure
from segdeploy.infer.storage import is_remote, is_store_url, shown, why
from segdeploy.infer.video import Frame, VideoError, VideoReader
from segtrain.data.images import ImageReadError, check_pixels, is_image_name, load_image, load_image_bytes, to_rgb

CHANNELS = ("bgr", "rgb")  # the channel orders an array may be given in; the first is the default
BYTES = (bytes, bytearray, memoryview)


def is_file_object(value: object) -> bool:
    """A binary file object (it has read()), as open(path, "rb"), io.BytesIO or an fsspec file are."""
    return callable(getattr(value, "read", None)) and not isinstance(value, (str, os.PathLike, Image.Image))


def in_memory(value: object) -> bool:
    """One image given as a value: an array, a PIL image, encoded bytes or a binary file object."""
    return isinstance(value, (np.ndarray, Image.Image, *BYTES)) or is_file_object(value)
ImageLike = str | os.PathLike | Image.Image | np.ndarray | bytes | bytearray | memoryview


@dataclass(frozen=True)
class Given:
    """An image given in memory (an array, a PIL image or encoded bytes) and its place in the source."""

    value: object
    index: int

    def __str__(self) -> str:
        kind = "array" if isinstance(self.value, np.ndarray) else "PIL image" if isinstance(
            self.value, Image.Image) else "file object" if is_file_object(self.value) else "bytes"
        return f"{kind} #{self.index}"


Item = Path | str | Given | tuple[Frame, np.ndarray] | Failure  # what `expand` yields


def is_text(source: object) -> bool:
    return isinstance(source, (str, os.PathLike))


def one_image(source: object) -> bool:
    """Whether `source` names exactly one image (not a folder, glob, video, stream or list)."""
    if is_text(source):
        if is_store_url(source):
            return is_image_name(os.fspath(source).rstrip("/"))
        return classify(source) in (Kind.IMAGE, Kind.OTHER_FILE, Kind.MISSING)
    return in_memory(source)


def check_type(source: object) -> None:
    """TypeError unless `source` is of a type a source may be."""
    if not (is_text(source) or in_memory(source) or (isinstance(source, Iterable) and not isinstance(source, dict))):
        raise TypeError("expected a path, folder, glob, video, URL, NumPy array, PIL image, bytes, a binary file "
                        f"object or a list of them, got {type(source).__name__}")


def describe(source: object) -> str:
    """What a source is, in a few words, for messages."""
    if is_text(source):
        return f"{os.fspath(source)!r} is a {classify(source).value}"
    return f"a {type(source).__name__} may name several images"


def expand(source: object) -> Iterator[Item]:
    """The images `source` names, in order, lazily: image paths (as given, or as a folder listing finds them),
    Given images, (Frame, RGB frame) pairs, and Failures for what a listing found but cannot use.

    Raises SourceError/BatchInputError for a text source that names nothing usable (a glob without matches, a
    folder without images, a URL that is not a video), VideoError for a video that cannot be opened, TypeError for
    a value of no source type.
    """
    if is_text(source):
        yield from _expand_text(source)
    elif in_memory(source):
        yield Given(source, 0)
    elif isinstance(source, Iterable) and not isinstance(source, dict):
        for index, item in enumerate(source):
            if in_memory(item):
                yield Given(item, index)
            elif is_text(item):
                yield from _expand_text(item)
            else:
                raise TypeError(f"item {index} of the source: expected a path, an array, a PIL image, bytes or a "
                                f"binary file object, got {type(item).__name__}")
    else:
        check_type(source)


def _expand_text(source: str | os.PathLike) -> Iterator[Item]:
    kind = classify(source)
    if kind in (Kind.IMAGE, Kind.OTHER_FILE, Kind.MISSING):  # read as an image; what is wrong is its failure
        yield source
    elif kind is Kind.VIDEO or kind is Kind.STREAM:
        yield from VideoReader(source, live=kind is Kind.STREAM).frames()
    elif kind is Kind.URL and not is_store_url(source):
        raise url_unsupported(os.fspath(source))
    else:  # a folder or a glob: listed as `segdeploy batch` lists them
        listing = list_sources([os.fspath(source)])
        failures = {f.input: f for f in listing.failures}
        for f in listing.files:
            for key in [k for k in failures if k < f.key]:
                yield failures.pop(key)
            if not is_remote(f.path) and classify(f.path) is Kind.VIDEO:
                yield from VideoReader(f.path).frames()
            else:
                yield f.path
        yield from failures.values()


def to_rgb_array(item: Item, channels: str) -> np.ndarray:
    """The HxWx3 uint8 RGB image of an item; ImageReadError for a file that cannot be read."""
    if isinstance(item, tuple):
        return item[1]
    if isinstance(item, Given):
        value = item.value
        if isinstance(value, np.ndarray):
            if value.ndim >= 2:
                check_pixels(str(item), value.shape[1], value.shape[0])
            return array_to_rgb(value, channels)
        if isinstance(value, Image.Image):  # perhaps opened lazily: its size is checked before its pixels load
            if 0 in value.size:
                raise ValueError(f"an empty image ({value.size[0]}x{value.size[1]} pixels)")
            check_pixels(str(item), *value.size)
            return to_rgb(ImageOps.exif_transpose(value))
        if is_file_object(value):
            data = b"" if isinstance(value, io.TextIOBase) else value.read()
            if isinstance(value, io.TextIOBase) or not isinstance(data, BYTES):
                raise ValueError(f"{item}: expected a binary file object (open it with 'rb'), not a text one")
            return load_image_bytes(data, name=str(item))
        return load_image_bytes(value, name=str(item))
    if is_remote(item):
        return load_image_bytes(_read_object(item), name=shown(item))
    path = Path(item)
    if path.exists() and not path.is_file():  # a FIFO that would block the read forever
        raise ImageReadError(f"{path}: not a regular file")
    return load_image(path)


def _read_object(path: object) -> bytes:
    try:
        return path.read_bytes()
    except Exception as e:  # the stores raise their own types (OSError, botocore's NoCredentialsError, ...)
        raise ImageReadError(f"{shown(path)}: cannot read it ({why(e)})") from e


def array_to_rgb(image: np.ndarray, channels: str) -> np.ndarray:
    """An HxW, HxWx1, HxWx3 or HxWx4 uint8 array in `channels` order -> HxWx3 uint8 RGB."""
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (1, 4):
        image = image[..., :1] if image.shape[2] == 1 else image[..., :3]
    if image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)):
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"expected an HxWx3 uint8 {channels.upper()} array (or HxW grey, HxWx4), "
                         f"got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image[..., ::-1] if channels == "bgr" else image)


def source_of(item: Item) -> object:
    """What a Prediction's `source` is: the path as given, the Frame of a video frame, None for an in-memory image."""
    if isinstance(item, tuple):
        return item[0]
    return None if isinstance(item, Given) else item


def name_of(item: Item) -> str:
    """How an item is named in a Failure."""
    return str(item[0]) if isinstance(item, tuple) else str(item)


__all__ = ["CHANNELS", "Given", "ImageLike", "Item", "VideoError", "array_to_rgb", "expand", "one_image",
           "source_of", "to_rgb_array"]

"""The files `segdeploy batch` writes, and how a rerun knows an image's outputs are complete.

`--save` picks the outputs (SAVE_CHOICES; default DEFAULT_SAVE, mask and overlay). For an input
``sub/a.jpg`` (its path relative to the folder given) they keep the relative path and the full
file name, so ``a.jpg`` and ``a.png`` never collide::

    OUT/sub/a.jpg.mask.png        class mask: indexed PNG, pixel value = class index, shown in the
                                  model's palette (so it is the colour mask too); always written
    OUT/sub/a.jpg.overlay.jpg     colour mask blended over the photo (background keeps the photo)
    OUT/sub/a.jpg.color.png       colour mask as an RGB PNG, for tools that ignore PNG palettes
    OUT/sub/a.jpg.confidence.png  8-bit greyscale: 255 x the softmax probability of each pixel's class
    OUT/predictions.json          rle: every image's masks in the COCO results format (segdeploy.infer.batch.rle)
    OUT/sub/legend.png            every output folder: swatch, index, name and COCO id of each class

Per-image files have the image's size after EXIF orientation. Each is encoded in memory, written to
a hidden temporary name beside its target and renamed into place, so a file that exists is whole.
The mask is written last and carries a text chunk with a fingerprint (model hash, the chosen
outputs and settings that change them, and the input file's size and modification time) and the
image's summary record: a rerun treats an image as done when every chosen file exists and the
fingerprint still matches, so a replaced photo, another model or other outputs are redone, and
reuses the record for summary.json. The mask is therefore always written: it is the record.

A write that fails because the output folder can take no more (no space, a quota, a read-only
file system, an I/O error) raises `OutputWriteError`: every later write would fail too, so
`segdeploy batch` stops instead of going on; other write errors concern one file (a name too long).

Temporary names carry their writer (segtrain.common.files.owner_tag). At start a run sweeps only
temporary files that are certainly orphaned (segtrain.common.files.sweep_orphans), so several runs (the
shards of a sharded batch) can share one output folder; a writer elsewhere, whose liveness cannot
be checked, is taken for gone after `STALE_TEMP_SECONDS` (a write takes seconds).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segtrain.common.errors import InputError, RunError
from segtrain.common.files import atomic_write_bytes, json_text, owner_tag, sweep_orphans, temp_name_pattern

# Per-image outputs, by --save name; the mask is always written (it carries the record).
OUTPUT_SUFFIXES = {"mask": ".mask.png", "overlay": ".overlay.jpg", "color": ".color.png",
                   "confidence": ".confidence.png"}
SAVE_CHOICES = ("mask", "overlay", "color", "confidence", "rle")
DEFAULT_SAVE = ("mask", "overlay")
LEGEND_NAME = "legend.png"
RECORD_KEY = "segdeploy.infer.batch"
OVERLAY_JPEG_QUALITY = 92
# A temporary file older than this is an orphan whoever wrote it: writes take seconds.
STALE_TEMP_SECONDS = 30 * 60
# Temporary names made by write_atomic beside these targets.
_TEMP_NAME = temp_name_pattern("|".join([*(r".+" + re.escape(s) for s in OUTPUT_SUFFIXES.values()),
                                         re.escape(LEGEND_NAME),
                                         r"(?:summary|predictions)(?:\.shard-\d+-of-\d+)?\.json"]))


class SaveError(InputError):
    """A bad --save list; one line, exit 2."""


def resolve_save(items: Iterable[str]) -> tuple[str, ...]:
    """The --save names in SAVE_CHOICES order, with the mask added (it is always written)."""
    chosen = {str(item).strip() for item in items if str(item).strip()}
    unknown = sorted(chosen - set(SAVE_CHOICES))
    if unknown:
        raise SaveError(f"--save: unknown {', '.join(unknown)}; choose from {', '.join(SAVE_CHOICES)}")
    return tuple(k for k in SAVE_CHOICES if k in chosen | {"mask"})


@dataclass(frozen=True)
class OutputPaths:
    """The per-image output files of one input: kind (mask, overlay, color, confidence) -> path."""

    files: dict[str, Path]

    @property
    def mask(self) -> Path:
        return self.files["mask"]

    def as_dict(self, root: Path) -> dict[str, str]:
        return {kind: path.relative_to(root).as_posix() for kind, path in self.files.items()}


def output_paths(out_dir: Path, rel: Path, save: Sequence[str] = tuple(OUTPUT_SUFFIXES)) -> OutputPaths:
    """Per-image output files of the input at `rel` (relative to its folder), mirrored under `out_dir`."""
    base = Path(out_dir) / rel
    return OutputPaths({kind: base.with_name(base.name + suffix) for kind, suffix in OUTPUT_SUFFIXES.items()
                        if kind in save or kind == "mask"})


def encode_mask(mask: np.ndarray, palette: Sequence[Sequence[int]], record: dict | None = None) -> bytes:
    """HxW uint8 class mask -> indexed PNG bytes with `palette`; `record` goes in a text chunk."""
    from PIL import PngImagePlugin

    h, w = mask.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    im.putpalette([v for colour in palette for v in colour])
    info = PngImagePlugin.PngInfo()
    if record is not None:
        info.add_text(RECORD_KEY, json_text(record, ascii_only=True))
    buf = io.BytesIO()
    # Level 1: class masks compress well at any level and 24-megapixel masks encode fast.
    im.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


def encode_grey(plane: np.ndarray) -> bytes:
    """HxW uint8 -> greyscale PNG bytes (fast zlib level)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(plane, dtype=np.uint8), mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def confidence_to_grey(confidence: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 0..255 (rounded), as confidence.png stores them."""
    return cv2.convertScaleAbs(confidence, alpha=255.0)


def encode_rgb(image: np.ndarray, suffix: str) -> bytes:
    """HxWx3 RGB uint8 -> PNG (Pillow, fast zlib level) or JPEG (OpenCV) bytes, chosen by `suffix`.

    Each encoder is the faster of the two libraries for its format here (measured per image on
    coco-mini photos: `python benchmarks/experiments.py outputs`).
    """
    if suffix == ".png":
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, OVERLAY_JPEG_QUALITY])
    if not ok:
        raise OSError(f"cannot encode a {image.shape[1]}x{image.shape[0]} image as JPEG")
    return data.tobytes()


# Errors that say the output folder's device takes no more writes, whichever file is written next.
DEVICE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


class OutputWriteError(RunError):
    """--out can take no more (DEVICE_ERRNOS), or a file of the run's own cannot be written; exit code 1."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.path, self.errno, self.reason = Path(path), error.errno, error.strerror or str(error)
        super().__init__(f"{path}: cannot write it ({self.reason})")


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary name tagged with this process and rename it into place.

    OutputWriteError when the device takes no more writes (see the module docstring); OSError otherwise.
    """
    try:
        atomic_write_bytes(path, lambda f: f.write(data), tag=owner_tag())
    except OSError as e:
        if e.errno in DEVICE_ERRNOS:
            raise OutputWriteError(path, e) from e
        raise


def read_record(mask_path: Path) -> dict | None:
    """The record stored in a mask PNG's text chunk, or None when absent or unreadable.

    Only the PNG header and its text chunks are read, not the pixels.
    """
    try:
        with Image.open(mask_path) as im:
            text = im.info.get(RECORD_KEY)
            size = im.size
    except (OSError, ValueError, SyntaxError):
        return None
    try:
        record = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or list(record.get("size", ())) != [size[1], size[0]]:
        return None
    return record


def completed_record(paths: OutputPaths, fingerprint: dict) -> dict | None:
    """The stored record when every chosen output exists and was made with `fingerprint`, else None."""
    if not all(path.is_file() for path in paths.files.values()):
        return None
    record = read_record(paths.mask)
    if record is None or record.get("fingerprint") != fingerprint:
        return None
    return record


class NotAFileError(OSError):
    """An input that is not a regular file (a FIFO or device would block or never end)."""


def source_stamp(path: Path) -> dict[str, int]:
    """The input file's identity for the fingerprint: a changed photo has a new stamp."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotAFileError(f"{path}: not a regular file")
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_mask(path: Path) -> np.ndarray:
    """Class indices of a mask PNG written by `encode_mask`."""
    with Image.open(path) as im:
        if im.mode != "P":
            raise ValueError(f"{path}: expected an indexed (P) PNG, found mode {im.mode}")
        return np.asarray(im)


def sweep_temp_files(out_dir: Path) -> list[Path]:
    """Delete orphaned temporary files under `out_dir` (see the module docstring); returns them.

    Temporary files of a run still writing, here or on another machine, are left alone.
    """
    return sweep_orphans(out_dir, _TEMP_NAME, STALE_TEMP_SECONDS, recursive=True)

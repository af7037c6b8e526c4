"""The files `segdeploy batch` writes for each image, and how a rerun knows they are complete.

For an input ``INPUT_DIR/sub/a.jpg`` the outputs keep the relative path and the full file name,
so ``a.jpg`` and ``a.png`` never collide::

    OUT/sub/a.jpg.mask.png      class mask: indexed PNG, pixel value = class index, model palette
    OUT/sub/a.jpg.color.png     colour mask: RGB PNG of the palette colours
    OUT/sub/a.jpg.overlay.jpg   colour mask blended over the photo (background keeps the photo)

All three have the image's size after EXIF orientation. Each is encoded in memory, written to a
hidden temporary name beside its target and renamed into place, so a file that exists is whole.
The mask is written last and carries a text chunk with a fingerprint (model hash, overlay alpha,
and the input file's size and modification time) and the image's summary record: a rerun treats
an image as done when all three files exist and the fingerprint still matches, so a replaced
photo or another model is redone, and reuses the record for summary.json.

Temporary names carry their writer (segtrain.fileio.owner_tag). At start a run sweeps only
temporary files that are certainly orphaned (segtrain.fileio.sweep_orphans), so several runs (the
shards of a sharded batch) can share one output folder; a writer elsewhere, whose liveness cannot
be checked, is taken for gone after `STALE_TEMP_SECONDS` (a write takes seconds).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.fileio import atomic_write_bytes, owner_tag, sweep_orphans, temp_name_pattern

MASK_SUFFIX = ".mask.png"
COLOR_SUFFIX = ".color.png"
OVERLAY_SUFFIX = ".overlay.jpg"
RECORD_KEY = "segdeploy.infer.batch"
OVERLAY_JPEG_QUALITY = 92
# A temporary file older than this is an orphan whoever wrote it: writes take seconds.
STALE_TEMP_SECONDS = 30 * 60
# Temporary names made by write_atomic beside these targets.
_TEMP_NAME = temp_name_pattern(r".+\.mask\.png|.+\.color\.png|.+\.overlay\.jpg|summary(?:\.shard-\d+-of-\d+)?\.json")


@dataclass(frozen=True)
class OutputPaths:
    """The three outputs of one input image."""

    mask: Path
    color: Path
    overlay: Path

    def as_dict(self, root: Path) -> dict[str, str]:
        return {k: getattr(self, k).relative_to(root).as_posix() for k in ("mask", "color", "overlay")}


def output_paths(out_dir: Path, rel: Path) -> OutputPaths:
    """Output files for the input at `rel` (relative to INPUT_DIR), mirrored under `out_dir`."""
    base = Path(out_dir) / rel
    return OutputPaths(mask=base.with_name(base.name + MASK_SUFFIX),
                       color=base.with_name(base.name + COLOR_SUFFIX),
                       overlay=base.with_name(base.name + OVERLAY_SUFFIX))


def encode_mask(mask: np.ndarray, palette: Sequence[Sequence[int]], record: dict | None = None) -> bytes:
    """HxW uint8 class mask -> indexed PNG bytes with `palette`; `record` goes in a text chunk."""
    from PIL import PngImagePlugin

    h, w = mask.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    im.putpalette([v for colour in palette for v in colour])
    info = PngImagePlugin.PngInfo()
    if record is not None:
        info.add_text(RECORD_KEY, json.dumps(record, ensure_ascii=True))
    buf = io.BytesIO()
    # Level 1: class masks compress well at any level and 24-megapixel masks encode fast.
    im.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


def encode_rgb(image: np.ndarray, suffix: str) -> bytes:
    """HxWx3 RGB uint8 -> PNG (fast zlib level) or JPEG bytes, chosen by `suffix`."""
    buf = io.BytesIO()
    if suffix == ".png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=OVERLAY_JPEG_QUALITY)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary name tagged with this process and rename it into place."""
    atomic_write_bytes(path, lambda f: f.write(data), tag=owner_tag())


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
    """The stored record when all outputs exist and were made with `fingerprint`, else None."""
    if not (paths.color.is_file() and paths.overlay.is_file() and paths.mask.is_file()):
        return None
    record = read_record(paths.mask)
    if record is None or record.get("fingerprint") != fingerprint:
        return None
    return record


def source_stamp(path: Path) -> dict[str, int]:
    """The input file's identity for the fingerprint: a changed photo has a new stamp."""
    st = os.stat(path)
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

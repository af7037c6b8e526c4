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

Temporary names carry their writer: ``.<target>.sd-<where>-<pid>-<token>.<random>.tmp``, where
`where` hashes the host name and PID namespace and `token` is random per process. At start a run
sweeps only temporary files that are certainly orphaned, so several runs (the shards of a sharded
batch) can share one output folder: files of a dead process on this host and PID namespace, files
of an earlier process whose pid this one reuses (a restarted container), files older than
`STALE_TEMP_SECONDS` (a writer elsewhere, whose liveness cannot be checked: a write takes seconds),
and untagged files (written before names carried a writer).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.fileio import atomic_write_bytes

MASK_SUFFIX = ".mask.png"
COLOR_SUFFIX = ".color.png"
OVERLAY_SUFFIX = ".overlay.jpg"
RECORD_KEY = "segdeploy.infer.batch"
OVERLAY_JPEG_QUALITY = 92
# A temporary file older than this is an orphan whoever wrote it: writes take seconds.
STALE_TEMP_SECONDS = 30 * 60
# Temporary names made by write_atomic: ".<target name>.<owner tag>.<random>.tmp" beside the target
# (no owner tag in names written before tags existed).
_TEMP_NAME = re.compile(r"^\.(?:.+\.mask\.png|.+\.color\.png|.+\.overlay\.jpg|summary(?:\.shard-\d+-of-\d+)?\.json)"
                        r"\.(?:sd-(?P<where>[0-9a-f]{12})-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})\.)?[A-Za-z0-9_]+\.tmp$")
_owner: tuple[int, str, str] | None = None  # (pid, where, token) of this process


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


def owner_tag() -> str:
    """This process in temporary names: "sd-<where>-<pid>-<token>" (see the module docstring)."""
    pid, where, token = _owner_identity()
    return f"sd-{where}-{pid}-{token}"


def _owner_identity() -> tuple[int, str, str]:
    global _owner
    if _owner is None or _owner[0] != os.getpid():  # a forked child is another writer
        _owner = (os.getpid(), _where(), secrets.token_hex(4))
    return _owner


def _where() -> str:
    """The host and PID namespace: where a pid names one process and its liveness can be checked."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.blake2b(f"{socket.gethostname()}:{namespace}".encode(), digest_size=6).hexdigest()


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
    removed: list[Path] = []
    if not Path(out_dir).is_dir():
        return removed
    now = time.time()
    for path in Path(out_dir).rglob(".*.tmp"):
        match = _TEMP_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:  # its writer renamed it meanwhile
            continue
        if _is_orphan(match, age):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _is_orphan(match: re.Match, age_seconds: float) -> bool:
    if match["where"] is None or age_seconds > STALE_TEMP_SECONDS:
        return True
    my_pid, my_where, my_token = _owner_identity()
    if match["where"] != my_where:  # another host or PID namespace: only age tells
        return False
    pid = int(match["pid"])
    if pid == my_pid:  # this process, or an earlier one that had its pid
        return match["token"] != my_token
    return not _process_alive(pid)


def _process_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no signal-0 probe: keep it, the age rule removes it later
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by another user
        return True
    return True

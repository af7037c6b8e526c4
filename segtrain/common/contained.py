"""Writes stay inside their output folder: a symlinked subfolder never carries a result out of it.

A command claims its output folder once (`claim_output_root`, called by `ensure_writable_dir`, which `segdeploy
batch`, `segdeploy export` and `segtrain fit` use on --out before any work). From then on, every folder this process
writes a file in, or creates, under that folder (lexically) is resolved and checked first (`contained_folder`): its
real path must lie inside the output folder's real path, or the write is refused with `EscapesOutputError` (an
OSError, so each command reports it on its usual path: the image fails, or the run stops for its own files). The
output folder itself may be a symlink (the user chose it); links inside it may not lead out. A file symlink in
place of a result is not followed: results are renamed into place, which replaces the link itself.

One mechanism for every writer: `segtrain.common.files.atomic_write_bytes` and the writers that make their own
temporaries (videos, ONNX staging) call `contained_folder`; a storage layer for local paths calls it too.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

_roots: dict[str, str] = {}  # the claimed output folders: absolute path as written -> real path
_lock = threading.Lock()


class EscapesOutputError(OSError):
    """A write under an output folder whose folder resolves outside it (through a symlink)."""

    def __init__(self, folder: str, root: str, link: str | None) -> None:
        through = f" through the symlink {link}" if link else ""
        super().__init__(errno.EXDEV, f"{folder} leads outside the output folder {root}{through}; refused")
        self.filename = folder


def claim_output_root(folder: str | Path) -> None:
    """From now on, writes under `folder` must stay inside its real path (the folder must exist)."""
    absolute = os.path.abspath(folder)
    with _lock:
        _roots[absolute] = os.path.realpath(absolute)


def _root_of(absolute: str) -> tuple[str, str] | None:
    """The innermost claimed folder that holds `absolute` lexically: (its absolute path, its real path)."""
    with _lock:
        roots = list(_roots.items())
    inside = [(root, real) for root, real in roots if _within(absolute, root)]
    return max(inside, key=lambda item: len(item[0])) if inside else None


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_contained(folder: str | Path) -> None:
    """EscapesOutputError when `folder` lies (lexically) under a claimed output folder but resolves outside it.

    A folder that does not exist yet resolves as far as it exists; the rest would be created where that points.
    """
    absolute = os.path.abspath(folder)
    found = _root_of(absolute)
    if found is None:
        return
    root, real_root = found
    if not _within(os.path.realpath(absolute), real_root):
        raise EscapesOutputError(str(folder), root, _first_link_out(absolute, root, real_root))


def _first_link_out(absolute: str, root: str, real_root: str) -> str | None:
    """The first symlink on the way from `root` down to `absolute` that leads out of `real_root` ("a -> b")."""
    current = root
    for part in Path(os.path.relpath(absolute, root)).parts:
        current = os.path.join(current, part)
        if os.path.islink(current) and not _within(os.path.realpath(current), real_root):
            return f"{current} -> {os.readlink(current)}"
    return None


def contained_folder(folder: str | Path) -> Path:
    """Create `folder` (and its parents) after checking it stays inside its output folder; check again after.

    Returns it as a Path. EscapesOutputError when it leads out; nothing is created outside then.
    """
    folder = Path(folder)
    check_contained(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_contained(folder)  # a link swapped in meanwhile
    return folder

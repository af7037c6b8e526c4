"""Files: atomic writes (every file the tools write appears complete or not at all), hashing, safe loading.

Temporary files carry their writer: ``.<target>.sd-<where>-<pid>-<token>.<random>.tmp``, where
`where` hashes the host name and PID namespace and `token` is random per process (`owner_tag`).
`sweep_orphans` deletes only temporaries that are certainly orphaned, so several writers (the
shards of a sharded batch, two exports) can share a folder: files of a dead process on this host
and PID namespace, files of an earlier process whose pid this one reuses (a restarted container),
files older than the caller's age limit (a writer elsewhere, whose liveness cannot be checked),
and untagged files (written before names carried a writer). `segdeploy batch` sweeps its output
folder and `segdeploy export` its export folder this way, so a killed run leaves nothing behind
for long.

Torch-free at import: `safe_torch_load` imports torch only when called.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from segtrain.common.contained import claim_output_root, contained_folder
from segtrain.common.errors import undecodable_escaped


def _new_file_mode() -> int:
    """0666 less the umask: the mode open() gives a new file (mkstemp's would be 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


NEW_FILE_MODE = _new_file_mode()  # read once: os.umask is process-wide, so not per write from threads


def atomic_write_bytes(path: str | Path, write: Callable[[BinaryIO], object], tag: str = "") -> None:
    """Call write(file_object) on a temporary file beside `path`, then rename it into place.

    Its folder is created if needed, never through a symlink out of a claimed output folder
    (segtrain.common.contained.EscapesOutputError).

    The temporary name is ".<name>.<tag>.<random>.tmp" (".<name>.<random>.tmp" without a tag);
    a tag lets a later sweep tell whose temporary file it is.
    """
    path = Path(path)
    contained_folder(path.parent)
    prefix = f".{path.name}.{tag}." if tag else f".{path.name}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, NEW_FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, tag: str = "") -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")), tag=tag)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(obj: Any, ascii_only: bool = False, **dumps_options: Any) -> str:
    """`json.dumps(obj)` that is valid UTF-8 JSON whatever file names `obj` holds.

    A file-name byte that is not UTF-8 (a lone surrogate in Python) is written as the text ``\\xNN``
    (segtrain.common.errors.undecodable_escaped) instead of failing or becoming an unpaired ``\\udcNN``
    escape that strict JSON readers refuse. `ascii_only`: every other non-ASCII character as a JSON
    ``\\u`` escape (for PNG text chunks, which hold Latin-1).
    """
    text = json.dumps(obj, ensure_ascii=False, **dumps_options)
    if text.isascii():
        return text
    # Outside strings JSON is ASCII, so every match lies inside a string.
    return (_NON_ASCII if ascii_only else _SURROGATE).sub(
        lambda m: json.dumps(undecodable_escaped(m[0]), ensure_ascii=ascii_only)[1:-1], text)


# --------------------------------------------------------------------------------------------
# Temporary files and their writers

_OWNER_TAG = r"sd-(?P<where>[0-9a-f]{12})-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})"
_owner: tuple[int, str, str] | None = None  # (pid, where, token) of this process


def owner_tag() -> str:
    """This process in temporary names: "sd-<where>-<pid>-<token>" (see the module docstring)."""
    pid, where, token = _owner_identity()
    return f"sd-{where}-{pid}-{token}"


def temp_name_pattern(targets: str, suffix: str = r"\.tmp") -> re.Pattern[str]:
    """The names of temporaries made beside targets whose names match the regex `targets`.

    That is ".<target>.<owner tag>.<random><suffix>" (atomic_write_bytes with a tag, mkstemp and
    mkdtemp with the tag in the prefix), and the same without a tag.
    """
    return re.compile(rf"^\.(?:{targets})\.(?:{_OWNER_TAG}\.)?[A-Za-z0-9_]+{suffix}$")


def sweep_orphans(folder: str | Path, pattern: re.Pattern[str], stale_seconds: float,
                  recursive: bool = False) -> list[Path]:
    """Delete the orphaned temporaries (files or folders) named by `pattern` in `folder`; returns them.

    Temporaries of a writer still at work, here or on another machine younger than `stale_seconds`,
    are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    now = time.time()
    for path in (folder.rglob(".*") if recursive else folder.glob(".*")):
        match = pattern.match(path.name)
        if match is None or path.is_symlink():
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:  # its writer renamed it meanwhile
            continue
        if _is_orphan(match, age, stale_seconds):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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


def _is_orphan(match: re.Match, age_seconds: float, stale_seconds: float) -> bool:
    if match["where"] is None or age_seconds > stale_seconds:
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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (checkpoint and model identities in provenance and fingerprints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class UnsafeLoadError(ValueError):
    """A file `safe_torch_load` will not or cannot load; the message is the reason, without the path."""


# How torch's weights-only unpickler names a global it refuses ("Unsupported global: GLOBAL x.y" or
# "unsupported GLOBAL x.y whose module x is blocked").
_UNSAFE_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL (\S+)", re.IGNORECASE)


def safe_torch_load(path: str | Path, map_location: str = "cpu", what: str = "checkpoint",
                    plain: str = "weights checkpoint") -> Any:
    """`torch.load(weights_only=True)`: tensors and plain values only, never a pickle that runs code.

    The one place files are unpickled (checkpoints, encoder weights). Raises FileNotFoundError,
    or UnsafeLoadError saying why the file was refused ("refused, not a plain <plain> ...") or could
    not be read ("not a readable <what> ..."). torch is imported here, so torch-free modules may
    import this one.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        unsafe = _UNSAFE_GLOBAL.search(str(e))
        if unsafe:  # the weights-only unpickler met a class or function it would have to run
            raise UnsafeLoadError(f"refused, not a plain {plain} (loading it would run code: "
                                  f"{unsafe.group(1)})") from e
        raise UnsafeLoadError(f"not a readable {what} (corrupt or not a PyTorch file)") from e
    except Exception as e:  # corrupt bytes can trip the unpickler anywhere (IndexError, KeyError, ...)
        raise UnsafeLoadError(f"not a readable {what} (corrupt or truncated: {type(e).__name__})") from e


_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a"  # torch.save before zip files: pickle protocol 2, then a long


def looks_like_torch_file(path: str | Path) -> bool:
    """Whether `path` was written by torch.save (a zip archive holding a data.pkl, or the legacy pickle)."""
    import zipfile

    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return head == _TORCH_LEGACY_MAGIC


def looks_like_onnx(path: str | Path) -> bool:
    """Whether `path` is an ONNX model (its suffix, or a protobuf that onnx reads as a graph with nodes)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as f:
            if f.read(1) != b"\x08":  # ONNX files open with field 1, ir_version (a varint)
                return False
        import onnx

        return len(onnx.load(str(path), load_external_data=False).graph.node) > 0
    except Exception:  # not readable, or not protobuf: not ONNX
        return False


def folder_problem(path: str | Path, what: str = "folder") -> str | None:
    """Why `path` is not a folder to read ("dataset folder not found", "not a folder (a FIFO)"), or None."""
    if os.path.isdir(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{what} not found (dangling symlink)" if os.path.islink(path) else f"{what} not found"
    except OSError as e:
        return f"{what} cannot be read ({e.strerror or e})"
    return f"not a folder ({file_kind(mode)})"


def file_kind(mode: int) -> str:
    """What an st_mode is, in words ("a FIFO", "a folder", ...)."""
    kinds = ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a file"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "unknown kind")


def not_a_result_file(path: str | Path) -> str | None:
    """Why `path` may not be replaced by a result file (a symlink, a folder, a FIFO, a device...), or None
    when it is absent or a regular file. Results are renamed into place, which would replace the entry
    itself: a symlink, not its target; a FIFO or /dev/null, not what reads it."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # absent, or its folder is not one: writing there says why
        return None
    return None if stat.S_ISREG(mode) else f"not a regular file ({file_kind(mode)})"


def ensure_writable_dir(folder: str | Path) -> None:
    """Create `folder` if needed and prove a file can be made and written in it (OSError otherwise, ENOSPC for
    a full device), before long work. It becomes a claimed output folder: writes under it stay inside it
    (segtrain.common.contained)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)  # the folder the user named: wherever it leads, it is theirs
    claim_output_root(folder)
    with tempfile.TemporaryFile(dir=folder) as probe:
        probe.write(bytes(4096))  # a page: a device with no room left refuses it
        probe.flush()


CACHE_ENV = "SEGTRAIN_CACHE_DIR"
CACHE_OFF = ("", "0", "off", "none")


def user_cache_dir(override: str | Path | None = None) -> Path | None:
    """The tools' cache folder (decoded masks, runtime measurements): `override`, else $SEGTRAIN_CACHE_DIR, else
    ~/.cache/segtrain; None when it is set to off (also "", "0", "none"): no cache."""
    base = override or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "segtrain"
    return None if str(base) in CACHE_OFF else Path(base)

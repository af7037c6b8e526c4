"""Where `segdeploy batch` reads and writes (torch-free): a local path, or an object-store URL (s3://, gs://,
az://, memory://, any store fsspec knows) through fsspec, with the store's own package from the `cloud` extra.

A location is a pathlib.Path for a local path and a universal_pathlib UPath (fsspec underneath) for a store URL;
both have the pathlib calls the batch code uses (`/`, name, parent, relative_to, exists, is_file, open,
read_bytes, iterdir). What differs between the two is here, behind a few functions:

- `location(text)`: the one place a SOURCE or --out becomes a location;
- `stamp(path)`: an input's identity for resuming (a local file's size and mtime; an object's size and ETag, or
  its modification time where the store has no ETag);
- `put(path, data)`: an object is written in one request, which is atomic in object stores (no temporary name,
  nothing half-written to sweep); any failure is a StoreWriteError, since it says the store takes no more from
  this run (access denied, a missing bucket, the network);
- `find_media(root)`: the objects under a prefix, keyed relative to it;
- `list_ahead(root)`: which objects exist under --out, listed once, for the checks of a resuming run.

Credentials come from the standard places of each store (environment, config files, instance roles); fsspec and
the store's package read them, and messages and summaries show a URL without its user name and password.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Any

from segdeploy.infer.media import STREAM_SCHEMES, WEB_SCHEMES, is_media_name, is_url, redacted
from segtrain.common.errors import InputError

CLOUD_EXTRA = 'pip install "segtrain[cloud]"'
LOCAL_SCHEMES = ("file", "local")


class StoreError(InputError):
    """A store URL that cannot be used (no package for it, a bucket that cannot be listed); the message names it."""


def is_store_url(text: str | os.PathLike) -> bool:
    """Whether `text` is a URL that object storage serves (not a video stream, not an http(s) page)."""
    if not isinstance(text, (str, os.PathLike)):
        return False
    text = os.fspath(text)
    if not isinstance(text, str) or not is_url(text):
        return False
    scheme = text.split("://", 1)[0].lower()
    return scheme not in (*STREAM_SCHEMES, *WEB_SCHEMES)


def is_remote(path: object) -> bool:
    """Whether `path` is a location in an object store (rather than a local pathlib path or text)."""
    return not isinstance(path, (PurePath, str, bytes)) and hasattr(path, "fs") and hasattr(path, "protocol")


def location(value: str | os.PathLike | Any) -> Path | Any:
    """A local path as pathlib.Path, a store URL as a UPath (StoreError when the store's package is missing)."""
    if is_remote(value):
        return value
    if not is_store_url(value):
        return Path(value)
    text = str(value)
    scheme = text.split("://", 1)[0].lower()
    if scheme in LOCAL_SCHEMES:
        return Path(text.split("://", 1)[1])
    try:
        from upath import UPath

        path = UPath(text)
        path.fs  # noqa: B018 (imports the store's package: a missing one is named here, not mid-run)
        return path
    except ImportError as e:
        raise StoreError(f"{redacted(text)}: reading and writing {scheme}:// needs its fsspec package "
                         f"({CLOUD_EXTRA}; {e})") from None
    except ValueError as e:  # fsspec: "Protocol not known"
        raise StoreError(f"{redacted(text)}: {scheme}:// is not a store fsspec knows ({e})") from None


def shown(path: object) -> str:
    """A location as messages and summaries show it (a URL without credentials)."""
    return redacted(str(path))


def stamp(path: Any) -> dict[str, Any]:
    """An object's identity for the resume fingerprint: its size and ETag (or modification time)."""
    info = path.fs.info(path.path)
    if info.get("type") != "file":
        raise IsADirectoryError(f"{shown(path)}: not an object")
    size = int(info.get("size") or 0)
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("content_md5")
    if etag:
        return {"bytes": size, "etag": str(etag).strip('"')}
    modified = info.get("LastModified") or info.get("last_modified") or info.get("mtime") or info.get("created")
    return {"bytes": size, "modified": str(modified)}


class StoreWriteError(OSError):
    """An object that could not be written (batch stops: the store takes no more from this run)."""


def put(path: Any, data: bytes) -> None:
    """Write `data` as the object at `path` in one request; StoreWriteError naming it when that fails."""
    try:
        path.fs.pipe_file(path.path, data)
    except Exception as e:  # the stores raise their own types (PermissionError, botocore's, aiohttp's...)
        reason = why(e)
        raise StoreWriteError(0, reason, shown(path)) from e


def why(error: BaseException) -> str:
    """What went wrong with a store request, in a few words (no credentials)."""
    if isinstance(error, PermissionError):
        return "access denied"
    if isinstance(error, FileNotFoundError):
        return "no such bucket or container"
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return redacted(text)


class Listing:
    """Which objects exist under a run's --out, from one listing at the start of the run: a resuming run checks
    several outputs per image, and asking the store each time costs a request or two per check (S3 answers a
    missing key with a HEAD and then a LIST). `is_file(path)` answers from the listing for objects below the
    listed prefix and asks the path itself for anything else (local files, a prefix that could not be listed).
    Valid until the run writes or removes there: the checks before the first write use it."""

    def __init__(self, prefix: str | None = None, files: frozenset[str] = frozenset()) -> None:
        self.prefix, self.files = prefix, files

    def is_file(self, path: Any) -> bool:
        if self.prefix is not None and is_remote(path) and path.path.startswith(self.prefix):
            return path.path in self.files
        return path.is_file()


def list_ahead(root: Any) -> Listing:
    """The Listing of everything under `root` (one request per thousand objects on S3); for a local folder, or a
    prefix that cannot be listed (its own checks then name the problem), one that asks each path."""
    root = location(root)
    if is_remote(root):
        prefix = root.path.rstrip("/") + "/"
        try:
            return Listing(prefix, frozenset(root.fs.find(prefix)))
        except Exception:  # noqa: BLE001 (each store raises its own types; the later checks report it)
            pass
    return Listing()


def find_media(root: Any) -> list[tuple[str, Any]]:
    """(key relative to `root`, location) of every image or video object under the prefix `root`, sorted by key."""
    prefix = root.path.rstrip("/")
    found = []
    for name, info in root.fs.find(prefix, withdirs=False, detail=True).items():
        if info.get("type", "file") != "file":
            continue
        key = name[len(prefix):].lstrip("/") if name.startswith(prefix) else name.rsplit("/", 1)[-1]
        if key and is_media_name(key):
            found.append((key, root / key))
    return sorted(found, key=lambda item: item[0])

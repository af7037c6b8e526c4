"""What a SOURCE given as text is (torch-free): the one rule `segdeploy batch` and the Predictor share.

A text SOURCE is one source, never iterated: an existing folder, an image file, a video file (by its suffix), a
glob pattern, a URL (`scheme://...`), or a camera index (a whole number that names no file). Video URLs (RTSP,
RTMP, UDP, or HTTP(S) naming a video file) and cameras are read by OpenCV as streams; object-store URLs (s3://,
gs://, az://, memory://...) are read by `segdeploy batch` through segdeploy.infer.storage; other http(s) URLs are
not read.
"""

from __future__ import annotations

import enum
import glob
import os
import re
from pathlib import Path, PurePath, PurePosixPath
from urllib.parse import urlsplit

from segtrain.common.errors import InputError
from segtrain.data.images import IMAGE_SUFFIXES, is_image_name

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt")  # always video, read by OpenCV
WEB_SCHEMES = ("http", "https")  # video when the path names a video file
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MEDIA_KINDS = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES + VIDEO_SUFFIXES)


class SourceError(InputError):
    """A SOURCE that names nothing usable; the message names it and says why."""


class Kind(enum.Enum):
    FOLDER = "folder"
    IMAGE = "image file"
    VIDEO = "video file"
    GLOB = "glob pattern"
    STREAM = "video stream"  # a video URL or a camera: read by OpenCV, no file to resume from
    URL = "URL"  # not a video: for the storage layer
    OTHER_FILE = "file"  # exists, but is neither an image nor a video by its name
    MISSING = "missing"


def is_video_name(name: str) -> bool:
    return PurePath(name).suffix.lower() in VIDEO_SUFFIXES


def is_media_name(name: str) -> bool:
    """An image or a video, by the name's suffix (any case)."""
    return is_image_name(name) or is_video_name(name)


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def camera_index(text: str) -> int | None:
    """The camera a SOURCE names ("0", "1", ...), or None; a file or folder of that name wins."""
    return int(text) if text.isdigit() and len(text) <= 4 and not os.path.lexists(text) else None


def classify(source: str | os.PathLike) -> Kind:
    """What the text SOURCE names (see the module docstring); looks at the file system, reads no file."""
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if is_url(text):
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme in STREAM_SCHEMES or (scheme in WEB_SCHEMES and is_video_name(PurePosixPath(parts.path).name)):
            return Kind.STREAM
        return Kind.URL
    if camera_index(text) is not None:
        return Kind.STREAM
    path = Path(text)
    if path.is_dir():
        return Kind.FOLDER
    if os.path.lexists(path):
        if is_video_name(path.name):
            return Kind.VIDEO
        return Kind.IMAGE if is_image_name(path.name) else Kind.OTHER_FILE
    return Kind.GLOB if glob.has_magic(text) else Kind.MISSING


def redacted(source: str | os.PathLike) -> str:
    """A SOURCE as messages and summaries show it: a URL without its user name and password."""
    text = os.fspath(source) if not isinstance(source, bytes) else os.fsdecode(source)
    if not is_url(text):
        return text
    parts = urlsplit(text)
    if parts.password is None and parts.username is None:
        return text
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def url_unsupported(source: str) -> SourceError:
    """The error for a URL that is neither a video stream nor an object store's."""
    scheme = urlsplit(source).scheme.lower()
    return SourceError(f"{redacted(source)}: a {scheme}:// URL that is not a video is not read (object stores are: "
                       "s3://, gs://, az://...); download the files to a local folder first")


def stream_key(source: str) -> str:
    """The name a stream's outputs take under --out: camera0, or the URL's host and path, made a file name."""
    index = camera_index(source)
    if index is not None:
        return f"camera{index}"
    parts = urlsplit(source)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parts.hostname or ''}{parts.path}").strip("._") or parts.scheme
    return name if is_video_name(name) else f"{name}.stream"

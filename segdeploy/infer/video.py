"""Video in and out through OpenCV (torch-free): frames of a file, a stream URL or a camera as RGB arrays, and
the videos `segdeploy batch` writes (README: "Videos").

A mask video must keep every class colour exact, so it is lossless (FFV1 in Matroska: each pixel is its class's
palette colour); an overlay is a photo and takes the usual lossy MPEG-4 Part 2 (`mp4v`, which every OpenCV wheel
writes). A video is written under a temporary name beside its target and renamed into place when it is whole.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segdeploy.infer.media import camera_index, redacted
from segtrain.common.contained import contained_folder
from segtrain.common.errors import InputError
from segtrain.common.files import NEW_FILE_MODE
from segtrain.common.limits import MAX_IMAGE_PIXELS

LOSSLESS = ("FFV1", ".mkv")  # (fourcc, container) of mask and confidence videos
LOSSY = ("mp4v", ".mp4")  # of overlay videos
DEFAULT_FPS = 30.0  # where a stream does not say its frame rate


class VideoError(InputError):
    """A video that cannot be opened or read; the message names it and says why."""


@dataclass(frozen=True)
class Frame:
    """Where a frame comes from: its video (a path, URL or camera index as given), index and time in seconds.
    The `source` of a Prediction made from a frame."""

    video: str
    index: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.video}#{self.index}"


@dataclass(frozen=True)
class VideoInfo:
    """What a video says about itself: frame size (height, width), frames per second, and its frame count
    (None for a stream or camera, which has no end known in advance)."""

    size: tuple[int, int]
    fps: float
    frames: int | None


class VideoReader:
    """The frames of a video file, URL or camera, in order, as HxWx3 uint8 RGB arrays."""

    def __init__(self, source: str | os.PathLike, live: bool = False) -> None:
        self.source = os.fspath(source)
        index = camera_index(self.source) if live else None
        self.capture = cv2.VideoCapture(index if index is not None else self.source)
        if not self.capture.isOpened():
            self.capture.release()
            what = f"camera {index}" if index is not None else "this video"
            raise VideoError(f"{redacted(self.source)}: OpenCV cannot open {what}")
        w, h = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if w < 1 or h < 1:
            self.close()
            raise VideoError(f"{redacted(self.source)}: no frame size (not a video OpenCV can decode)")
        if w * h > MAX_IMAGE_PIXELS:
            self.close()
            raise VideoError(f"{redacted(self.source)}: {w}x{h} frames are more than {MAX_IMAGE_PIXELS:,} pixels")
        self.info = VideoInfo((h, w), fps if 0 < fps <= 1000 else DEFAULT_FPS, None if live or count < 1 else count)
        self.stopped = False  # set from another thread (or a signal handler) to end a stream early

    def frames(self) -> Iterator[tuple[Frame, np.ndarray]]:
        """(where, RGB frame) until the video ends, a frame cannot be decoded, or `stopped` is set."""
        index = 0
        try:
            while not self.stopped:
                ok, bgr = self.capture.read()
                if not ok or bgr is None:
                    return
                if bgr.shape[:2] != self.info.size:  # a stream that changes size mid-way: keep the first size
                    bgr = cv2.resize(bgr, self.info.size[::-1], interpolation=cv2.INTER_AREA)
                yield Frame(redacted(self.source), index, index / self.info.fps), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            self.close()

    def close(self) -> None:
        self.capture.release()


class VideoWriter:
    """One output video written under a temporary name; `finish()` renames it into place, `abort()` removes it."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], lossless: bool, tag: str = "") -> None:
        fourcc, container = LOSSLESS if lossless else LOSSY
        self.path = Path(path)
        contained_folder(self.path.parent)
        prefix = f".{self.path.name}.{tag}." if tag else f".{self.path.name}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + container, dir=self.path.parent)
        os.close(fd)
        os.chmod(tmp, NEW_FILE_MODE)
        self.tmp = Path(tmp)
        self.size = size
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (size[1], size[0]))
        if not self.writer.isOpened():
            self.abort()
            raise OSError(f"OpenCV cannot write {fourcc} video here ({self.path.name})")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def finish(self) -> None:
        self.writer.release()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.release() if hasattr(self, "writer") else None
        self.tmp.unlink(missing_ok=True)


def read_video(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Every frame of a video file as RGB (for reading back what was written)."""
    for _, frame in VideoReader(path).frames():
        yield frame

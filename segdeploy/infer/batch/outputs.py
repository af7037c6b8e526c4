"""The files `segdeploy batch` writes per image and per video (README: "Run over folders and files", "Videos"):
their names under --out, their encodings, and atomic writes that tell a full --out (OutputWriteError: the run
stops) from a problem of one file (OSError: that image fails). A file that exists is whole: each is written to a
temporary name beside its target, tagged with its writer (segtrain.common.files.owner_tag), and renamed into
place."""

from __future__ import annotations

import errno
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segdeploy.infer.storage import StoreWriteError, is_remote, location, put, shown
from segtrain.common.errors import InputError, RunError
from segtrain.common.files import atomic_write_bytes, owner_tag

# Per-image outputs, by --save name; the mask is always written (it carries the record).
OUTPUT_SUFFIXES = {"mask": ".mask.png", "overlay": ".overlay.jpg", "color": ".color.png",
                   "confidence": ".confidence.png"}
# Per-video outputs: the mask video is the colour mask (lossless), so "color" adds no file; "frames" writes each
# frame's image outputs into a folder instead; the record (what a rerun resumes from) is written last.
VIDEO_SUFFIXES = {"mask": ".mask.mkv", "overlay": ".overlay.mp4", "confidence": ".confidence.mkv"}
FRAMES_SUFFIX, RECORD_SUFFIX = ".frames", ".record.json"
SAVE_CHOICES = ("mask", "overlay", "color", "confidence", "rle", "frames")
DEFAULT_SAVE = ("mask", "overlay")
LEGEND_NAME = "legend.png"
OVERLAY_JPEG_QUALITY = 92


class SaveError(InputError):
    """A bad --save list."""


def resolve_save(items: Iterable[str]) -> tuple[str, ...]:
    """The --save names in SAVE_CHOICES order, with the mask added (it is always written)."""
    chosen = {str(item).strip() for item in items if str(item).strip()}
    unknown = sorted(chosen - set(SAVE_CHOICES))
    if unknown:
        raise SaveError(f"--save: unknown {', '.join(unknown)}; choose from {', '.join(SAVE_CHOICES)}")
    return tuple(k for k in SAVE_CHOICES if k in chosen | {"mask"})


@dataclass(frozen=True)
class OutputPaths:
    """The output files of one input: kind -> path. An image's: mask, overlay, color, confidence (its mask holds
    the record); a video's: mask, overlay, confidence videos or a frames folder, and its record file."""

    files: dict[str, Path]

    @property
    def mask(self) -> Path:
        return self.files["mask"]

    @property
    def record(self) -> Path:
        """The file whose record says the outputs are complete (an image's mask, a video's record file)."""
        return self.files.get("record", self.files.get("mask"))

    @property
    def folder(self) -> Path:
        return self.record.parent

    def as_dict(self, root: Path) -> dict[str, str]:
        return {kind: path.relative_to(root).as_posix() for kind, path in self.files.items()}


def output_paths(out_dir: Path, rel: Path, save: Sequence[str] = tuple(OUTPUT_SUFFIXES)) -> OutputPaths:
    """Per-image output files of the input at `rel` (relative to its folder), mirrored under `out_dir`."""
    base = location(out_dir) / Path(rel).as_posix()
    return OutputPaths({kind: base.with_name(base.name + suffix) for kind, suffix in OUTPUT_SUFFIXES.items()
                        if kind in save or kind == "mask"})


def video_output_paths(out_dir: Path, rel: Path, save: Sequence[str] = DEFAULT_SAVE) -> OutputPaths:
    """A video's outputs at `rel` under `out_dir`: a video per chosen kind (the mask always), or with "frames" a
    folder of per-frame files; the record file last."""
    base = location(out_dir) / Path(rel).as_posix()
    files = ({"frames": base.with_name(base.name + FRAMES_SUFFIX)} if "frames" in save else
             {kind: base.with_name(base.name + suffix) for kind, suffix in VIDEO_SUFFIXES.items()
              if kind in save or kind == "mask"})
    return OutputPaths({**files, "record": base.with_name(base.name + RECORD_SUFFIX)})


def frame_paths(frames_dir: Path, index: int, save: Sequence[str]) -> OutputPaths:
    """The image outputs of frame `index` in a video's frames folder: 000000.mask.png, 000000.overlay.jpg, ..."""
    return output_paths(frames_dir, Path(f"{index:06d}"), save)


def encode_mask(mask: np.ndarray, palette: Sequence[Sequence[int]], text: Mapping[str, str] | None = None) -> bytes:
    """HxW uint8 class mask -> indexed PNG bytes with `palette`; `text`: PNG text chunks (key -> Latin-1 text)."""
    from PIL import PngImagePlugin

    h, w = mask.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    im.putpalette([v for colour in palette for v in colour])
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
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


def confidence_palette(classes: int) -> np.ndarray:
    """256x3 uint8 RGB colours of confidence values 0..255 for a model of `classes` classes: OpenCV's perceptual
    'viridis' map stretched over the values a winner can have (255/classes, a tie of all, up to 255), so the
    confidence of a few classes is not a near-white grey; values below that range take the lowest colour."""
    values = np.arange(256, dtype=np.float64) / 255.0
    low = 1.0 / max(classes, 1)
    ramp = np.clip((values - low) / max(1.0 - low, 1e-9), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(ramp * 255).astype(np.uint8).reshape(256, 1), cv2.COLORMAP_VIRIDIS)
    return bgr.reshape(256, 3)[:, ::-1].copy()


def encode_confidence(confidence: np.ndarray, classes: int) -> bytes:
    """HxW probabilities -> indexed PNG: pixel value = round(255 x probability), shown through confidence_palette."""
    grey = confidence_to_grey(confidence)
    h, w = grey.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(grey).tobytes())
    im.putpalette(confidence_palette(classes).ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


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
    """--out can take no more (DEVICE_ERRNOS), or a file of the run's own cannot be written: the run stops."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.path, self.errno, self.reason = location(path), error.errno, error.strerror or str(error)
        super().__init__(f"{shown(path)}: cannot write it ({self.reason})")


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary name tagged with this process and rename it into place; an object in an object
    store in one request (segdeploy.infer.storage.put), which is atomic there.

    OutputWriteError when the device takes no more writes (see the module docstring), or when the store refuses
    the object; OSError otherwise.
    """
    if is_remote(path):
        try:
            put(path, data)
        except StoreWriteError as e:
            raise OutputWriteError(path, e) from e
        return
    try:
        atomic_write_bytes(path, lambda f: f.write(data), tag=owner_tag())
    except OSError as e:
        if e.errno in DEVICE_ERRNOS:
            raise OutputWriteError(path, e) from e
        raise


RUN_RECORD_KEY = "segdeploy.infer.batch"  # the mask's PNG text chunk that holds its record (resume.py; a format)


def is_run_mask(path: str | Path) -> bool:
    """Whether `path` is a mask `segdeploy batch` wrote: named <input>.mask.png and carrying its record."""
    if not str(path).endswith(OUTPUT_SUFFIXES["mask"]):
        return False
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and RUN_RECORD_KEY in im.info
    except (OSError, ValueError, SyntaxError):
        return False


def is_run_output(path: str | Path) -> bool:
    """Whether `path` is an output of an earlier `segdeploy batch` run (so never an input): a mask carrying its
    record, an overlay, colour or confidence image beside such a mask, or legend.png in a folder with one."""
    path = Path(path)
    name = path.name
    if name == LEGEND_NAME:
        try:
            return any(is_run_mask(p) for p in path.parent.glob("*" + OUTPUT_SUFFIXES["mask"]))
        except OSError:
            return False
    for suffix in OUTPUT_SUFFIXES.values():
        if name.endswith(suffix) and len(name) > len(suffix):
            return is_run_mask(path.with_name(name[:-len(suffix)] + OUTPUT_SUFFIXES["mask"]))
    return False


def read_mask(path: Path) -> np.ndarray:
    """Class indices of a mask PNG written by `encode_mask`."""
    return decode_mask(path.read_bytes(), shown(path))


def decode_mask(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Class indices of the bytes of a mask PNG written by `encode_mask`."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode != "P":
            raise ValueError(f"{name}: expected an indexed (P) PNG, found mode {im.mode}")
        return np.asarray(im)

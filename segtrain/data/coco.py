"""COCO-format splits: finding them, filtering to the target categories, images and masks (torch-free).

Every command reads datasets through CocoSplit, so its rules cover them all: labels.json is
checked once at load (segtrain.data.coco_schema); an image path must resolve inside the split's
image folder; a problem in one image or annotation skips it and is recorded in
`CocoSplit.problems`, one that makes the split unusable raises `DataError`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segtrain.common.errors import InputError, printable
from segtrain.common.files import atomic_write_bytes, folder_problem, user_cache_dir
from segtrain.contract import BACKGROUND, DEFAULT_CATEGORIES, IGNORE_INDEX
from segtrain.data.coco_schema import LabelsError, validate_labels
from segtrain.data.images import ImageReadError, image_size, load_image, max_image_pixels
from segtrain.data.rasterize import AnnotationError, TargetAnnotation, render_mask

SPLIT_ALIASES = {"validation": ("validation", "val"), "val": ("validation", "val"),
                 "train": ("train",), "test": ("test",)}
MASK_CACHE_VERSION = "1"


class DataError(InputError):
    """A dataset or split that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    file_name: str
    path: Path
    height: int
    width: int
    exif: bool  # apply EXIF orientation to match the annotations' pixel grid
    anns: tuple[TargetAnnotation, ...]


def resolve_split(root: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of a split under `root`.

    Accepts `<root>/<split>/{labels.json,data/}` (with `val/` for `validation/`) and the classic
    `<root>/<split>2017/` + `<root>/annotations/instances_<split>2017.json` layout.
    """
    root = Path(root)
    if (problem := folder_problem(root, "dataset folder")) is not None:
        raise DataError(f"{root}: {problem}")
    names = SPLIT_ALIASES.get(split, (split,))
    for name in names:
        if (root / name).is_dir():
            return root / name / "data", root / name / "labels.json"
    for name in (*names, "val" if split == "validation" else split):
        ann = root / "annotations" / f"instances_{name}2017.json"
        if ann.is_file():
            return root / f"{name}2017", ann
    raise DataError(f"{root}: no '{split}' split (expected {root / names[0]}/labels.json and data/)")


def resolve_categories(selection: Sequence[str | int] | None,
                       file_categories: Sequence[dict], source: Path) -> tuple[list[tuple[int, str]], list[str]]:
    """Target categories as (COCO id, name), from names or ids; returns (categories, warnings)."""
    by_id = {int(c["id"]): str(c["name"]) for c in file_categories}
    by_name = {name.lower(): cid for cid, name in by_id.items()}
    default_by_name = {name: cid for cid, name in DEFAULT_CATEGORIES}
    chosen: list[tuple[int, str]] = []
    notes: list[str] = []
    for item in selection or [cid for cid, _ in DEFAULT_CATEGORIES]:
        key = str(item).strip()
        if key.isdigit():
            cid = int(key)
            name = by_id.get(cid) or dict(DEFAULT_CATEGORIES).get(cid)
            if name is None:
                raise DataError(f"{source}: category id {cid} is not in labels.json and has no known name")
        else:
            cid = by_name.get(key.lower(), default_by_name.get(key.lower()))
            if cid is None:
                raise DataError(f"{source}: unknown category '{key}'{_suggestion(key, list(by_id.values()))}")
            name = by_id.get(cid, key)
        if cid not in by_id:
            notes.append(f"{source}: target category '{name}' (id {cid}) is absent from labels.json")
        if cid in (c for c, _ in chosen):
            raise DataError(f"{source}: category '{name}' selected twice")
        chosen.append((cid, name))
    if not chosen:
        raise DataError(f"{source}: no target categories selected")
    return chosen, notes


def _suggestion(name: str, known: list[str], listed: int = 12) -> str:
    """"; did you mean 'person'?" for a near miss, else the names labels.json has (the first `listed`)."""
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.75)
    if close:
        return f"; did you mean {' or '.join(repr(lowered[c]) for c in close)}?"
    names = sorted(known)
    shown = ", ".join(names[:listed]) + (f", ... ({len(names)} in all; `segtrain data DIR` lists them)"
                                         if len(names) > listed else "")
    return f"; labels.json has: {shown}"


def _read_labels(ann_file: Path) -> dict:
    """The parsed labels.json, checked against the shape the tools read; DataError naming the problem."""
    if not ann_file.is_file():
        reason = "not a regular file" if ann_file.exists() else "annotation file not found"
        raise DataError(f"{ann_file}: {reason}")
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{ann_file}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    except RecursionError as e:
        raise DataError(f"{ann_file}: JSON nested too deeply to be a COCO annotation file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{ann_file}: cannot read ({e})") from e
    try:
        validate_labels(data)
    except LabelsError as e:
        raise DataError(f"{ann_file}: {e}") from None
    return data


def contained_path(root: Path, file_name: str) -> Path:
    """`root`/`file_name` resolved (symlinks followed); ValueError unless it stays inside `root`.

    `root` must already be resolved. The returned path is the resolved one, so what is opened
    later is what was checked here.
    """
    try:
        path = (root / file_name).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte
        raise ValueError(f"cannot be resolved ({e})") from e
    if path == root:
        raise ValueError(f"names the image folder {root} itself, not an image in it")
    if not path.is_relative_to(root):
        raise ValueError(f"resolves to {path}, outside the image folder {root}")
    return path


class CocoSplit:
    """One split: the usable images, their target annotations, and the problems found."""

    def __init__(self, image_dir: str | Path, ann_file: str | Path,
                 categories: Sequence[str | int] | None = None, name: str | None = None,
                 cache_dir: str | Path | None = None, check_files: bool = True) -> None:
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        self.name = name or self.image_dir.parent.name
        self.skipped: list[tuple[str, str]] = []  # (image path, reason) of listed images left out
        data = _read_labels(self.ann_file)
        if (problem := folder_problem(self.image_dir, "image folder")) is not None:
            raise DataError(f"{self.image_dir}: {problem}")
        cats, self.problems = resolve_categories(categories, data["categories"], self.ann_file)
        self.categories = tuple(cats)
        self.classes = (BACKGROUND, *(n for _, n in cats))
        self.coco_ids = (0, *(c for c, _ in cats))
        self.listed = len(data["images"])
        self.records = self._build_records(data, check_files)
        self._cache = _mask_cache_dir(cache_dir, self.ann_file, self.coco_ids)

    @classmethod
    def open(cls, root: str | Path, split: str, categories: Sequence[str | int] | None = None,
             **kwargs) -> CocoSplit:
        image_dir, ann_file = resolve_split(root, split)
        return cls(image_dir, ann_file, categories, name=split, **kwargs)

    def _build_records(self, data: dict, check_files: bool) -> list[ImageRecord]:
        index = {cid: i + 1 for i, (cid, _) in enumerate(self.categories)}
        anns: dict[int, list[TargetAnnotation]] = {im["id"]: [] for im in data["images"]}
        for a in data["annotations"]:
            if a["category_id"] not in index:
                continue
            if a["image_id"] not in anns:
                self.problems.append(f"{self.ann_file}: annotation {a.get('id')} refers to missing image "
                                     f"{a['image_id']}")
                continue
            bbox = tuple(a["bbox"]) if "bbox" in a else None
            anns[a["image_id"]].append(TargetAnnotation(a.get("id", -1), index[a["category_id"]],
                                                        a.get("segmentation"), bbox))
        root, limit = self.image_dir.resolve(), max_image_pixels()
        records = []
        for im in data["images"]:
            rec = self._make_record(root, im, tuple(anns[im["id"]]), check_files, limit)
            if rec is not None:
                records.append(rec)
        if not records:
            raise DataError(f"{self.ann_file}: no usable images in split '{self.name}'"
                            + (f" (first problem: {self.problems[0]})" if self.problems else ""))
        return records

    def _make_record(self, root: Path, im: dict, anns: tuple, check_files: bool, limit: int) -> ImageRecord | None:
        h, w = im["height"], im["width"]
        try:
            path = contained_path(root, im["file_name"])
        except ValueError as e:
            return self._skip(self.image_dir / im["file_name"], str(e))
        if h * w > limit:
            return self._skip(path, f"labels.json says {w}x{h}, more than the limit of {limit:,} pixels")
        exif = False
        if check_files:
            try:
                if not path.is_file():
                    return self._skip(path, "not a regular file" if path.exists() else "image file missing")
            except OSError as e:  # a name longer than the file system allows, ...
                return self._skip(path, f"cannot be read ({e.strerror or e})")
            try:
                raw, rotated = image_size(path, exif=False), image_size(path, exif=True)
            except ImageReadError as e:
                return self._skip(path, str(e).removeprefix(f"{path}: "))
            if raw != (h, w):
                if rotated != (h, w):
                    return self._skip(path, f"image is {raw[1]}x{raw[0]} but labels.json says {w}x{h}")
                exif = True
        return ImageRecord(im["id"], im["file_name"], path, h, w, exif, anns)

    def _skip(self, path: Path, reason: str) -> None:
        path, reason = printable(path), printable(reason)  # a file name of labels.json may hold anything
        self.skipped.append((path, reason))
        self.problems.append(f"{path}: {reason}, skipped")

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, i: int) -> Path:
        return self.records[i].path

    def load_image(self, i: int, min_size: tuple[int, int] | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB in the annotations' pixel grid; raises ImageReadError.

        With `min_size` a JPEG may be decoded at a reduced size no smaller than it (for callers that
        only feed the pixels to a model: see segtrain.data.images); the record keeps the original size.
        """
        rec = self.records[i]
        image = load_image(rec.path, exif=rec.exif, min_size=min_size)
        scales = (1, 2, 4, 8) if min_size is not None else (1,)  # libjpeg's reduced decodes round up
        if all(image.shape[:2] != (-(-rec.height // s), -(-rec.width // s)) for s in scales):
            raise ImageReadError(f"{rec.path}: decoded size {image.shape[1]}x{image.shape[0]} "
                                 f"differs from labels.json {rec.width}x{rec.height}")
        return image

    def load_mask(self, i: int) -> np.ndarray:
        """uint8 HxW class mask (0 background, 1..K targets, 255 ignore), cached on disk."""
        rec = self.records[i]
        cached = self._cache / f"{rec.image_id}.png" if self._cache else None
        if cached is not None and cached.is_file():
            mask = cv2.imread(str(cached), cv2.IMREAD_UNCHANGED)
            if mask is not None and self._usable_mask(mask, rec):
                return mask  # else damaged or foreign: rasterised again and rewritten
        mask = self.render(i)[0]
        if cached is not None:
            _write_png_quietly(cached, mask)
        return mask

    def _usable_mask(self, mask: np.ndarray, rec: object) -> bool:
        """A cached mask of this image's size whose values are class indices of this split or the ignore index."""
        if mask.dtype != np.uint8 or mask.shape != (rec.height, rec.width):
            return False
        values = np.bincount(mask.ravel(), minlength=256)
        return not values[len(self.coco_ids):IGNORE_INDEX].any() and not values[IGNORE_INDEX + 1:].any()

    def render(self, i: int) -> tuple[np.ndarray, list[str]]:
        """Rasterise the record's annotations (no cache): (mask, per-annotation problems)."""
        rec = self.records[i]
        try:
            return render_mask(rec.anns, rec.height, rec.width, IGNORE_INDEX)
        except AnnotationError as e:
            # No bbox to fall back on: the whole image is unknown rather than background.
            return np.full((rec.height, rec.width), IGNORE_INDEX, np.uint8), [str(e)]


def _mask_cache_dir(cache_dir: str | Path | None, ann_file: Path, coco_ids: tuple[int, ...]) -> Path | None:
    """A cache folder keyed by the annotation file's identity and the category selection."""
    base = user_cache_dir(cache_dir)
    if base is None:
        return None
    st = ann_file.stat()
    key = f"{MASK_CACHE_VERSION}|{ann_file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{coco_ids}|{IGNORE_INDEX}"
    return Path(base) / "masks" / hashlib.sha1(key.encode()).hexdigest()[:16]


def _write_png_quietly(path: Path, mask: np.ndarray) -> None:
    """Best effort: a cache that cannot be written only costs speed."""
    ok, buf = cv2.imencode(".png", mask)
    if not ok:
        return
    try:
        atomic_write_bytes(path, lambda f: f.write(buf.tobytes()))
    except OSError as e:
        warnings.warn(f"mask cache not writable ({e}); masks will be re-rasterised", stacklevel=2)

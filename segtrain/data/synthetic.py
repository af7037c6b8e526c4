"""An embedded synthetic COCO dataset for the offline demo and fast tests (torch-free).

Each image holds a textured background and a few shapes, one kind per target class (person:
tall ellipse, cat: triangle, sports ball: small disc, book: rectangle) with a distinct colour, so
a small model can learn it in minutes on a CPU. Every split holds all four classes, several
image sizes, negatives, a distractor category the default selection filters out ("dog"), and
crowd annotations stored as uncompressed RLE like COCO's. Deterministic by seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from segtrain.common.errors import InputError, RunError
from segtrain.common.files import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from segtrain.contract import DEFAULT_CATEGORIES

SIZES = ((96, 128), (128, 96), (112, 112), (80, 144))  # (height, width)
SPLITS = {"train": 40, "validation": 12, "test": 12}
DISTRACTOR = (18, "dog")
COLOURS = {1: (200, 60, 50), 17: (60, 190, 70), 37: (235, 235, 235), 84: (50, 80, 200), 18: (140, 100, 40)}


def rle_encode(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE: run lengths in column-major order, starting with a run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"counts": [int(r) for r in runs], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _shape_polygon(kind: int, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Integer polygon (N x 2, x/y) of the shape that stands for COCO category `kind`."""
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    s = min(h, w)
    if kind == 1:  # person: a tall ellipse
        ax, ay = s * rng.uniform(0.08, 0.14), s * rng.uniform(0.22, 0.32)
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)
    elif kind == 17:  # cat: a triangle
        r = s * rng.uniform(0.15, 0.22)
        t = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    elif kind == 37:  # sports ball: a small disc
        r = s * rng.uniform(0.05, 0.08)
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    else:  # book or distractor: an axis-aligned rectangle
        bw, bh = s * rng.uniform(0.15, 0.3), s * rng.uniform(0.1, 0.2)
        pts = np.array([[cx - bw, cy - bh], [cx + bw, cy - bh], [cx + bw, cy + bh], [cx - bw, cy + bh]])
    pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
    return np.round(pts).astype(np.int32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.integers(60, 140, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    grad = (xx / max(w - 1, 1) * rng.uniform(-30, 30) + yy / max(h - 1, 1) * rng.uniform(-30, 30))[..., None]
    noise = rng.normal(0, 12, size=(h, w, 3))
    return np.clip(base + grad + noise, 0, 255).astype(np.uint8)


def _make_image(index: int, image_id: int, rng: np.random.Generator, ann_start: int) -> tuple[np.ndarray, list]:
    h, w = SIZES[index % len(SIZES)]
    image = _background(rng, h, w)
    kinds = [DEFAULT_CATEGORIES[index % 4][0]] if index % 5 != 4 else []  # every 5th image: a negative
    kinds += [int(k) for k in rng.choice([1, 17, 37, 84, 18], size=rng.integers(0, 3))]
    anns = []
    for j, kind in enumerate(kinds):
        pts = _shape_polygon(kind, rng, h, w)
        shade = np.clip(np.array(COLOURS[kind]) + rng.integers(-20, 21, 3), 0, 255)
        cv2.fillPoly(image, [pts], tuple(int(c) for c in shade))
        x, y, bw, bh = cv2.boundingRect(pts)
        seg: object = [[float(v) for v in pts.ravel()]]
        crowd = 0
        if kind == 1 and j == 0 and index % 7 == 3:  # some people become a crowd region stored as RLE
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [pts], 1)
            seg, crowd = rle_encode(m), 1
        anns.append({"id": ann_start + j, "image_id": image_id, "category_id": kind, "segmentation": seg,
                     "area": float(cv2.contourArea(pts)), "bbox": [float(x), float(y), float(bw), float(bh)],
                     "iscrowd": crowd})
    return image, anns


def make_sample_dataset(root: str | Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """Write a synthetic COCO dataset under `root` (train/validation/test) and return `root`.

    InputError when `root` cannot be written (a file, a read-only place), RunError when a write fails midway.
    """
    root = Path(root)
    try:
        ensure_writable_dir(root)
    except OSError as e:
        raise InputError(f"{root}: cannot write a dataset there ({e.strerror or type(e).__name__})") from e
    try:
        return _write_sample_dataset(root, seed, sizes)
    except OSError as e:
        raise RunError(f"{root}: writing the dataset failed ({e.strerror or type(e).__name__})") from e


def _write_sample_dataset(root: Path, seed: int, sizes: dict[str, int] | None) -> Path:
    categories = [{"id": cid, "name": name, "supercategory": "thing"}
                  for cid, name in sorted([*DEFAULT_CATEGORIES, DISTRACTOR])]
    image_id = ann_id = 1
    for s_index, (split, count) in enumerate((sizes or SPLITS).items()):
        rng = np.random.default_rng([seed, s_index])
        images, anns = [], []
        for i in range(count):
            image, image_anns = _make_image(i, image_id, rng, ann_id)
            name = f"{split}_{i:04d}." + ("png" if i % 6 == 5 else "jpg")
            ext = ".png" if name.endswith(".png") else ".jpg"
            params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
            ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
            assert ok, "OpenCV failed to encode a synthetic image"
            atomic_write_bytes(root / split / "data" / name, lambda f, b=buf: f.write(b.tobytes()))
            images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
            anns += image_anns
            image_id += 1
            ann_id += len(image_anns)
        labels = {"info": {"description": f"segtrain synthetic sample, seed {seed}"}, "licenses": [],
                  "categories": categories, "images": images, "annotations": anns}
        atomic_write_text(root / split / "labels.json", json.dumps(labels))
    return root

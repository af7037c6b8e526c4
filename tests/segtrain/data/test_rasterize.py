"""Geometry is checked before pycocotools' C code sees it: no segfault, no mask from uninitialised memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segtrain.contract import IGNORE_INDEX
from segtrain.data.rasterize import AnnotationError, TargetAnnotation, decode_segmentation, render_mask

CODE = Path(__import__("segtrain").__file__).resolve().parents[1]  # the checkout whose code is under test
H, W = 20, 30


def split_with(root: Path, segmentation: object) -> Path:
    """A train split of one 30x20 image with one person annotation of `segmentation` (bbox 2,3,6x6)."""
    (root / "train" / "data").mkdir(parents=True)
    Image.new("RGB", (W, H), (90, 90, 90)).save(root / "train" / "data" / "a.png")
    labels = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 6, 6],
                               "segmentation": segmentation}],
              "categories": [{"id": 1, "name": "person"}]}
    (root / "train" / "labels.json").write_text(json.dumps(labels))
    return root


def test_a_huge_polygon_coordinate_is_reported_not_a_segfault(tmp_path: Path) -> None:
    """In a subprocess: on the unchecked code pycocotools dies with SIGSEGV and prints nothing."""
    root = split_with(tmp_path, [[0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]])
    env = {"PYTHONPATH": str(CODE), "SEGTRAIN_CACHE_DIR": "off", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "segtrain", "data", str(root)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-500:])
    assert "annotation 1: polygon x coordinate 1000000000.0 is far outside the image (allowed -30 to 60); " \
           "its bounding box is ignored (255)" in run.stdout


@pytest.mark.parametrize(("segmentation", "reason"), [
    ([[0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]], "polygon x coordinate 1000000000.0 is far outside the image"),
    ([[0, 0, 5, 0, 5, -50]], "polygon y coordinate -50 is far outside the image (allowed -20 to 40)"),
    ([[0, 0, float("nan"), 0, 5, 5]], "polygon x coordinate nan is not finite"),
    ([[0, 0, 10**400, 0, 5, 5]], "is far outside the image"),
    ([[0, 0, True, 0, 5, 5]], "polygon with non-numeric coordinates"),
    ([[0, 0, 59, 39] * 20_000], "polygon outline of"),
    ({"size": [H, W], "counts": [0, -5, H * W + 5]}, "malformed RLE (negative count)"),
    ({"size": [H, W], "counts": [10, 20]}, "malformed RLE (counts add up to 30 pixels, the image has 600)"),
    ({"size": [H, W], "counts": [0, 10**12]}, "counts add up to 1000000000000 pixels"),
    ({"size": [H, W], "counts": "0"}, "malformed RLE (counts add up to 0 pixels, the image has 600)"),
    ({"size": [H, W], "counts": "\x7f1"}, "malformed RLE (character 127 in counts string)"),
    ({"size": [H, W], "counts": "a"}, "counts string ends inside a value"),
    ({"size": [H, W], "counts": "a" * 10_000 + "1"}, "a value in the counts string is too long"),
    ({"size": [H, W], "counts": "é"}, "counts string is not ASCII"),
    ({"size": [H, W], "counts": 5}, "counts is neither a list nor a string"),
    ({"size": [H, W], "counts": [1.5, 598.5]}, "counts are not all integers"),
    ({"size": 600, "counts": [600]}, "RLE size 600 differs from image size [20, 30]"),
    ({"counts": [600]}, "RLE size None differs"),
    ("abc", "segmentation is neither a polygon list nor an RLE"),
])
def test_broken_geometry_is_an_annotation_error(segmentation: object, reason: str) -> None:
    with pytest.raises(AnnotationError) as err:
        decode_segmentation(segmentation, H, W)
    assert reason in str(err.value)
    mask, problems = render_mask([TargetAnnotation(1, 1, segmentation, (2, 3, 6, 6))], H, W)
    assert (mask[3:9, 2:8] == IGNORE_INDEX).all() and (mask == IGNORE_INDEX).sum() == 36
    assert problems == [f"annotation 1: {err.value}; its bounding box is ignored (255)"]


def test_rle_counts_that_do_not_cover_the_image_never_give_garbage(tmp_path: Path) -> None:
    """pycocotools decodes a short compressed RLE from uninitialised memory (values up to 252)."""
    from segtrain.data.coco import CocoSplit

    split = CocoSplit.open(split_with(tmp_path, {"size": [H, W], "counts": "0"}), "train", cache_dir="off")
    mask, problems = split.render(0)
    assert set(np.unique(mask).tolist()) <= {0, IGNORE_INDEX} and len(problems) == 1


def test_polygons_near_the_edge_still_decode() -> None:
    """Vertices a little outside the image are real annotation data: clipped, as pycocotools does."""
    mask = decode_segmentation([[-5, -5, W + 5, -5, W + 5, 10, -5, 10]], H, W)
    assert mask[:10].all() and not mask[10:].any()


def test_compressed_counts_agree_with_pycocotools_on_random_masks() -> None:
    from segtrain.data.rasterize import compressed_counts

    rng = np.random.default_rng(0)
    for trial in range(100):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if trial % 4 == 0:
            m[:] = trial % 8 == 0
        rle = mask_utils.encode(np.asfortranarray(m))
        flat = m.T.ravel()  # column-major, as COCO RLE counts run
        edges = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        expected = ([0] if flat[0] else []) + runs
        assert compressed_counts(rle["counts"]) == expected
        for counts in (rle["counts"].decode("ascii"), expected):
            np.testing.assert_array_equal(decode_segmentation({"size": [h, w], "counts": counts}, h, w), m.astype(bool))


def test_bounding_boxes_of_any_size_fall_back_cleanly() -> None:
    """The ignore-box fallback clips any finite box (found by the fuzz suite: a huge integer crashed np.isfinite)."""
    broken = [[0, 0, 1]]
    cases = (((0, 0, 0, -(2**63) - 1), None), ((-(10**400), 2, 10**400 + W, 3), (slice(2, 5), slice(0, W))),
             ((1e308, 1e308, 1e308, 1e308), None), ((5.5, 2.2, 1e308, 1.1), (slice(2, 4), slice(5, W))))
    for bbox, ignored in cases:
        if ignored is None:
            with pytest.raises(AnnotationError, match="no usable bbox"):
                render_mask([TargetAnnotation(1, 1, broken, bbox)], H, W)
            continue
        mask, _ = render_mask([TargetAnnotation(1, 1, broken, bbox)], H, W)
        expected = np.zeros((H, W), np.uint8)
        expected[ignored] = IGNORE_INDEX
        np.testing.assert_array_equal(mask, expected)

"""COCO data layer: masks from known annotations, category mapping, policies, bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from segtrain.cli import main
from segtrain.contract import IGNORE_INDEX
from segtrain.data.coco import CocoSplit, DataError, resolve_split
from segtrain.data.synthetic import rle_encode

CATS = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 37, "name": "sports ball"},
        {"id": 84, "name": "book"}, {"id": 18, "name": "dog"}]


def rect(x0, y0, x1, y1):
    """Polygon covering pixel columns x0..x1-1 and rows y0..y1-1 exactly (pycocotools convention)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def write_split(root: Path, anns: list[dict], size=(20, 30), images=None, name="train") -> Path:
    """A split folder with one grey image per entry of `images` (default: one 20x30 image, id 1)."""
    images = images or [{"id": 1, "file_name": "a.png", "height": size[0], "width": size[1]}]
    (root / name / "data").mkdir(parents=True, exist_ok=True)
    for im in images:
        Image.new("RGB", (im["width"], im["height"]), (90, 90, 90)).save(root / name / "data" / im["file_name"])
    for i, a in enumerate(anns):
        a.setdefault("id", i + 1)
        a.setdefault("image_id", 1)
        a.setdefault("iscrowd", 0)
    labels = {"images": images, "annotations": anns, "categories": CATS}
    (root / name / "labels.json").write_text(json.dumps(labels))
    return root


def test_polygons_and_rle_give_the_expected_pixels(tmp_path):
    crowd = np.zeros((20, 30), np.uint8)
    crowd[12:18, 20:28] = 1
    anns = [{"category_id": 1, "segmentation": rect(2, 3, 8, 9), "bbox": [2, 3, 6, 6]},
            {"category_id": 84, "segmentation": rect(10, 0, 14, 4), "bbox": [10, 0, 4, 4]},
            {"category_id": 17, "segmentation": rle_encode(crowd), "iscrowd": 1, "bbox": [20, 12, 8, 6]},
            {"category_id": 18, "segmentation": rect(0, 15, 5, 20), "bbox": [0, 15, 5, 5]}]  # dog: not a target
    split = CocoSplit.open(write_split(tmp_path, anns), "train")
    expected = np.zeros((20, 30), np.uint8)
    expected[3:9, 2:8] = 1      # person -> 1
    expected[0:4, 10:14] = 4    # book (COCO 84) -> 4
    expected[12:18, 20:28] = 2  # cat (COCO 17), crowd RLE -> 2
    np.testing.assert_array_equal(split.load_mask(0), expected)
    assert split.classes == ("background", "person", "cat", "sports ball", "book")


def test_compressed_rle_is_decoded(tmp_path):
    from pycocotools import mask as mask_utils

    m = np.zeros((20, 30), np.uint8, order="F")
    m[5:10, 5:25] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    split = CocoSplit.open(write_split(tmp_path, [{"category_id": 37, "segmentation": rle, "bbox": [5, 5, 20, 5]}]),
                           "train")
    np.testing.assert_array_equal(split.load_mask(0), m * 3)


def test_overlap_of_different_classes_is_ignored_same_class_kept(tmp_path):
    anns = [{"category_id": 1, "segmentation": rect(0, 0, 10, 10), "bbox": [0, 0, 10, 10]},
            {"category_id": 1, "segmentation": rect(5, 5, 15, 15), "bbox": [5, 5, 10, 10]},
            {"category_id": 17, "segmentation": rect(8, 8, 20, 12), "bbox": [8, 8, 12, 4]}]
    mask = CocoSplit.open(write_split(tmp_path, anns), "train").load_mask(0)
    expected = np.zeros((20, 30), np.uint8)
    expected[0:10, 0:10] = 1
    expected[5:15, 5:15] = 1
    expected[8:12, 8:20] = 2
    expected[8:12, 8:15] = IGNORE_INDEX  # person and cat both claim these
    np.testing.assert_array_equal(mask, expected)


def test_category_selection_by_name_and_id_sets_the_order(tmp_path):
    anns = [{"category_id": 18, "segmentation": rect(0, 0, 4, 4), "bbox": [0, 0, 4, 4]},
            {"category_id": 1, "segmentation": rect(10, 10, 12, 12), "bbox": [10, 10, 2, 2]}]
    split = CocoSplit.open(write_split(tmp_path, anns), "train", categories=["dog", "1"])
    assert split.classes == ("background", "dog", "person") and split.coco_ids == (0, 18, 1)
    mask = split.load_mask(0)
    assert (mask[0:4, 0:4] == 1).all() and (mask[10:12, 10:12] == 2).all() and mask.sum() == 16 + 2 * 4
    with pytest.raises(DataError, match=r"unknown category 'unicorn'; labels.json has: "):
        CocoSplit.open(tmp_path, "train", categories=["unicorn"])
    with pytest.raises(DataError, match=r"unknown category 'persn'; did you mean 'person'\?$"):
        CocoSplit.open(tmp_path, "train", categories=["persn"])


def test_an_unknown_category_among_eighty_is_a_suggestion_not_a_list_of_eighty(coco_mini):
    with pytest.raises(DataError) as error:
        CocoSplit.open(coco_mini, "validation", categories=["persn", "cat"])
    assert str(error.value).endswith("unknown category 'persn'; did you mean 'person'?")
    with pytest.raises(DataError) as error:
        CocoSplit.open(coco_mini, "validation", categories=["xylophone"])
    assert "..., (80 in all; `segtrain data DIR` lists them)" not in str(error.value)
    assert str(error.value).endswith(", ... (80 in all; `segtrain data DIR` lists them)")


def test_short_polygon_ignores_its_bbox_and_is_reported(tmp_path):
    anns = [{"category_id": 1, "segmentation": [[1, 1, 5, 1]], "bbox": [1, 1, 4, 3]},
            {"category_id": 84, "segmentation": rect(10, 10, 12, 12), "bbox": [10, 10, 2, 2]}]
    split = CocoSplit.open(write_split(tmp_path, anns), "train")
    mask, problems = split.render(0)
    assert (mask[1:4, 1:5] == IGNORE_INDEX).all() and (mask[10:12, 10:12] == 4).all()
    assert problems == ["annotation 1: polygon with 2 points (needs at least 3); its bounding box is ignored (255)"]


def test_validation_alias_and_classic_layout(tmp_path):
    write_split(tmp_path / "a", [], name="val")
    assert resolve_split(tmp_path / "a", "validation")[1] == tmp_path / "a" / "val" / "labels.json"
    classic = tmp_path / "b"
    write_split(classic, [], name="train2017")
    (classic / "annotations").mkdir()
    (classic / "train2017" / "labels.json").rename(classic / "annotations" / "instances_train2017.json")
    for f in (classic / "train2017" / "data").iterdir():
        f.rename(classic / "train2017" / f.name)
    split = CocoSplit.open(classic, "train")
    assert len(split) == 1 and split.image_dir == classic / "train2017"


def test_coco_mini_counts_match_an_independent_count(coco_mini):
    targets = {1: 1, 17: 2, 37: 3, 84: 4}
    counts = {}
    for name in ("train", "validation", "test"):
        labels = json.loads((coco_mini / name / "labels.json").read_text())
        independent = Counter(targets[a["category_id"]] for a in labels["annotations"] if a["category_id"] in targets)
        split = CocoSplit.open(coco_mini, name)
        counts[name] = Counter(a.class_index for r in split.records for a in r.anns)
        assert counts[name] == independent
        assert len(split) == len(labels["images"]) and split.problems == []
    assert counts["train"] == Counter({1: 260, 4: 80, 2: 8, 3: 3})  # the figures coco-mini's README gives


def test_coco_mini_masks_have_image_size_and_valid_values(coco_mini):
    split = CocoSplit.open(coco_mini, "validation")
    seen = set()
    for i in range(len(split)):
        mask = split.load_mask(i)
        assert mask.shape == split.load_image(i).shape[:2] == (split.records[i].height, split.records[i].width)
        seen |= set(np.unique(mask).tolist())
    assert seen <= {0, 1, 2, 3, 4, 255} and {0, 1, 2, 3, 4} <= seen


# ------------------------------------------------------------------------------------------
# Bad input through `segtrain data`: one line naming the file, the right exit code.


def run_data(root: Path):
    return CliRunner().invoke(main, ["data", str(root)])


def test_missing_folder(tmp_path):
    res = run_data(tmp_path / "nope")
    assert res.exit_code == 2 and f"{tmp_path / 'nope'}: dataset folder not found" in res.output
    assert "Traceback" not in res.output


def test_missing_labels_json(tmp_path):
    (tmp_path / "train" / "data").mkdir(parents=True)
    res = run_data(tmp_path)
    assert res.exit_code == 2
    assert f"{tmp_path / 'train' / 'labels.json'}: annotation file not found" in res.output


def test_malformed_json(tmp_path):
    write_split(tmp_path, [])
    (tmp_path / "train" / "labels.json").write_text('{"images": [')
    res = run_data(tmp_path)
    assert res.exit_code == 2 and "labels.json: malformed JSON (line 1" in res.output


def test_per_image_problems_are_reported_and_skipped(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 20, "width": 30},
              {"id": 2, "file_name": "gone.png", "height": 20, "width": 30},
              {"id": 3, "file_name": "broken.png", "height": 20, "width": 30}]
    anns = [{"category_id": 1, "segmentation": rect(0, 0, 5, 5), "bbox": [0, 0, 5, 5]},
            {"category_id": 1, "image_id": 99, "segmentation": rect(0, 0, 5, 5), "bbox": [0, 0, 5, 5]},
            {"category_id": 84, "segmentation": [[1, 2, 3, 4]], "bbox": [1, 2, 2, 2]}]
    write_split(tmp_path, anns, images=images)
    (tmp_path / "train" / "data" / "gone.png").unlink()
    (tmp_path / "train" / "data" / "broken.png").write_bytes(b"not an image at all")
    res = run_data(tmp_path)
    assert res.exit_code == 0, res.output
    out = res.output
    assert "[train] 1 usable images of 3 listed" in out
    assert f"{tmp_path / 'train' / 'data' / 'gone.png'}: image file missing, skipped" in out
    assert "broken.png: cannot read image header" in out
    assert "annotation 2 refers to missing image 99" in out
    assert "annotation 3: polygon with 2 points (needs at least 3)" in out


def test_truncated_image_is_found_by_the_report(tmp_path):
    write_split(tmp_path, [], images=[{"id": 1, "file_name": "a.jpg", "height": 64, "width": 64},
                                      {"id": 2, "file_name": "b.jpg", "height": 128, "width": 128}])
    noisy = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "train" / "data" / "b.jpg", quality=95)
    data = (tmp_path / "train" / "data" / "b.jpg").read_bytes()
    (tmp_path / "train" / "data" / "b.jpg").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    res = run_data(tmp_path)
    assert res.exit_code == 0 and "[train] 1 usable images of 2 listed" in res.output
    assert "b.jpg: cannot decode" in res.output


def test_target_category_absent_is_a_warning(tmp_path):
    write_split(tmp_path, [])
    labels = json.loads((tmp_path / "train" / "labels.json").read_text())
    labels["categories"] = [c for c in labels["categories"] if c["id"] != 17]
    (tmp_path / "train" / "labels.json").write_text(json.dumps(labels))
    res = run_data(tmp_path)
    assert res.exit_code == 0
    assert "target category 'cat' (id 17) is absent from labels.json" in res.output


def test_split_without_usable_images_exits_2(tmp_path):
    write_split(tmp_path, [])
    (tmp_path / "train" / "data" / "a.png").unlink()
    res = run_data(tmp_path)
    assert res.exit_code == 2
    assert "[train] UNUSABLE" in res.output and "no usable images" in res.output


def test_report_on_coco_mini_prints_per_class_figures(coco_mini):
    res = run_data(coco_mini)
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert "[train] 154 usable images of 154 listed, 67 without any target" in lines
    person = next(line for line in lines if line.strip().startswith("person"))
    assert person.split()[1:3] == ["260", "75"]


@pytest.mark.parametrize("value", [7, 200, 254])  # class indices this split does not have (it has 0..4 and 255)
def test_a_cached_mask_with_values_out_of_range_is_rasterised_again(tmp_path, value):
    import cv2

    anns = [{"category_id": 1, "segmentation": rect(2, 3, 8, 9), "bbox": [2, 3, 6, 6]}]
    split = CocoSplit.open(write_split(tmp_path / "ds", anns), "train", cache_dir=tmp_path / "cache")
    good = split.load_mask(0)
    (cached,) = (tmp_path / "cache").rglob("1.png")
    damaged = good.copy()
    damaged[0, 0] = value
    cv2.imwrite(str(cached), damaged)
    again = CocoSplit.open(tmp_path / "ds", "train", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.load_mask(0), good)  # not trusted: made again from the annotations
    assert cv2.imread(str(cached), cv2.IMREAD_UNCHANGED).max() <= 4  # and rewritten

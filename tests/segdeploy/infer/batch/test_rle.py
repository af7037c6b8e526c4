"""`--save rle` and `--save confidence`: COCO results that pycocotools loads and that decode to the written masks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from colour_models import batch_cli, half_image, save, save_exif_rotated
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from segdeploy.infer.batch.outputs import output_paths, read_mask
from segdeploy.infer.predictor import Predictor
from segtrain.data.synthetic import rle_encode


def _inputs(root: Path) -> list[str]:
    rng = np.random.default_rng(7)
    save(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), root / "noise.png")  # all three classes
    save(half_image(40, 60, axis=1), root / "sub" / "half.png")
    save(np.full((20, 30, 3), 40, np.uint8), root / "dark.png")  # background only: no entry
    return ["dark.png", "noise.png", "sub/half.png"]


def _labels(root: Path, names: list[str]) -> Path:
    """A labels.json listing the inputs with ids 101, 102, ... (one tiny annotation each)."""
    images, anns = [], []
    for i, name in enumerate(names):
        h, w = read_mask_shape(root / name)
        images.append({"id": 101 + i, "file_name": name, "height": h, "width": w})
        truth = np.zeros((h, w), np.uint8)
        truth[:2, :2] = 1
        anns.append({"id": i + 1, "image_id": 101 + i, "category_id": 1, "segmentation": rle_encode(truth),
                     "area": 4.0, "bbox": [0.0, 0.0, 2.0, 2.0], "iscrowd": 0})
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
    (root / "labels.json").write_text(json.dumps(doc))
    return root / "labels.json"


def read_mask_shape(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def test_rle_loads_with_coco_loadres_and_decodes_to_the_written_masks(model: Path, tmp_path: Path) -> None:
    names = _inputs(tmp_path / "in")
    labels = _labels(tmp_path / "in", names)
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--gt", labels,
                 "--save", "rle,confidence")
    assert res.exit_code == 0, res.output
    entries = json.loads((tmp_path / "out" / "predictions.json").read_text())
    coco = COCO(str(labels))
    results = coco.loadRes(str(tmp_path / "out" / "predictions.json"))
    assert len(results.getAnnIds()) == len(entries)
    ids = {name: 101 + i for i, name in enumerate(names)}
    predictor = Predictor(model)
    for name in names:
        mask = read_mask(output_paths(tmp_path / "out", Path(name)).mask)
        mine = [e for e in entries if e["image_id"] == ids[name]]
        present = [k for k in (1, 2) if (mask == k).any()]
        assert sorted(e["category_id"] for e in mine) == present, name  # COCO ids of the spec: 1 red, 2 green
        for e in mine:
            np.testing.assert_array_equal(mask_utils.decode(e["segmentation"]), mask == e["category_id"])
            ann = results.loadAnns(results.getAnnIds(imgIds=ids[name], catIds=e["category_id"]))[0]
            np.testing.assert_array_equal(results.annToMask(ann), mask == e["category_id"])
            # score: mean winning-class probability over the class's pixels
            confidence = predictor.predict(tmp_path / "in" / name).confidence
            assert e["score"] == pytest.approx(float(confidence[mask == e["category_id"]].mean()), abs=1e-5)
        # confidence.png: 255 x that probability, rounded
        with Image.open(output_paths(tmp_path / "out", Path(name), ("confidence",)).files["confidence"]) as im:
            assert im.mode == "L" and im.size == mask.shape[::-1]
            expected = np.rint(predictor.predict(tmp_path / "in" / name).confidence * 255)
            assert np.abs(np.asarray(im).astype(int) - expected).max() <= 1
    assert not [e for e in entries if e["image_id"] == ids["dark.png"]]


def test_without_gt_image_ids_are_file_names_and_a_rerun_rebuilds_the_file(model: Path, tmp_path: Path) -> None:
    names = _inputs(tmp_path / "in")
    assert batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--save", "rle").exit_code == 0
    first = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {e["image_id"] for e in first} == {"noise.png", "sub/half.png"}
    assert not output_paths(tmp_path / "out", Path(names[1]), ("overlay",)).files["overlay"].exists()
    # COCO accepts any hashable id: a dataset whose images are named by file name loads the results
    coco = COCO()
    coco.dataset = {"images": [{"id": n, "file_name": n} for n in names], "annotations": [],
                    "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
    coco.createIndex()
    assert len(coco.loadRes(copy.deepcopy(first)).getAnnIds()) == len(first)  # loadRes adds keys to what it gets
    (tmp_path / "out" / "predictions.json").unlink()
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--save", "rle")
    assert res.exit_code == 0 and "3 already done" in res.output, res.output
    assert json.loads((tmp_path / "out" / "predictions.json").read_text()) == first


def test_rle_of_an_exif_turned_photo_follows_the_grid_labels_json_describes(model: Path, tmp_path: Path) -> None:
    save_exif_rotated(half_image(40, 64, axis=1), tmp_path / "in" / "turned.jpg")  # stored 40 wide, 64 high
    labels = {"images": [{"id": 7, "file_name": "turned.jpg", "height": 64, "width": 40}], "annotations": [],
              "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--save", "rle", "--gt",
                 tmp_path / "labels.json")
    assert res.exit_code == 0, res.output
    (entry,) = json.loads((tmp_path / "out" / "predictions.json").read_text())
    written = read_mask(output_paths(tmp_path / "out", Path("turned.jpg")).mask)  # displayed: 40 high, 64 wide
    assert written.shape == (40, 64) and entry["segmentation"]["size"] == [64, 40]
    stored_grid = np.asarray(Image.fromarray(written).transpose(Image.Transpose.ROTATE_90))
    np.testing.assert_array_equal(mask_utils.decode(entry["segmentation"]), stored_grid == 1)

"""`--save rle` and `--save confidence`: COCO results that pycocotools loads and that decode to the written masks,
with COCO's image ids from --gt or --image-ids."""

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

from segdeploy.infer.batch.outputs import confidence_palette, output_paths, read_mask
from segdeploy.infer.predictor import Predictor
from segtrain.data.synthetic import rle_encode


def _inputs(root: Path) -> list[str]:
    rng = np.random.default_rng(7)
    save(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), root / "noise.png")  # all three classes
    save(half_image(40, 60, axis=1), root / "sub" / "half.png")
    save(np.full((20, 30, 3), 40, np.uint8), root / "dark.png")  # background only: its one entry
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
        present = [k for k in (0, 1, 2) if (mask == k).any()]
        assert sorted(e["category_id"] for e in mine) == present, name  # COCO ids of the spec: 0 background, 1, 2
        for e in mine:
            np.testing.assert_array_equal(mask_utils.decode(e["segmentation"]), mask == e["category_id"])
            ann = results.loadAnns(results.getAnnIds(imgIds=ids[name], catIds=e["category_id"]))[0]
            np.testing.assert_array_equal(results.annToMask(ann), mask == e["category_id"])
            # score: mean winning-class probability over the class's pixels
            confidence = predictor.predict(tmp_path / "in" / name).confidence
            assert e["score"] == pytest.approx(float(confidence[mask == e["category_id"]].mean()), abs=1e-5)
        # confidence.png: 255 x that probability, rounded, shown through a colour map
        with Image.open(output_paths(tmp_path / "out", Path(name), ("confidence",)).files["confidence"]) as im:
            assert im.mode == "P" and im.size == mask.shape[::-1]
            expected = np.rint(predictor.predict(tmp_path / "in" / name).confidence * 255)
            assert np.abs(np.asarray(im).astype(int) - expected).max() <= 1
            palette = np.asarray(im.getpalette()[:768]).reshape(256, 3)
            np.testing.assert_array_equal(palette, confidence_palette(3))
    (background,) = [e for e in entries if e["image_id"] == ids["dark.png"]]
    assert background["category_id"] == 0 and mask_utils.area(background["segmentation"]) == 20 * 30


def test_the_confidence_colours_span_what_a_winner_can_have() -> None:
    """With 3 classes a winner has at least 1/3: 85..255 must run the whole colour map, not 188..255 of grey."""
    colours = confidence_palette(3).astype(int)
    assert (colours[:86] == colours[0]).all()  # below 1/3: cannot happen, the lowest colour
    brightness = colours.sum(axis=1)
    assert brightness[255] - brightness[85] > 300  # dark purple to yellow
    assert len({tuple(c) for c in colours[85:]}) > 100
    assert np.abs(np.diff(brightness[85:])).max() < 20  # smooth


def test_all_background_still_gives_a_result_list_pycocotools_loads(model: Path, tmp_path: Path) -> None:
    save(np.full((20, 30, 3), 40, np.uint8), tmp_path / "in" / "dark.png")
    labels = _labels(tmp_path / "in", ["dark.png"])
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--image-ids", labels,
                    "--save", "rle")
    assert res.exit_code == 0, res.output
    results = COCO(str(labels)).loadRes(str(tmp_path / "out" / "predictions.json"))
    (ann,) = results.loadAnns(results.getAnnIds())
    assert ann["image_id"] == 101 and ann["category_id"] == 0 and ann["area"] == 600


def test_image_ids_come_from_an_image_info_file_and_unlisted_images_are_left_out(model: Path,
                                                                               tmp_path: Path) -> None:
    names = _inputs(tmp_path / "in")
    info = {"images": [{"id": 5000 + i, "file_name": n, "height": read_mask_shape(tmp_path / "in" / n)[0],
                        "width": read_mask_shape(tmp_path / "in" / n)[1]} for i, n in enumerate(names[1:])],
            "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}  # test-dev style: no annotations
    (tmp_path / "info.json").write_text(json.dumps(info))
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--image-ids",
                    tmp_path / "info.json", "--save", "rle")
    assert res.exit_code == 0, res.output
    assert f"predictions.json: 1 of 3 images are not in --image-ids {tmp_path / 'info.json'}: no entries" in res.output
    entries = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {e["image_id"] for e in entries} == {5000, 5001}
    coco = COCO()
    coco.dataset = {**info, "annotations": []}
    coco.createIndex()
    assert len(coco.loadRes(str(tmp_path / "out" / "predictions.json")).getAnnIds()) == len(entries)
    both = batch_cli(tmp_path / "in", "--out", tmp_path / "o2", "--model", model, "--image-ids", tmp_path / "info.json",
                     "--gt", tmp_path / "info.json", "--save", "rle")
    assert both.exit_code == 2 and "--gt gives the image ids already" in both.output


def test_without_ids_image_ids_are_file_names_it_says_so_and_a_rerun_rebuilds_the_file(model: Path,
                                                                                      tmp_path: Path) -> None:
    names = _inputs(tmp_path / "in")
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--save", "rle")
    assert res.exit_code == 0
    assert "image_id is each file's path (no --gt or --image-ids), which pycocotools' COCO.loadRes" in res.output
    first = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {e["image_id"] for e in first} == set(names)
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
    (entry,) = [e for e in json.loads((tmp_path / "out" / "predictions.json").read_text()) if e["category_id"] == 1]
    written = read_mask(output_paths(tmp_path / "out", Path("turned.jpg")).mask)  # displayed: 40 high, 64 wide
    assert written.shape == (40, 64) and entry["segmentation"]["size"] == [64, 40]
    stored_grid = np.asarray(Image.fromarray(written).transpose(Image.Transpose.ROTATE_90))
    np.testing.assert_array_equal(mask_utils.decode(entry["segmentation"]), stored_grid == 1)

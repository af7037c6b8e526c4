"""`segdeploy score`: COCO results of one region per class scored as COCO-Stuff scores them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import batch_cli, half_image, half_truth, save
from pycocotools import mask as mask_utils

from segdeploy.cli import main
from segdeploy.infer.score import ScoreError, score_results
from segtrain.data.synthetic import rle_encode


def _labels(root: Path, truths: dict[str, np.ndarray]) -> Path:
    images, anns = [], []
    for i, (name, truth) in enumerate(truths.items()):
        h, w = truth.shape
        images.append({"id": 10 + i, "file_name": name, "height": h, "width": w})
        for k in (1, 2):
            if (truth == k).any():
                anns.append({"id": len(anns) + 1, "image_id": 10 + i, "category_id": k,
                             "segmentation": rle_encode((truth == k).astype(np.uint8)), "area": 1.0,
                             "bbox": [0.0, 0.0, 1.0, 1.0], "iscrowd": 0})
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"},
                                                                   {"id": 3, "name": "blue"}]}
    (root / "labels.json").write_text(json.dumps(doc))
    return root / "labels.json"


@pytest.fixture
def run_out(model: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A batch run with --save rle over two photos whose masks equal their ground truth, and its labels.json."""
    save(half_image(40, 60, 1), tmp_path / "in" / "a.png")
    save(half_image(30, 20, 0), tmp_path / "in" / "b.png")
    labels = _labels(tmp_path, {"a.png": half_truth(40, 60, 1), "b.png": half_truth(30, 20, 0),
                                "c.png": np.ones((8, 8), np.uint8)})  # c.png was not run
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--save", "rle", "--image-ids",
                    labels)
    assert res.exit_code == 0, res.output
    return tmp_path / "out" / "predictions.json", labels


def test_perfect_semantic_masks_score_100_percent(run_out: tuple[Path, Path]) -> None:
    predictions, labels = run_out
    res = CliRunner().invoke(main, ["score", str(predictions), "--gt", str(labels)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "background      100.00%" in lines and "red             100.00%" in lines
    assert "green               n/a" in lines and "mIoU            100.00%" in lines
    assert "frequency-weighted IoU: 100.00%" in lines and "mean accuracy: 100.00%" in lines
    assert "2 images scored, 1 of labels.json without results" in lines
    doc = json.loads(CliRunner().invoke(main, ["score", str(predictions), "--gt", str(labels), "--json"]).output)
    assert doc["miou"] == 1.0 and doc["frequency_weighted_iou"] == 1.0 and doc["images_scored"] == 2
    assert doc["confusion_matrix"] == [[1500, 0, 0], [0, 1500, 0], [0, 0, 0]]


def test_scores_follow_the_confusion_matrix_and_uncovered_pixels_are_background(tmp_path: Path) -> None:
    truth = np.zeros((10, 10), np.uint8)
    truth[:, :6] = 1
    labels = _labels(tmp_path, {"x.png": truth})
    pred = np.zeros((10, 10), np.uint8)
    pred[:, :4] = 1  # 40 of the 60 red pixels, no false positive; only the red region is given
    rle = mask_utils.encode(np.asfortranarray(pred))
    entries = [{"image_id": 10, "category_id": 1, "score": 0.9,
                "segmentation": {"size": [10, 10], "counts": rle["counts"].decode("ascii")}}]
    (tmp_path / "predictions.json").write_text(json.dumps(entries))
    scores = score_results(tmp_path / "predictions.json", labels, ["red", "green"])
    np.testing.assert_array_equal(scores.confusion, [[40, 0, 0], [20, 40, 0], [0, 0, 0]])
    iou_bg, iou_red = 40 / 60, 40 / 60
    assert scores.metrics.miou == pytest.approx((iou_bg + iou_red) / 2)
    assert scores.frequency_weighted_iou == pytest.approx(0.4 * iou_bg + 0.6 * iou_red)
    assert scores.mean_accuracy == pytest.approx((1.0 + 40 / 60) / 2)
    assert scores.metrics.pixel_accuracy == pytest.approx(0.8)


@pytest.mark.parametrize(("entries", "message"), [
    ([{"image_id": 99, "category_id": 1, "segmentation": {"size": [10, 10], "counts": "0"}}],
     "[0].image_id 99 is not an image of"),
    ([{"image_id": "x.png", "category_id": 1, "segmentation": {"size": [10, 10], "counts": "0"}}],
     "predictions.json: [0].image_id: expected an integer"),
    ({"not": "a list"}, "predictions.json: (top level): expected a list of items, each a COCO result"),
])
def test_results_that_cannot_be_scored_are_one_line_errors(tmp_path: Path, entries: object, message: str) -> None:
    labels = _labels(tmp_path, {"x.png": np.zeros((10, 10), np.uint8)})
    (tmp_path / "predictions.json").write_text(json.dumps(entries))
    res = CliRunner().invoke(main, ["score", str(tmp_path / "predictions.json"), "--gt", str(labels),
                                    "--categories", "red"])
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_broken_regions_are_named_and_left_out(tmp_path: Path) -> None:
    labels = _labels(tmp_path, {"x.png": np.zeros((10, 10), np.uint8), "y.png": np.zeros((4, 4), np.uint8)})
    entries = [{"image_id": 10, "category_id": 1, "segmentation": {"size": [10, 10], "counts": "0;"}},  # 11 != 100
               {"image_id": 10, "category_id": 7, "segmentation": {"size": [10, 10], "counts": "0"}},
               {"image_id": 11, "category_id": 0, "segmentation": {"size": [5, 4], "counts": "0"}}]
    (tmp_path / "predictions.json").write_text(json.dumps(entries))
    scores = score_results(tmp_path / "predictions.json", labels, ["red"])
    assert scores.images_scored == 1 and scores.confusion.sum() == 100
    text = " | ".join(scores.problems)
    assert "image 10 (x.png): category 1: malformed RLE (counts add up to" in text
    assert "category 7 is not one of the classes scored" in text
    assert "image 11 (y.png): a result of size 4x5 for an image of 4x4, not scored" in text


def test_without_a_summary_beside_it_the_classes_must_be_named(tmp_path: Path) -> None:
    labels = _labels(tmp_path, {"x.png": np.zeros((10, 10), np.uint8)})
    (tmp_path / "predictions.json").write_text("[]")
    with pytest.raises(ScoreError, match="no summary.json beside it to read the model's classes from; name the "
                                         "model's classes with --categories"):
        score_results(tmp_path / "predictions.json", labels)

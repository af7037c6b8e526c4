"""`segdeploy batch --gt labels.json`: scores at original size, matched by file name, same as evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from colour_models import build_colour_model, half_image, half_truth, save, save_exif_rotated
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segdeploy.cli import main
from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.ground_truth import undo_exif_orientation
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.evaluate import evaluate_predictor
from segdeploy.infer.predictor import Predictor
from segdeploy.infer.score import score_results
from segtrain.contract import build_spec
from segtrain.data.synthetic import rle_encode


def _entry(image_id: int, name: str, truth: np.ndarray, category: int = 1) -> tuple[dict, dict]:
    h, w = truth.shape
    return ({"id": image_id, "file_name": name, "height": h, "width": w},
            {"id": image_id, "image_id": image_id, "category_id": category, "segmentation": rle_encode(truth),
             "area": float(truth.sum()), "bbox": [0.0, 0.0, float(w), float(h)], "iscrowd": 0})


def _dataset(root: Path) -> tuple[Path, list[tuple[np.ndarray, np.ndarray]]]:
    """Inputs, a labels.json and the (truth, expected prediction) pairs of the scored images."""
    pairs = []
    save(half_image(40, 64, 1), root / "a.png")  # predicted red: left half; truth: left three quarters
    truth_a = np.zeros((40, 64), np.uint8)
    truth_a[:, :48] = 1
    pairs.append((truth_a, half_truth(40, 64, 1)))
    save(half_image(48, 40, 0), root / "sub" / "b.png")
    pairs.append((half_truth(48, 40, 0), half_truth(48, 40, 0)))
    # Labels describe rot.jpg's stored pixel grid; the batch predicts in the displayed grid.
    save_exif_rotated(half_image(64, 96, 1), root / "rot.jpg")
    stored_truth = np.asarray(Image.fromarray(half_truth(64, 96, 1)).transpose(Image.Transpose.ROTATE_90))
    pairs.append((stored_truth, stored_truth))
    save(half_image(40, 40, 1), root / "no_truth.png")
    entries = [_entry(1, "a.png", truth_a), _entry(2, "sub/b.png", pairs[1][0]), _entry(3, "rot.jpg", stored_truth),
               _entry(4, "gone.png", np.ones((8, 8), np.uint8))]
    labels = {"images": [e[0] for e in entries], "annotations": [e[1] for e in entries],
              "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}, {"id": 9, "name": "other"}]}
    (root / "labels.json").write_text(json.dumps(labels))
    return root / "labels.json", pairs


def _iou(pairs: list[tuple[np.ndarray, np.ndarray]], k: int) -> float:
    truth = np.concatenate([t.ravel() for t, _ in pairs])
    pred = np.concatenate([p.ravel() for _, p in pairs])
    inter, union = np.sum((truth == k) & (pred == k)), np.sum((truth == k) | (pred == k))
    return inter / union if union else float("nan")


def test_gt_scores_matched_images_at_original_size(tmp_path: Path) -> None:
    model = build_colour_model(tmp_path / "colour.onnx")
    labels, pairs = _dataset(tmp_path / "in")
    config = BatchConfig(sources=tmp_path / "in", out_dir=tmp_path / "out", model=model, gt=labels,
                         workers=2, progress=False)
    report = run_batch(config, log=lambda m: None).ground_truth
    assert report.scored == 3 and report.without_truth == 1
    assert any("gone.png" in p for p in report.problems)
    iou = dict(zip(report.metrics.class_names, report.metrics.iou, strict=True))
    assert iou["background"] == pytest.approx(_iou(pairs, 0)) and iou["red"] == pytest.approx(_iou(pairs, 1))
    assert iou["red"] < 0.95 and np.isnan(iou["green"])  # a.png's truth is wider than its prediction
    assert report.metrics.miou == pytest.approx((_iou(pairs, 0) + _iou(pairs, 1)) / 2)
    assert report.metrics.pixels == sum(t.size for t, _ in pairs)
    # A rerun scores the saved masks of resumed images the same way.
    again = run_batch(config, log=lambda m: None)
    assert again.totals.resumed == 4 and again.ground_truth.metrics.to_dict() == report.metrics.to_dict()
    assert again.summary.to_dict()["ground_truth"]["miou"] == pytest.approx(report.metrics.miou, abs=1e-6)


def test_gt_prints_the_iou_table_and_rejects_labels_with_other_classes(tmp_path: Path) -> None:
    model = build_colour_model(tmp_path / "colour.onnx")
    labels, _ = _dataset(tmp_path / "in")
    res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                    "--model", str(model), "--gt", str(labels), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "3 images scored, 1 inputs without ground truth" in res.output
    assert "mIoU" in res.output and "red" in res.output
    data = json.loads(labels.read_text())
    data["categories"] = [{"id": 1, "name": "person"}, {"id": 2, "name": "green"}]
    labels.write_text(json.dumps(data))
    res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out2"),
                                    "--model", str(model), "--gt", str(labels), "--no-progress"])
    assert res.exit_code == 2 and "differ from the model's" in res.output, res.output


def _coco_model(path: Path) -> Path:
    """A 5-class 1x1-conv model with fixed random weights: poor, but with varied, real masks."""
    spec = build_spec("tiny", "conv1x1", image_size=64)
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (spec.num_classes, 3, 1, 1)).astype(np.float32)
    b = np.array([1.5, 0, 0, 0, 0], np.float32)  # mostly background, like a real model
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["logits"])], "coco",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", spec.num_classes, "H", "W"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, spec.to_metadata())
    onnx.save(model, str(path))
    return path


@pytest.mark.slow
def test_gt_on_coco_mini_validation_matches_evaluate_and_the_results_scorer(coco_mini: Path, tmp_path: Path) -> None:
    model_path = _coco_model(tmp_path / "coco.onnx")
    labels = coco_mini / "validation" / "labels.json"
    for tile in ("auto", 128):  # as trained (stretched, JPEGs decoded reduced), and tiled (decoded whole)
        predictor = Predictor(model_path, provider="cpu", runtime="onnxruntime", tile=tile)
        expected, split = evaluate_predictor(predictor, coco_mini, "validation")
        config = BatchConfig(sources=coco_mini / "validation" / "data", out_dir=tmp_path / f"out-{tile}",
                             model=model_path, gt=labels, runtime="onnxruntime", provider="cpu", tile=tile,
                             save=("mask", "rle"), progress=False)
        result = run_batch(config, log=lambda m: None)
        got = result.ground_truth
        assert got.scored == len(split) and not result.failures and 0.0 < expected.miou < 1.0
        same = ("miou", "pixel_accuracy", "iou", "pixels")  # exactly: the same masks
        assert {k: got.metrics.to_dict()[k] for k in same} == {k: expected.to_dict()[k] for k in same}, tile
        scores = score_results(tmp_path / f"out-{tile}" / "predictions.json", labels)
        np.testing.assert_array_equal(scores.confusion, got.confusion)  # COCO-Stuff's way, on the RLE results
        assert scores.images_scored == len(split) and scores.metrics.miou == got.metrics.miou
        freq = got.confusion.sum(1) / got.confusion.sum()
        iou = np.asarray(got.metrics.iou)
        assert scores.frequency_weighted_iou == pytest.approx(float(np.nansum(freq * iou)), abs=1e-12)
    assert (tmp_path / "out-128" / "summary.json").read_text() != (tmp_path / "out-auto" / "summary.json").read_text()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_undo_exif_orientation_inverts_pillows_exif_transpose(tmp_path: Path, orientation: int) -> None:
    from PIL import ImageOps

    raw = np.random.default_rng(orientation).integers(0, 5, size=(3, 5), dtype=np.uint8)
    im = Image.fromarray(raw)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif)
    with Image.open(path) as loaded:
        displayed = np.asarray(ImageOps.exif_transpose(loaded))
    np.testing.assert_array_equal(undo_exif_orientation(displayed, orientation), raw)


def test_a_replayed_mask_with_values_the_model_lacks_is_not_scored(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    labels, _ = _dataset(tmp_path / "in")
    model = build_colour_model(tmp_path / "colour.onnx")
    args = ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(model), "--gt",
            str(labels), "--no-progress", "--save", "mask"]
    assert CliRunner().invoke(main, args).exit_code == 0
    mask_path = tmp_path / "out" / "a.png.mask.png"
    with Image.open(mask_path) as im:
        info, values, palette = dict(im.info), np.asarray(im).copy(), im.getpalette()
    values[0, 0] = 200  # a class the 3-class model does not have
    damaged = Image.fromarray(values, mode="P")
    damaged.putpalette(palette + [0] * (768 - len(palette)))  # index 200 must have a colour to be kept
    text = PngImagePlugin.PngInfo()
    for key, value in info.items():
        if isinstance(value, str):
            text.add_text(key, value)
    damaged.save(mask_path, pnginfo=text)
    result = CliRunner().invoke(main, args)  # resumes: every mask is replayed against --gt
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert any("a.png: its mask holds class 200" in p for p in summary["ground_truth"]["problems"]), (
        summary["ground_truth"], [r.get("resumed") for r in summary["images"]], result.output)

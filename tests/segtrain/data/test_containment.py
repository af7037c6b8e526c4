"""Every labels.json image path must stay inside the split's image folder: `..`, absolute paths and symlinks out are
refused (reported and skipped like a missing image) by every command, and never opened."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from segtrain.data.coco import CocoSplit

INSIDE = ("a.png", "sub/../b.png", "inner-link.png")  # the last is a symlink to a.png: inside, so allowed


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    """(dataset root, the secret image outside it) with a validation split listing paths in and out of data/."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (6, 4), (200, 10, 10)).save(secret)
    root = tmp_path / "ds"
    data = root / "validation" / "data"
    data.mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (6, 4), (10, 10, 10)).save(data / name)
    (data / "inner-link.png").symlink_to(data / "a.png")
    (data / "out-link.png").symlink_to(secret)
    (data / "dir-link").symlink_to(tmp_path, target_is_directory=True)
    outside = ["../../../secret.png", str(secret), "out-link.png", "dir-link/secret.png", "loop.png", "nul\x00.png"]
    (data / "loop.png").symlink_to(data / "loop.png")
    names = [*INSIDE, *outside]
    labels = {"images": [{"id": i + 1, "file_name": n, "height": 4, "width": 6} for i, n in enumerate(names)],
              "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [0, 0, 6, 4],
                               "segmentation": [[0, 0, 6, 0, 6, 4, 0, 4]]} for i in range(len(names))],
              "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
    (root / "validation" / "labels.json").write_text(json.dumps(labels))
    return root, secret


def test_split_keeps_only_images_inside_its_folder(hostile, opened_images) -> None:
    root, secret = hostile
    split = CocoSplit.open(root, "validation", categories=["red", "green"], cache_dir="off")
    assert [r.file_name for r in split.records] == list(INSIDE)
    data = (root / "validation" / "data").resolve()
    assert all(r.path.is_relative_to(data) for r in split.records)
    reasons = dict(split.skipped)
    assert len(reasons) == 6
    assert reasons[str(root / "validation" / "data" / "out-link.png")] == \
        f"resolves to {secret.resolve()}, outside the image folder {data}"
    assert reasons[str(secret)].startswith("resolves to") and "cannot be resolved" in reasons[
        str(root / "validation" / "data" / "loop.png")]
    assert opened_images and all(p.is_relative_to(data) for p in opened_images)


def test_segtrain_data_reports_them_and_never_opens_the_secret(hostile, opened_images) -> None:
    from segtrain.cli import main

    root, secret = hostile
    res = CliRunner().invoke(main, ["data", str(root), "--categories", "red,green"])
    assert res.exit_code == 0, res.output
    assert "[validation] 3 usable images of 9 listed" in res.output
    assert res.output.count("outside the image folder") == 4 and res.output.count("cannot be resolved") == 2
    assert secret.resolve() not in opened_images


def test_segdeploy_evaluate_and_batch_gt_score_only_images_inside(hostile, opened_images, tmp_path: Path) -> None:
    """segdeploy evaluate names the refused images among the skipped; batch --gt's truth has only the inside ones."""
    from colour_models import build_colour_model

    from segdeploy.cli import main as segdeploy
    from segdeploy.infer.batch.ground_truth import GroundTruth
    from segdeploy.infer.runtime import OnnxModel

    root, secret = hostile
    model = build_colour_model(tmp_path / "colour.onnx")
    res = CliRunner().invoke(segdeploy, ["evaluate", str(model), "--data", str(root), "--split", "validation",
                                         "--json", "--provider", "cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["images_scored"] == 3 and len(doc["images_skipped"]) == 6
    assert doc["pixels"] == 3 * 24
    truth = GroundTruth(root / "validation" / "labels.json", root / "validation" / "data", OnnxModel(model, "cpu").spec)
    assert sorted(truth._index) == sorted(Path(n).as_posix() for n in INSIDE)
    truth.update("a.png", np.ones((4, 6), np.uint8))
    assert secret.resolve() not in opened_images


@pytest.mark.parametrize(("file_name", "reason"), [
    (".", "names the image folder"),
    ("sub/..", "names the image folder"),
    ("x" * 300 + ".png", "cannot be read (File name too long)"),
])
def test_file_names_that_name_no_image_are_skipped_with_the_reason(tmp_path: Path, file_name: str,
                                                                    reason: str) -> None:
    root = tmp_path / "ds"
    (root / "validation" / "data").mkdir(parents=True)
    Image.new("RGB", (6, 4)).save(root / "validation" / "data" / "ok.png")
    labels = {"images": [{"id": 1, "file_name": "ok.png", "height": 4, "width": 6},
                         {"id": 2, "file_name": file_name, "height": 4, "width": 6}],
              "annotations": [], "categories": [{"id": 1, "name": "red"}]}
    (root / "validation" / "labels.json").write_text(json.dumps(labels))
    split = CocoSplit.open(root, "validation", categories=["red"], cache_dir="off")
    assert [r.file_name for r in split.records] == ["ok.png"]
    ((_, why),) = split.skipped
    assert reason in why

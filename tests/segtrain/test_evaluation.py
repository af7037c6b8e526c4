"""One read policy in both evaluations: an image that cannot be decoded is skipped, named and counted, not fatal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from onnx_models import conv_model


@pytest.fixture
def damaged(sample_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of the synthetic dataset whose first validation image is a truncated JPEG, that image)."""
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    labels = json.loads((root / "validation" / "labels.json").read_text())
    bad = root / "validation" / "data" / labels["images"][0]["file_name"]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # the header is intact, the pixels are cut
    return root, bad


def test_segdeploy_evaluate_skips_names_and_counts_an_undecodable_image(damaged, tmp_path: Path) -> None:
    from segdeploy.cli import main

    root, bad = damaged
    model = conv_model(tmp_path / "m.onnx")
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", str(model), "--data", str(root), "--split", "validation", "--json",
                               "--provider", "cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["images_scored"] == 11
    assert doc["images_skipped"] == [{"image": str(bad), "reason": doc["images_skipped"][0]["reason"]}]
    assert doc["images_skipped"][0]["reason"].startswith("cannot decode (image file is truncated")
    table = runner.invoke(main, ["evaluate", str(model), "--data", str(root), "--split", "validation",
                                 "--provider", "cpu"])
    assert table.exit_code == 0 and "11 images scored, 1 skipped (could not be read):" in table.stdout
    assert f"  {bad}: cannot decode" in table.stdout


def test_segtrain_evaluate_skips_it_too(damaged, tmp_path: Path) -> None:
    from tiny_arch import make_tiny_checkpoint, tiny_registered

    from segtrain.cli import main

    root, bad = damaged
    with tiny_registered():
        ckpt = make_tiny_checkpoint(tmp_path / "tiny.pth", root)
        res = CliRunner().invoke(main, ["evaluate", str(ckpt), "--split", "validation", "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["images_scored"] == 11 and [s["image"] for s in doc["images_skipped"]] == [str(bad)]


def test_no_readable_image_at_all_is_an_input_error(damaged, tmp_path: Path) -> None:
    from segdeploy.infer.evaluate import ModelEvaluateConfig, evaluate_onnx
    from segtrain.data.coco import DataError

    root, bad = damaged
    for f in (root / "validation" / "data").iterdir():
        if f != bad:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(DataError, match=r"labels\.json: none of the \d+ images could be read \(first: "):
        evaluate_onnx(ModelEvaluateConfig(model=conv_model(tmp_path / "m.onnx"), data=root, split="validation",
                                     provider="cpu"))


def test_images_left_out_by_the_split_are_listed_with_the_undecodable_ones(damaged, tmp_path: Path) -> None:
    from segdeploy.infer.evaluate import ModelEvaluateConfig, evaluate_onnx

    root, bad = damaged
    labels = json.loads((root / "validation" / "labels.json").read_text())
    gone = root / "validation" / "data" / labels["images"][1]["file_name"]
    gone.unlink()
    metrics = evaluate_onnx(ModelEvaluateConfig(model=conv_model(tmp_path / "m.onnx"), data=root, split="validation",
                                           provider="cpu")).metrics
    assert metrics.images == 10
    assert [p for p, _ in metrics.skipped] == [str(gone), str(bad)]
    assert dict(metrics.skipped)[str(gone)] == "image file missing"

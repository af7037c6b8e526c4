"""--tta flip: the mean of the logits of a photo and of its mirror image, one definition for `segtrain evaluate`
(PyTorch), `segdeploy evaluate` and `segdeploy batch` (ONNX), which give the same masks and scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from tiny_arch import make_tiny_checkpoint, tiny_registered

from segdeploy.cli import main as segdeploy
from segdeploy.export.exporter import ExportConfig, export_checkpoint
from segtrain.cli import main as segtrain
from segtrain.contract import logits_to_mask, preprocess
from segtrain.evaluation import open_split_for, with_tta
from segtrain.models import load_model, torch_predictor


@pytest.fixture(scope="module")
def models(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny checkpoint (not mirror-symmetric: a trained-looking 3x3 convolution) and its verified ONNX export."""
    tmp = tmp_path_factory.mktemp("tta")
    with tiny_registered():
        ckpt = make_tiny_checkpoint(tmp / "runs" / "tiny" / "best_model.pth", sample_root, seed=3)
        export_checkpoint(ckpt, ExportConfig(out=tmp / "exported", verify_images=2), echo=lambda _: None)
        yield ckpt, tmp / "exported" / "tiny.onnx"


def test_flip_is_the_mean_with_the_mirror_image() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 6)).astype(np.float32)
    weights = np.random.default_rng(1).normal(size=6).astype(np.float32)  # position-dependent: no mirror symmetry

    def predict(batch: np.ndarray) -> np.ndarray:
        return batch * weights

    expected = (x * weights + (x[..., ::-1] * weights)[..., ::-1]) / 2
    np.testing.assert_allclose(with_tta(predict, "flip")(x), expected, rtol=1e-6)
    assert with_tta(predict, "off") is predict
    with pytest.raises(ValueError, match="tta must be one of off, flip"):
        with_tta(predict, "rotate")


def test_checkpoint_and_onnx_score_alike_with_flip(models: tuple[Path, Path], sample_root: Path) -> None:
    ckpt, onnx_path = models
    scores = {}
    for tta in ("off", "flip"):
        with tiny_registered():
            ours = CliRunner().invoke(segtrain, ["evaluate", str(ckpt), "--split", "validation", "--json",
                                                 "--device", "cpu", "--tta", tta])
        theirs = CliRunner().invoke(segdeploy, ["evaluate", str(onnx_path), "--data", str(sample_root),
                                                "--split", "validation", "--json", "--tta", tta, "--tile", "off"])
        assert ours.exit_code == 0 and theirs.exit_code == 0, ours.output + theirs.output
        a, b = (json.loads(r.output) for r in (ours, theirs))
        a, b = ({"miou": d["miou"], "pixel_accuracy": d["pixel_accuracy"], "pixels": d["pixels"], **d["iou"]}
                for d in (a, b))
        assert a == pytest.approx(b, abs=1e-5), tta
        scores[tta] = a
    assert scores["flip"] != scores["off"]  # the flip was applied (the model is not mirror-symmetric)


def test_batch_with_flip_writes_the_masks_of_pytorch_with_flip(models: tuple[Path, Path], sample_root: Path,
                                                                tmp_path: Path) -> None:
    ckpt, onnx_path = models
    with tiny_registered():
        model, loaded = load_model(ckpt)
    split = open_split_for(loaded.spec, sample_root, "validation")
    out = tmp_path / "preds"
    res = CliRunner().invoke(segdeploy, ["batch", str(split.image_dir), "--out", str(out), "--model", str(onnx_path),
                                         "--tta", "flip", "--tile", "off"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["settings"]["tta"] == "flip"
    predict = with_tta(torch_predictor(model, torch.device("cpu")), "flip")
    for i in range(2):
        image = split.load_image(i)
        expected = logits_to_mask(predict(preprocess([image], loaded.spec))[0], image.shape[:2])
        with Image.open(out / f"{split.records[i].file_name}.mask.png") as im:
            assert (np.asarray(im) == expected).mean() >= 0.999

    again = CliRunner().invoke(segdeploy, ["batch", str(split.image_dir), "--out", str(out), "--model", str(onnx_path),
                                           "--tile", "off"])  # other outputs: not taken for this run's
    assert again.exit_code == 2 and "--overwrite" in again.output, again.output

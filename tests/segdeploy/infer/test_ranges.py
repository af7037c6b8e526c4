"""Ranges for every number a user, a model file or a stream can give the Predictor and `segdeploy batch`, and the
model's outputs checked: no zero-sized output, NaN scores are a named failure per image (the run says so), and
a stream keeps input order past a bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from colour_models import batch_cli, half_image, save
from onnx_models import conv_model
from PIL import Image

from segdeploy.infer.pipeline import Failure
from segdeploy.infer.predictor import OutputError, Prediction, Predictor
from segdeploy.infer.runtime import ModelLoadError

BRIGHT = np.full((20, 24, 3), 250, np.uint8)
DARK = np.zeros((20, 24, 3), np.uint8)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(threads=-1), "threads must be from 1 to 256, got -1"),
    (dict(threads=100_000), "threads must be from 1 to 256, got 100000"),
    (dict(batch_size=0), "batch_size must be from 1 to 256, got 0"),
    (dict(batch_size=10**9), "batch_size must be from 1 to 256, got 1000000000"),
    (dict(batch_size="many"), "batch_size must be a whole number"),
    (dict(spinning="maybe"), "spinning must be true or false, got 'maybe'"),
    (dict(spinning=None), "spinning must be true or false, got None"),
])
def test_predictor_numbers_out_of_range_are_a_value_error(model: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Predictor(model, runtime="onnxruntime", **kwargs)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--threads", "100000", "'--threads': 100000 is not in the range 1<=x<=256"),
    ("--batch-size", "100000", "'--batch-size': 100000 is not in the range 1<=x<=256"),
    ("--workers", "5000", "'--workers': 5000 is not in the range 1<=x<=64"),
    ("--alpha", "nan", "--alpha"),
    ("--shard", "0/1000000000", "the shard count N must be from 1 to 100000"),
])
def test_batch_numbers_out_of_range_are_refused_in_one_line(model: Path, tmp_path: Path, flag: str, value: str,
                                                            message: str) -> None:
    save(half_image(20, 20, 1), tmp_path / "in" / "a.png")
    result = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, flag, value)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("alpha", [float("nan"), 5, -3, "x"])
def test_overlay_alpha_must_be_from_0_to_1(model: Path, alpha: object) -> None:
    prediction = Predictor(model).predict(BRIGHT)
    with pytest.raises(ValueError, match="alpha must be"):
        prediction.overlay(alpha)
    assert prediction.overlay(0.25).shape == BRIGHT.shape


def test_an_output_without_pixels_is_refused(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "rows.onnx", no_rows=True, output_shape=["N", 5, "H", "W"])
    with pytest.raises(ModelLoadError, match=r"an output without pixels"):
        Predictor(path, runtime="onnxruntime").predict(BRIGHT)


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return conv_model(tmp_path_factory.mktemp("nan") / "nan.onnx", log_input=True)


def test_nan_scores_are_a_named_failure_of_that_image_only(nan_model: Path) -> None:
    predictor = Predictor(nan_model, runtime="onnxruntime", batch_size=2)
    good, bad = predictor.predict_batch([BRIGHT, DARK])
    assert good.problem is None and good.mask.shape == (20, 24)
    assert bad.problem is not None
    with pytest.raises(OutputError, match="NaN or infinite scores"):
        bad.mask  # noqa: B018
    stream = list(predictor.predict_iter([BRIGHT, DARK, BRIGHT], workers=2))
    assert [type(r) for r in stream] == [Prediction, Failure, Prediction]
    assert stream[1].input == "array #1" and "NaN or infinite scores" in stream[1].reason


def test_batch_names_an_image_with_nan_scores_and_exits_3(nan_model: Path, tmp_path: Path) -> None:
    save(BRIGHT, tmp_path / "in" / "bright.png")
    save(DARK, tmp_path / "in" / "dark.png")
    result = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", nan_model)
    assert result.exit_code == 3, result.output
    assert "dark.png: the model gave NaN or infinite scores for it" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["input"] for r in summary["images"]] == ["bright.png"]
    assert [f["input"] for f in summary["failures"]] == ["dark.png"]
    assert not list((tmp_path / "out").glob("dark.png.*"))


def test_a_stream_keeps_input_order_and_survives_bad_inputs(model: Path, tmp_path: Path) -> None:
    save(BRIGHT, tmp_path / "a.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    items = [tmp_path / "a.png", np.zeros((0, 0, 3), np.uint8), BRIGHT, tmp_path / "broken.jpg",
             np.zeros((4, 4), np.float64), Image.new("RGB", (0, 0)), DARK, tmp_path / "a.png"]
    for batch_size in (1, 3):
        stream = list(Predictor(model, batch_size=batch_size).predict_iter(items, workers=2))
        kinds = ["F" if isinstance(r, Failure) else "P" for r in stream]
        assert kinds == ["P", "F", "P", "F", "F", "F", "P", "P"], (batch_size, stream)
        assert stream[3].input.endswith("broken.jpg")
        assert stream[0].source == tmp_path / "a.png" and stream[7].source == tmp_path / "a.png"


def test_a_lazily_opened_huge_pil_image_is_refused_before_its_pixels_load(model: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGTRAIN_MAX_IMAGE_PIXELS", "1000")
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")  # 1200 pixels
    with Image.open(tmp_path / "big.png") as lazy:
        (failure,) = Predictor(model).predict_iter([lazy])
        assert lazy._im is None  # refused from the header, never loaded
    assert isinstance(failure, Failure) and "40x30 is 1,200 pixels, more than the limit of 1,000" in failure.reason
    with pytest.raises(Exception, match="more than the limit"):
        Predictor(model).predict(np.zeros((30, 40, 3), np.uint8))

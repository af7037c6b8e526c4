"""`from segdeploy import Predictor`: the same masks as `segdeploy batch`, every view at the original size,
streams with failures, no torch, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from colour_models import CLASSES, half_image, save, save_exif_rotated, subprocess_env
from PIL import Image

from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.outputs import encode_mask, output_paths
from segdeploy.infer.batch.resume import ResumeRecord
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.pipeline import Failure
from segdeploy.infer.predictor import Predictor
from segdeploy.infer.runtime import ModelLoadError
from segdeploy.infer.tiling import TileError
from segtrain.contract import colorize, overlay, resize_logits
from segtrain.data.images import ImageReadError, load_image


def noisy(h: int, w: int, seed: int) -> np.ndarray:
    """Random pixels: after the model's resize, a mask with all three classes in a pattern only exact code repeats."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_a_path_a_pil_image_and_an_array_give_the_mask_png_of_segdeploy_batch(model: Path, tmp_path: Path) -> None:
    save(noisy(45, 70, 3), tmp_path / "in" / "plain.png")
    save_exif_rotated(noisy(40, 58, 4), tmp_path / "in" / "turned.jpg")  # EXIF orientation 6
    run_batch(BatchConfig(sources=tmp_path / "in", out_dir=tmp_path / "out", model=model, workers=2,
                          progress=False), log=lambda m: None)
    predictor = Predictor(model)
    for name in ("plain.png", "turned.jpg"):
        path = tmp_path / "in" / name
        written = output_paths(tmp_path / "out", Path(name)).mask
        text = ResumeRecord.read(written).png_text()  # the same text chunk, so the whole PNG must match byte for byte
        with Image.open(path) as im:
            from_pil = predictor.predict(im)
        results = [predictor.predict(path), predictor.predict(str(path)), from_pil,
                   predictor.predict(load_image(path))]
        assert len(np.unique(results[0].mask)) == 3, name
        for result in results:
            assert result.mask.shape == load_image(path).shape[:2]
            assert encode_mask(result.mask, predictor.spec.palette, text) == written.read_bytes(), name


def test_every_view_is_at_the_original_size_and_they_agree(model: Path) -> None:
    image = noisy(37, 53, 5)
    result = Predictor(model).predict(image)
    probabilities = result.probabilities()
    assert probabilities.shape == (3, 37, 53) and probabilities.dtype == np.float32
    # Independently: NumPy bilinear resize of the logits, then softmax.
    resized = resize_logits(result.logits, (37, 53)).astype(np.float64)
    softmax = np.exp(resized - resized.max(0)) / np.exp(resized - resized.max(0)).sum(0)
    np.testing.assert_allclose(probabilities, softmax, atol=1e-5)
    np.testing.assert_array_equal(result.mask, softmax.argmax(0))
    np.testing.assert_allclose(result.confidence, softmax.max(0), atol=1e-5)
    assert result.confidence.shape == (37, 53) and result.confidence.min() >= 1 / 3 - 1e-6
    palette = result.spec.palette
    np.testing.assert_array_equal(result.colorized(), colorize(result.mask, palette))
    np.testing.assert_array_equal(result.overlay(0.3), overlay(image, result.mask, palette, 0.3))
    counts = np.bincount(result.mask.ravel(), minlength=3)
    assert result.class_shares == {name: round(counts[k] / result.mask.size, 6) for k, name in enumerate(CLASSES)}
    scores = result.class_scores
    assert set(scores) == set(np.flatnonzero(counts))
    for k, score in scores.items():
        assert score == pytest.approx(float(softmax.max(0)[result.mask == k].mean()), abs=1e-5)


def test_overlay_legend_draws_the_present_classes_in_a_corner_only(model: Path) -> None:
    image = half_image(120, 160, axis=1)  # red on the left, background on the right
    result = Predictor(model).predict(image)
    plain, legend = result.overlay(0.5), result.overlay(0.5, legend=True)
    changed = np.argwhere((plain != legend).any(axis=2))
    assert len(changed) and changed[:, 0].max() < 40 and changed[:, 1].max() < 80  # top-left box
    assert (legend[:40, :80] == result.spec.palette[1]).all(axis=2).any()  # the red swatch
    assert not (legend[:40, :80] == result.spec.palette[2]).all(axis=2).any()  # no green: not in the image


def test_predict_batch_and_predict_iter_match_predict_and_name_unreadable_files(model: Path, tmp_path: Path) -> None:
    paths = [save(noisy(30 + i, 40 + 3 * i, i), tmp_path / f"im{i}.png") for i in range(5)]
    (tmp_path / "broken.jpg").write_bytes(b"")
    predictor = Predictor(model, batch_size=2)
    single = [predictor.predict(p).mask for p in paths]
    for got, want in zip(predictor.predict_batch(paths), single, strict=True):
        np.testing.assert_array_equal(got.mask, want)
    stream = list(predictor.predict_iter([*paths[:2], tmp_path / "broken.jpg", *paths[2:]], workers=2))
    failures = [r for r in stream if isinstance(r, Failure)]
    assert [(f.input, f.reason) for f in failures] == [(str(tmp_path / "broken.jpg"), "empty file")]
    predictions = [r for r in stream if not isinstance(r, Failure)]
    assert [r.source for r in predictions] == paths  # in input order
    for got, want in zip(predictions, single, strict=True):
        np.testing.assert_array_equal(got.mask, want)
    import segdeploy

    with pytest.raises(segdeploy.ImageReadError, match=r"broken\.jpg: empty file$"):
        predictor.predict_batch([paths[0], tmp_path / "broken.jpg"])


def test_predict_iter_stops_cleanly_when_the_consumer_stops(model: Path, tmp_path: Path) -> None:
    paths = [save(noisy(20, 20, i), tmp_path / f"im{i}.png") for i in range(30)]
    stream = Predictor(model, batch_size=2).predict_iter(paths, workers=2)
    first = next(stream)
    stream.close()  # queued decodes are dropped, threads end
    assert first.source == paths[0] and first.mask.shape == (20, 20)


def test_importing_segdeploy_is_light_and_the_predictor_never_imports_torch(model: Path) -> None:
    code = ("import sys\nsys.modules['torch'] = None  # import torch now raises ImportError\n"
            "import segdeploy\n"
            "print(sorted(m for m in ('onnxruntime', 'cv2', 'segdeploy.infer.predictor') if m in sys.modules))\n"
            "import numpy as np\nfrom segdeploy import Predictor\n"
            f"result = Predictor({str(model)!r}).predict(np.zeros((10, 12, 3), np.uint8))\n"
            "print(result.mask.shape, sorted(m for m in sys.modules if m.startswith('torch') and sys.modules[m]))\n")
    run = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["[]", "(10, 12) []"]


def test_bad_inputs_raise_clear_errors(model: Path, tmp_path: Path) -> None:
    predictor = Predictor(model)
    with pytest.raises(ValueError, match=r"expected an HxWx3 uint8 RGB array, got float64 \(4, 4, 3\)"):
        predictor.predict(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        predictor.predict(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(TypeError, match="got int"):
        predictor.predict(3)
    with pytest.raises(ImageReadError, match="missing.jpg: file not found"):
        predictor.predict(tmp_path / "missing.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")  # reading it would block forever
    with pytest.raises(ImageReadError, match="pipe.jpg: not a regular file"):
        predictor.predict(tmp_path / "pipe.jpg")
    (failure,) = predictor.predict_iter([tmp_path / "pipe.jpg"])
    assert isinstance(failure, Failure) and failure.reason == "not a regular file"
    np.testing.assert_array_equal(predictor.predict(np.full((6, 7), 200, np.uint8)).mask, np.ones((6, 7)))  # grey
    with pytest.raises(ModelLoadError, match="nothing.onnx: file not found"):
        Predictor(tmp_path / "nothing.onnx")
    with pytest.raises(TileError, match="smaller than the model's input size"):
        Predictor(model, tile=16)
    with pytest.raises(TileError, match="expected auto, off or a tile size"):
        Predictor(model, tile="huge")
    with pytest.raises(TileError, match="tile-overlap"):
        Predictor(model, tile_overlap=float("nan"))
    with pytest.raises(ValueError, match="batch_size"):
        Predictor(model, batch_size=0)

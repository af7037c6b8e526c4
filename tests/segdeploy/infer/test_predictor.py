"""`from segdeploy import Predictor`: the same masks as `segdeploy batch`, every view at the original size,
streams with failures, no torch, clear errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from colour_models import (
    CLASSES,
    half_image,
    moving_frames,
    save,
    save_exif_rotated,
    save_video,
    subprocess_env,
)
from PIL import Image

from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.outputs import encode_mask, output_paths
from segdeploy.infer.batch.resume import ResumeRecord
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.pipeline import Failure
from segdeploy.infer.predictor import Predictor
from segdeploy.infer.runtime import ModelLoadError
from segdeploy.infer.tiling import TileError
from segtrain.common.errors import InputError
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
    predictor = Predictor(model, channels="rgb")
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
    result = Predictor(model, channels="rgb").predict(image)
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
    result = Predictor(model, channels="rgb").predict(image)
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
    with pytest.raises(ValueError, match=r"expected an HxWx3 uint8 BGR array \(or HxW grey, HxWx4\), got float64"):
        predictor.predict(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        predictor.predict(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(TypeError, match="expected a path, folder, glob, video, URL, NumPy array, PIL image, bytes"):
        predictor.predict(3)
    with pytest.raises(ValueError, match="channels must be one of bgr, rgb"):
        Predictor(model, channels="RGB")
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


# --------------------------------------------------------------------------------------------
# One source rule: what predict, predict_batch and predict_iter take


def test_an_opencv_array_and_its_file_give_the_same_mask(model: Path, tmp_path: Path) -> None:
    import cv2

    path = save(noisy(45, 70, 11), tmp_path / "photo.png")
    predictor = Predictor(model)  # arrays in OpenCV's order by default, as cv2.imread gives them
    from_file = predictor.predict(path)
    assert len(np.unique(from_file.mask)) == 3  # the colour model reads the red channel: a swap would show
    np.testing.assert_array_equal(predictor.predict(cv2.imread(str(path))).mask, from_file.mask)
    with Image.open(path) as im:
        rgb = np.asarray(im)
        np.testing.assert_array_equal(predictor.predict(im).mask, from_file.mask)  # PIL knows its own mode
    np.testing.assert_array_equal(Predictor(model, channels="rgb").predict(rgb).mask, from_file.mask)
    assert (predictor.predict(rgb).mask != from_file.mask).any()  # RGB taken as BGR: red and blue swapped
    bgra = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2BGRA)
    np.testing.assert_array_equal(predictor.predict(bgra).mask, from_file.mask)
    np.testing.assert_array_equal(predictor.predict(path.read_bytes()).mask, from_file.mask)  # encoded bytes
    with open(path, "rb") as f:  # binary file objects: an open file, a buffer, a store's file (fsspec.open)
        np.testing.assert_array_equal(predictor.predict(f).mask, from_file.mask)
    buffers = [io.BytesIO(path.read_bytes()), io.BytesIO(b"not an image")]
    results = list(predictor.predict_iter(buffers))  # a Failure is yielded as soon as it is known
    assert [r for r in results if isinstance(r, Failure)] == [Failure("file object #1",
                                                                      "not an image Pillow can identify")]
    (good,) = [r for r in results if not isinstance(r, Failure)]
    np.testing.assert_array_equal(good.mask, from_file.mask)
    with open(path) as text, pytest.raises(ValueError, match="expected a binary file object"):
        predictor.predict(text)


def test_a_string_is_one_source_and_folders_globs_and_lists_are_expanded(model: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [save(noisy(20 + i, 24, i), tmp_path / "photos" / f"im{i}.png") for i in range(3)]
    save(noisy(22, 26, 9), tmp_path / "photos" / "sub" / "deep.jpg")
    predictor = Predictor(model, batch_size=2)
    monkeypatch.chdir(tmp_path)
    (one,) = predictor.predict_iter("photos/im0.png")  # not one failure per character
    np.testing.assert_array_equal(one.mask, predictor.predict(paths[0]).mask)
    (missing,) = predictor.predict_iter("nothing.jpg")
    assert isinstance(missing, Failure) and missing.input == "nothing.jpg" and missing.reason == "file not found"
    folder = predictor.predict_batch("photos")  # every image under it, in the order batch lists them
    assert [r.source.as_posix() for r in folder] == ["photos/im0.png", "photos/im1.png", "photos/im2.png",
                                                     "photos/sub/deep.jpg"]
    assert [r.source for r in predictor.predict_batch("photos/*.png")] == [Path("photos") / p.name for p in paths]
    mixed = list(predictor.predict_iter(["photos/im1.png", noisy(10, 12, 1), "photos/sub", paths[2].read_bytes()]))
    assert [r.source for r in mixed] == ["photos/im1.png", None, Path("photos/sub/deep.jpg"), None]
    np.testing.assert_array_equal(mixed[3].mask, predictor.predict(paths[2]).mask)
    with pytest.raises(ValueError, match=r"predict\(\) segments one image, but 'photos' is a folder: use "
                                         r"predict_batch\(\) for a list of results or predict_iter\(\)"):
        predictor.predict("photos")
    with pytest.raises(ValueError, match="a list may name several images"):
        predictor.predict([paths[0]])
    with pytest.raises(InputError, match="photos/\\*.gif: no file or folder matches this pattern"):
        predictor.predict_batch("photos/*.gif")
    with pytest.raises(InputError, match="a https:// URL that is not a video is not read"):
        predictor.predict_batch("https://example.com/photos/a.jpg")


def test_a_video_streams_frame_by_frame(model: Path, tmp_path: Path) -> None:
    frames = moving_frames(6)
    video = save_video(frames, tmp_path / "clip.mkv", fps=4)
    predictor = Predictor(model, batch_size=4)
    results = list(predictor.predict_iter(video, workers=2))
    assert [(r.source.video, r.source.index, r.source.seconds) for r in results] == [
        (str(video), i, i / 4) for i in range(6)]
    for i, (result, frame) in enumerate(zip(results, frames, strict=True)):
        np.testing.assert_array_equal(result.mask, Predictor(model, channels="rgb").predict(frame).mask)
        assert result.mask[10, 3 + 3 * i] == 1 and result.mask[0, 0] == 0  # the square, where it is now
    assert len(predictor.predict_batch([video, video])) == 12
    with pytest.raises(ValueError, match="is a video file"):
        predictor.predict(video)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="broken.mp4: OpenCV cannot open this video"):
        predictor.predict_batch(tmp_path / "broken.mp4")

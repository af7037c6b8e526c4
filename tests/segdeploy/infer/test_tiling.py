"""Tiled inference: photos run as the model was trained by default; small objects of a large image survive
explicit tiling but not stretching; windows, blending, bounds; the console and the progress bar follow the windows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import BRIGHT, DARK, build_colour_model, colour_spec, expected_mask, save

from segdeploy.cli import main
from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.outputs import output_paths, read_mask
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.predictor import Predictor
from segdeploy.infer.tiling import (
    CANVAS_BUDGET_BYTES,
    TileCanvas,
    TileError,
    Tiling,
    make_plan,
    parse_tile,
    run_tiles,
    window_positions,
)
from segtrain.contract import build_spec

INPUT = 64


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_model(tmp_path_factory.mktemp("model") / "colour.onnx", input_size=(INPUT, INPUT))


@pytest.fixture(scope="module")
def crop_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour model, its spec saying it was trained on crops at the photo's own scale."""
    spec = dataclasses.replace(colour_spec((INPUT, INPUT)), resize="crop")
    return build_colour_model(tmp_path_factory.mktemp("model") / "crop.onnx", spec=spec)


def windows(h: int, w: int, overlap: float = 0.25) -> int:
    """Windows of the input size over an h x w photo at its own scale."""
    return len(window_positions(h, INPUT, overlap)) * len(window_positions(w, INPUT, overlap))


def speckled(h: int, w: int, spacing: int = 40, size: int = 6) -> np.ndarray:
    """A dark photo with small bright ("red") squares: each covers under 0.1% of it."""
    image = np.empty((h, w, 3), np.uint8)
    image[:] = DARK
    for y in range(spacing // 2, h - size, spacing):
        for x in range(spacing // 2 + (y // spacing) % 7, w - size, spacing):
            image[y:y + size, x:x + size] = BRIGHT
    return image


def test_small_objects_survive_tiling_but_vanish_when_stretched(model: Path) -> None:
    image = speckled(960, 1280)  # 15x the model's input on its long side
    truth = expected_mask(image)
    assert truth.sum() > 500
    tiled = Predictor(model, tile=INPUT, channels="rgb").predict(image)  # windows of the input: the photo's scale
    stretched = Predictor(model, channels="rgb").predict(image)  # the default: as the model was trained
    assert tiled.tiles == windows(960, 1280) and stretched.tiles == 0
    np.testing.assert_array_equal(stretched.mask, Predictor(model, tile="off", channels="rgb").predict(image).mask)
    # The colour model labels each pixel by its own colour, so tiles at the photo's resolution are exact.
    np.testing.assert_array_equal(tiled.mask, truth)
    assert not stretched.mask.any()  # squeezed 15-fold, every square is averaged away
    # A fixed window twice the input: the photo is seen at half its resolution, the squares still survive.
    halved = Predictor(model, tile=2 * INPUT, channels="rgb").predict(image)
    assert halved.mask.shape == truth.shape
    found = (halved.mask == 1) & (truth == 1)
    assert found.sum() > 0.5 * truth.sum() and (halved.mask[truth == 0] == 1).mean() < 0.01


def test_tiled_confidence_and_probabilities_come_from_the_blended_logits(model: Path) -> None:
    image = speckled(300, 420, spacing=30)
    result = Predictor(model, tile=INPUT, channels="rgb").predict(image)
    assert result.tiles > 1
    probabilities = result.probabilities()
    assert probabilities.shape == (3, 300, 420)
    np.testing.assert_array_equal(probabilities.argmax(0), result.mask)
    np.testing.assert_allclose(result.confidence, probabilities.max(0), atol=1e-6)


def test_auto_runs_each_model_as_it_was_trained() -> None:
    stretch = build_spec("tiny", "x", image_size=INPUT)  # how segtrain trains: whole photos, stretched
    crop = dataclasses.replace(stretch, resize="crop")  # trained on crops at the photo's own scale
    assert not Tiling().tiles(stretch) and Tiling().plan((9000, 9000), stretch) is None
    assert Tiling().tiles(crop) and Tiling().plan((50, 60), crop).windows == [(0, 0)]  # one window, padded
    big = Tiling().plan((300, 400), crop)
    assert big.work_size == (300, 400) and len(big.windows) > 1  # the photo's own scale
    assert Tiling("off").plan((9000, 9000), crop) is None
    fixed = Tiling(128).plan((100, 100), stretch)  # a fixed window tiles any image, at the same scale
    assert fixed is not None and fixed.work_size == (50, 50) and fixed.windows == [(0, 0)]
    assert "stretched into one 64x64 input (as trained: its resize rule is 'stretch')" in Tiling().describe(stretch)
    assert "windows at its own scale" in Tiling().describe(crop)
    assert "128x128-pixel windows, each resized to the 64x64 input" in Tiling(128).describe(stretch)


def test_a_model_trained_on_crops_is_tiled_by_default(crop_model: Path) -> None:
    image = speckled(480, 640)
    result = Predictor(crop_model, channels="rgb").predict(image)
    assert result.tiles > 1
    np.testing.assert_array_equal(result.mask, expected_mask(image))


@pytest.mark.parametrize(("length", "window", "overlap"), [(100, 16, 0.25), (17, 16, 0.5), (1000, 64, 0.0),
                                                           (65, 64, 0.75), (16, 16, 0.25), (5, 16, 0.25)])
def test_windows_cover_the_length_evenly_with_at_least_the_overlap(length: int, window: int, overlap: float) -> None:
    starts = window_positions(length, window, overlap)
    assert starts[0] == 0 and (starts[-1] == length - window or length <= window)
    covered = np.zeros(max(length, window), bool)
    for s in starts:
        covered[s:s + window] = True
    assert covered[:length].all()
    steps = np.diff(starts)
    assert (steps <= window * (1 - overlap) + 1e-9).all()
    assert len(steps) == 0 or steps.max() - steps.min() <= 1  # evenly spaced


def test_blending_weighs_each_window_and_normalises() -> None:
    spec = build_spec("tiny", "x", image_size=8)
    plan = make_plan((8, 20), spec, 1.0, 0.5)
    canvas = TileCanvas(plan, classes=2)
    for top, left in plan.windows:  # every window says the same: the blend must say it too
        logits = np.stack([np.full((8, 8), 1.5, np.float32), np.full((8, 8), -2.0, np.float32)])
        canvas.add(top, left, logits)
    np.testing.assert_allclose(canvas.logits(), np.stack([np.full(plan.grid, 1.5), np.full(plan.grid, -2.0)]),
                               rtol=1e-6)


def test_memory_is_the_tile_batch_and_a_bounded_canvas() -> None:
    spec = build_spec("deeplab", "resnet50", image_size=512)
    for size in ((16000, 25000), (40000, 60000)):  # the 400-megapixel decoding limit, and beyond
        plan = make_plan(size, spec, 1.0, 0.25)
        assert plan.cell > 1 and 4 * (spec.num_classes + 1) * plan.grid[0] * plan.grid[1] <= CANVAS_BUDGET_BYTES
        assert plan.span[0] >= size[0] and plan.span[1] >= size[1]
    small = make_plan((960, 1280), spec, 1.0, 0.25)
    assert small.cell == 1  # photos keep full resolution
    calls = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return np.zeros((batch.shape[0], spec.num_classes, 512, 512), np.float32)

    image = np.zeros((1500, 2100, 3), np.uint8)
    plan = make_plan(image.shape[:2], spec, 1.0, 0.25)
    run_tiles(run, image, plan, spec, batch_size=3)
    assert sum(c[0] for c in calls) == len(plan.windows) > 3
    assert max(c[0] for c in calls) == 3 and all(c[1:] == (3, 512, 512) for c in calls)


def test_tile_values_are_checked() -> None:
    assert parse_tile("AUTO") == "auto" and parse_tile("off") == "off" and parse_tile("640") == 640
    for bad in ("0", "-5", "15", "99999999", "12.5", "big", ""):
        with pytest.raises(TileError):
            parse_tile(bad)
    for bad in (-0.1, 0.9, float("nan"), float("inf")):
        with pytest.raises(TileError):
            Tiling("auto", bad)


def test_batch_runs_photos_as_trained_unless_told_to_tile_and_says_so(model: Path, tmp_path: Path) -> None:
    image = speckled(480, 640)
    save(image, tmp_path / "in" / "large.png")
    save(speckled(100, 120), tmp_path / "in" / "small.png")
    runs = {}
    for args, out in (([], "default"), (["--tile", str(INPUT)], "tiled")):
        runs[out] = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / out), "--model",
                                              str(model), *args, "--no-progress"])
        assert runs[out].exit_code == 0, runs[out].output
    mask = read_mask(output_paths(tmp_path / "tiled", Path("large.png")).mask)
    np.testing.assert_array_equal(mask, expected_mask(image))
    assert not read_mask(output_paths(tmp_path / "default", Path("large.png")).mask).any()  # stretched, as trained
    records = {r["input"]: r for r in json.loads((tmp_path / "tiled" / "summary.json").read_text())["images"]}
    large, small = windows(480, 640), windows(100, 120)
    assert records["large.png"]["tiles"] == large and records["small.png"]["tiles"] == small
    default = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert default["settings"]["tile"] == "auto" and {r["tiles"] for r in default["images"]} == {0}
    assert "window" not in runs["default"].output
    said = runs["tiled"].output
    assert f"each photo runs as {INPUT}x{INPUT}-pixel windows, each resized to the {INPUT}x{INPUT} input" in said
    assert f"large.png: 640x480 runs as {large} windows" in said
    assert f"small.png: 120x100 runs as {small} windows" in said
    assert f"tiled: 2 inputs, {large + small} model windows in all ({small} to {large} per photo or frame)" in said


def test_the_progress_bar_moves_window_by_window(model: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import segdeploy.infer.batch.run as run_module

    shown: list[float] = []

    class Recording(run_module.tqdm):
        def update(self, n: float = 1) -> None:
            super().update(n)
            shown.append(self.n)

    monkeypatch.setattr(run_module, "tqdm", Recording)
    save(speckled(256, 320), tmp_path / "in" / "huge.png")  # 4 x 5 windows of 64, 2 per model call
    run_batch(BatchConfig(sources=tmp_path / "in", out_dir=tmp_path / "out", model=model, tile=INPUT,
                          tile_overlap=0, batch_size=2, progress=True), log=lambda m: None)
    assert shown[-1] == pytest.approx(1.0)
    steps = [n for n in shown if n < 1]
    assert len(steps) == 10 and steps == sorted(steps) and steps[0] == pytest.approx(0.1)

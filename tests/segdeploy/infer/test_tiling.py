"""Tiled inference: small objects of a large image survive tiling but not stretching; windows, blending, bounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import BRIGHT, DARK, build_colour_model, expected_mask, save

from segdeploy.cli import main
from segdeploy.infer.batch.outputs import output_paths, read_mask
from segdeploy.infer.predictor import Predictor
from segdeploy.infer.tiling import (
    AUTO_TILE_FACTOR,
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


def speckled(h: int, w: int, spacing: int = 40, size: int = 6) -> np.ndarray:
    """A dark photo with small bright ("red") squares: each covers under 0.1% of it."""
    image = np.empty((h, w, 3), np.uint8)
    image[:] = DARK
    for y in range(spacing // 2, h - size, spacing):
        for x in range(spacing // 2 + (y // spacing) % 7, w - size, spacing):
            image[y:y + size, x:x + size] = BRIGHT
    return image


def test_small_objects_survive_tiling_but_vanish_when_stretched(model: Path) -> None:
    image = speckled(960, 1280)  # 15x the model's input on its long side: auto tiles it
    truth = expected_mask(image)
    assert truth.sum() > 500
    tiled = Predictor(model).predict(image)
    stretched = Predictor(model, tile="off").predict(image)
    assert tiled.tiles > 1 and stretched.tiles == 0
    # The colour model labels each pixel by its own colour, so tiles at the photo's resolution are exact.
    np.testing.assert_array_equal(tiled.mask, truth)
    assert not stretched.mask.any()  # squeezed 15-fold, every square is averaged away
    # A fixed window twice the input: the photo is seen at half its resolution, the squares still survive.
    halved = Predictor(model, tile=2 * INPUT).predict(image)
    assert halved.mask.shape == truth.shape
    found = (halved.mask == 1) & (truth == 1)
    assert found.sum() > 0.5 * truth.sum() and (halved.mask[truth == 0] == 1).mean() < 0.01


def test_tiled_confidence_and_probabilities_come_from_the_blended_logits(model: Path) -> None:
    image = speckled(300, 420, spacing=30)
    result = Predictor(model).predict(image)
    assert result.tiles > 1
    probabilities = result.probabilities()
    assert probabilities.shape == (3, 300, 420)
    np.testing.assert_array_equal(probabilities.argmax(0), result.mask)
    np.testing.assert_allclose(result.confidence, probabilities.max(0), atol=1e-6)


def test_auto_tiles_only_images_above_the_factor_and_off_never() -> None:
    spec = build_spec("tiny", "x", image_size=INPUT)
    limit = int(AUTO_TILE_FACTOR * INPUT)
    assert Tiling().plan((100, limit), spec) is None
    assert Tiling().plan((100, limit + 1), spec) is not None
    assert Tiling("off").plan((9000, 9000), spec) is None
    fixed = Tiling(128).plan((100, 100), spec)  # a fixed window tiles any image, at the same scale
    assert fixed is not None and fixed.work_size == (50, 50) and fixed.windows == [(0, 0)]


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


def test_batch_tiles_large_images_and_records_it(model: Path, tmp_path: Path) -> None:
    image = speckled(480, 640)
    save(image, tmp_path / "in" / "large.png")
    save(speckled(100, 120), tmp_path / "in" / "small.png")
    for tile, out in (("auto", "tiled"), ("off", "stretched")):
        res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / out), "--model",
                                        str(model), "--tile", tile, "--no-progress"])
        assert res.exit_code == 0, res.output
    mask = read_mask(output_paths(tmp_path / "tiled", Path("large.png")).mask)
    np.testing.assert_array_equal(mask, expected_mask(image))
    assert not read_mask(output_paths(tmp_path / "stretched", Path("large.png")).mask).any()
    records = {r["input"]: r for r in json.loads((tmp_path / "tiled" / "summary.json").read_text())["images"]}
    assert records["large.png"]["tiles"] > 1 and records["small.png"]["tiles"] == 0
    summary = json.loads((tmp_path / "tiled" / "summary.json").read_text())
    assert summary["settings"]["tile"] == "auto" and summary["settings"]["tile_overlap"] == 0.25

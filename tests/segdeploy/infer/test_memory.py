"""The memory budget counts everything that grows with the inputs or the model (segdeploy.infer.memory): a run
whose model call cannot fit is refused before it starts with the budget it needs; each format's decode cost,
the logits and a tile canvas are in each image's reservation; an image whose canvas alone exceeds the budget
fails by name instead of asking for tens of GB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from colour_models import batch_cli, half_image, save
from onnx_models import conv_model

from segdeploy.infer.memory import (
    DECODE_BYTES_PER_PIXEL,
    decode_bytes_per_pixel,
    images_budget,
    model_call_bytes,
    prediction_bytes,
)
from segdeploy.infer.tiling import Tiling
from segtrain.contract import build_spec


def _model(tmp_path: Path, size: int, classes: int = 4, resize: str = "stretch") -> Path:
    categories = [(i + 1, f"c{i}") for i in range(classes)]
    spec = build_spec("tiny", "conv1x1", image_size=size, categories=categories)
    if resize != "stretch":
        import dataclasses

        spec = dataclasses.replace(spec, resize=resize)
    return conv_model(tmp_path / f"m{size}-{classes}.onnx", spec=spec)


def test_a_huge_model_input_is_refused_before_the_run_with_the_budget_it_needs(tmp_path: Path) -> None:
    save(half_image(40, 60, 1), tmp_path / "in" / "a.png")
    model = _model(tmp_path, 8192)
    result = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--memory-budget", "256")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "--memory-budget 256 MB cannot hold one model call: 4 x 8192x8192 inputs with 5 classes take 8192 MB" in line
    need = int(line.split("pass --memory-budget ")[1].split()[0])
    assert need > 8192 and not (tmp_path / "out").exists()  # refused before anything was written
    spec = build_spec("tiny", "conv1x1", image_size=8192)
    assert images_budget(spec, 4, need, 10) >= 0  # the budget it names is enough


def test_the_batch_size_is_inside_the_budget(tmp_path: Path) -> None:
    spec = build_spec("tiny", "conv1x1", image_size=512)
    assert model_call_bytes(spec, 8) == 8 * (3 + 5) * 512 * 512 * 4
    images_budget(spec, 1, 64, 10)
    with pytest.raises(Exception, match="pass --memory-budget 77 or more, or a smaller --batch-size"):
        images_budget(spec, 8, 64, 10)


def test_each_format_has_its_measured_decode_cost() -> None:
    recorded = json.loads((Path(__file__).parents[3] / "benchmarks" / "results" / "decode_memory.json").read_text())
    for name, measured in recorded["bytes_per_pixel"].items():
        assert DECODE_BYTES_PER_PIXEL[name] >= measured  # rounded up, never below what was measured
    assert decode_bytes_per_pixel("a.webp") > decode_bytes_per_pixel("a.JPG") == DECODE_BYTES_PER_PIXEL["jpeg"]
    assert decode_bytes_per_pixel("no-suffix") == max(DECODE_BYTES_PER_PIXEL.values())


def test_an_odd_window_with_many_classes_counts_its_canvas() -> None:
    spec = build_spec("tiny", "conv1x1", image_size=511, categories=[(i + 1, f"c{i}") for i in range(254)])
    plan = Tiling(511).plan((3000, 4000), spec)  # an odd window: one canvas cell per pixel
    assert prediction_bytes(spec, plan) >= 256 * 3000 * 4000 * 4  # the 12 GB canvas is seen, not ignored


def test_an_image_whose_canvas_exceeds_the_budget_fails_by_name(tmp_path: Path) -> None:
    model = _model(tmp_path, 33, classes=200, resize="crop")  # tiled as trained, an odd window
    save(half_image(900, 1200, 1), tmp_path / "in" / "big.png")
    save(half_image(40, 40, 0), tmp_path / "in" / "small.png")
    result = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--memory-budget", "300",
                       "--save", "mask")
    assert result.exit_code == 3, result.output
    assert "big.png: its prediction would hold" in result.output and "more than the memory budget" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["input"] for r in summary["images"]] == ["small.png"]
    assert not list((tmp_path / "out").glob("big.png.*"))

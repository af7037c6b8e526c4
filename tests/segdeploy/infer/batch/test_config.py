"""BatchConfig: every setting through segtrain.common.settings, its defaults where the CLI reads them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from segdeploy.cli import main
from segdeploy.infer.batch.config import RECORDED_SETTINGS, BatchConfig, default_memory_budget
from segtrain.common import settings
from segtrain.common.settings import SettingError


def test_the_budget_default_lives_in_batch_config_and_the_flag_is_checked(model: Path, tmp_path: Path) -> None:
    assert BatchConfig(sources="x", out_dir=tmp_path, model=model).memory_budget == default_memory_budget() >= 256
    res = CliRunner().invoke(main, ["batch", "x", "--out", str(tmp_path), "--memory-budget", "0"])
    assert res.exit_code == 2 and "'--memory-budget': 0 is not in the range" in res.stderr


def test_values_are_converted_and_normalised(model: Path, tmp_path: Path) -> None:
    config = BatchConfig(sources=["a", tmp_path], out_dir=str(tmp_path / "out"), model=str(model), save="color,rle",
                         tile="AUTO", tile_overlap=0, alpha=1, batch_size=2.0, gt=str(tmp_path / "labels.json"))
    assert config.sources == ("a", tmp_path) and config.out_dir == tmp_path / "out" and config.model == model
    assert config.save == ("mask", "color", "rle")  # in SAVE_CHOICES order, the mask always
    assert config.tile == "auto" and config.tile_overlap == 0.0 and config.alpha == 1.0 and config.batch_size == 2
    assert config.gt == tmp_path / "labels.json" and BatchConfig(sources="x", out_dir=tmp_path, model=model,
                                                                 tile="640").tile == 640
    assert BatchConfig(sources=tmp_path, out_dir=tmp_path, model=model).sources == (tmp_path,)  # one, given bare


@pytest.mark.parametrize(("settings", "message"), [
    ({"alpha": 2}, "--alpha must be from 0 to 1, got 2"),
    ({"alpha": float("nan")}, "--alpha must be a finite number, got nan"),
    ({"batch_size": 0}, "--batch-size must be from 1 to 256, got 0"),
    ({"workers": 0}, "--workers must be from 1 to 64, got 0"),
    ({"threads": 0}, "--threads must be from 1 to 256, got 0"),
    ({"memory_budget": 0}, "--memory-budget must be from 1 to 16777216, got 0"),
    ({"runtime": "openvion"}, "--runtime must be one of auto, onnxruntime, openvino, got 'openvion' (did you mean"),
    ({"provider": "gpu"}, "--provider must be one of auto, cpu, cuda, tensorrt, got 'gpu'"),
    ({"save": ("mask", "probs")},
     "--save must name outputs from mask, overlay, color, confidence, rle, frames, got probs"),
    ({"tile": "big"}, "--tile must be auto, off or a tile size in pixels from 16 to 65536, got 'big'"),
    ({"tile": 8}, "--tile must be auto, off or a tile size in pixels from 16 to 65536, got 8"),
    ({"tile_overlap": 0.9}, "--tile-overlap must be from 0 to 0.75, got 0.9"),
    ({"shard": "0/2"}, "--shard must be a Shard (segdeploy.infer.batch.shards), got '0/2'"),
    ({"sources": ()},
     "--sources must name at least one folder, image or video file, quoted glob pattern, video URL or camera"),
    ({"overwrite": "maybe"}, "--overwrite must be true or false, got 'maybe'"),
    ({"model": None}, "--model must be set"),
])
def test_a_bad_setting_is_one_line_naming_it(model: Path, tmp_path: Path, settings: dict, message: str) -> None:
    with pytest.raises(SettingError) as e:
        BatchConfig(**{"sources": "x", "out_dir": tmp_path, "model": model, **settings})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_the_summary_records_the_settings_that_shape_the_outputs(model: Path, tmp_path: Path) -> None:
    config = BatchConfig(sources="x", out_dir=tmp_path, model=model, save=("overlay",), workers=3, threads=2)
    assert config.recorded() == {"batch_size": 4, "runtime": "auto", "threads": 2, "workers": 3, "alpha": 0.5,
                                 "overwrite": False, "save": ["mask", "overlay"], "legend": False, "tile": "auto",
                                 "tile_overlap": 0.25, "tta": "off", "engine": "local", "actors": None}
    assert set(RECORDED_SETTINGS) <= {f.name for f in dataclasses.fields(BatchConfig)}


def test_cli_defaults_are_the_config_defaults() -> None:
    """What `segdeploy batch` passes when no flag is given is BatchConfig's default, or nothing (its factory)."""
    from segdeploy.cli import batch_command

    given = batch_command.make_context("batch", ["in", "--out", "out"]).params
    for field in dataclasses.fields(BatchConfig):
        if field.name not in ("sources", "out_dir", "model"):
            expected = settings.default(BatchConfig, field.name) if field.default is not dataclasses.MISSING else None
            assert given[field.name] == expected, field.name

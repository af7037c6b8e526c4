"""One typed configuration path: --config values and flags go through the same types and checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from segtrain.cli import main
from segtrain.common.settings import COMMAND_LINE, SettingError, build, coerce, default
from segtrain.training.config import TrainConfig, load_config_file


def build_config(layers):
    return build(TrainConfig, layers)


def fit_args(*extra: str) -> list[str]:
    return ["fit", "deeplab", *extra]


def one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def test_yaml_strings_become_the_fields_types(tmp_path: Path) -> None:
    cfg_file = tmp_path / "settings.yaml"
    cfg_file.write_text("lr: 1e-3\nimage_size: '64'\nepochs: 3\nweight-decay: '0'\namp: 'yes'\n"
                        "categories: [person, 17]\npatience: null\n")
    settings = load_config_file(cfg_file)
    assert settings["lr"] == "1e-3"  # what PyYAML hands over: a string
    cfg = build_config([(str(cfg_file), settings)])
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.image_size == 64 and cfg.epochs == 3 and cfg.weight_decay == 0.0 and cfg.amp is True
    assert cfg.categories == ["person", "17"] and cfg.patience is None


def test_later_layers_win_and_flags_use_the_same_conversion(tmp_path: Path) -> None:
    cfg = build_config([("a.yaml", {"epochs": "3", "lr": 0.5}), (COMMAND_LINE, {"epochs": "7"})])
    assert cfg.epochs == 7 and cfg.lr == 0.5
    with pytest.raises(SettingError, match=r"^--epochs must be a whole number, got 'seven'$"):
        build_config([(COMMAND_LINE, {"epochs": "seven"})])
    with pytest.raises(SettingError, match=r"^a.yaml: epochs must be a whole number, got 'seven'$"):
        build_config([("a.yaml", {"epochs": "seven"})])


@pytest.mark.parametrize("key,value,message", [
    ("epochs", "three", "epochs must be a whole number, got 'three'"),
    ("epochs", 0, "epochs must be at least 1, got 0"),
    ("epochs", True, "epochs must be a whole number, got True"),
    ("batch_size", 2.5, "batch_size must be a whole number, got 2.5"),
    ("lr", "fast", "lr must be a number, got 'fast'"),
    ("lr", "nan", "lr must be a finite number, got 'nan'"),
    ("lr", -1e-4, "lr must be at least 0, got -0.0001"),
    ("image_size", "100", "image_size must be a multiple of 32, got 100"),
    ("image_size", 65536, "image_size must be between 32 and 8192, got 65536"),
    ("lr_schedule", "cosin", "lr_schedule must be one of constant, poly, cosine, got 'cosin' (did you mean 'cosine'?)"),
    ("progress", "bars", "progress must be one of auto, bar, log, off, got 'bars' (did you mean 'bar'?)"),
    ("patience", 0, "patience must be at least 1, got 0"),
    ("amp", "maybe", "amp must be true or false, got 'maybe'"),
    ("data", None, "data must be set (it has no 'none' value)"),
    ("categories", 5, "categories must be a list of names or ids (or 'a,b,c'), got 5"),
])
def test_bad_values_name_the_key_and_the_file(key: str, value: object, message: str) -> None:
    with pytest.raises(SettingError) as err:
        coerce(TrainConfig, key, value, "settings.yaml")
    assert str(err.value) == f"settings.yaml: {message}"


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(SettingError, match=r"^s.yaml: unknown setting 'lr_shedule' \(did you mean 'lr_schedule'\?\)$"):
        build_config([("s.yaml", {"lr_shedule": "poly"})])
    with pytest.raises(SettingError, match=r"unknown setting 'zzz' \(known settings: model, data, "):
        build_config([("s.yaml", {"zzz": 1})])


def test_library_configs_are_checked_too() -> None:
    with pytest.raises(SettingError, match=r"^image_size must be a multiple of 32, got 100$"):
        TrainConfig(image_size=100).resolved()
    resolved = TrainConfig(data="some/../rel", lr="1e-3").resolved()
    assert resolved.lr == 1e-3 and resolved.data == os.path.abspath("rel")


def test_config_file_cases_through_the_cli(tmp_path: Path) -> None:
    """A config with 1e-3, "64" and a typo'd key: the typo is a one-line exit 2 naming key and file."""
    typo = tmp_path / "settings.yaml"
    typo.write_text("lr: 1e-3\nimage_size: '64'\nepoch: 3\n")
    assert one_line_error(CliRunner().invoke(main, fit_args("--config", str(typo)))) == (
        f"Error: {typo}: unknown setting 'epoch' (did you mean 'epochs'?)")
    three = tmp_path / "three.yaml"
    three.write_text("epochs: three\n")
    assert one_line_error(CliRunner().invoke(main, fit_args("--config", str(three)))) == (
        f"Error: {three}: epochs must be a whole number, got 'three'")
    assert one_line_error(CliRunner().invoke(main, fit_args("--epochs", "three"))) == (
        "Error: --epochs must be a whole number, got 'three'")
    assert one_line_error(CliRunner().invoke(main, fit_args("--lr", "nan"))) == (
        "Error: --lr must be a finite number, got 'nan'")


@pytest.mark.parametrize("make,message", [
    (lambda p: None, "config file not found"),
    (lambda p: p.mkdir(), "not a regular file"),
    (lambda p: os.mkfifo(p), "not a regular file"),  # reading a FIFO would block for ever
    (lambda p: p.write_text("[1, 2]"), "config file must hold a mapping of settings"),
    (lambda p: p.write_text("{broken"), "malformed config file"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00bad"), "cannot read config file"),
])
def test_unusable_config_files(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "cfg.json"
    make(path)
    line = one_line_error(CliRunner().invoke(main, fit_args("--config", str(path))))
    assert line.startswith(f"Error: {path}: {message}")


def test_help_defaults_come_from_the_dataclass() -> None:
    from segtrain.cli import fit_command

    helps = {p.name: p.help or "" for p in fit_command.params}
    for field in ("epochs", "batch_size", "optimizer", "image_size", "lr_schedule", "warmup_epochs", "progress",
                  "weight_decay", "seed", "device", "data", "encoder_weights"):
        assert f"[default: {default(TrainConfig, field)}]" in helps[field], (field, helps[field])
    assert "[default: 0.0001 for adam, 0.0001 for adamw, 0.01 for sgd]" in helps["lr"]
    flat = " ".join(CliRunner().invoke(main, ["fit", "--help"], terminal_width=400).output.split())
    for flag in ("--exist-ok", "--weight-decay", "--lr-schedule [constant|poly|cosine]", "--warmup-epochs",
                 "--patience", "--progress [auto|bar|log|off]", "--tensorboard"):
        assert flag in flat


def test_resolved_config_is_json(tmp_path: Path) -> None:
    cfg = build_config([(COMMAND_LINE, {"data": "d", "categories": "person,cat"})]).resolved()
    assert json.loads(json.dumps(cfg.to_dict()))["categories"] == ["person", "cat"]

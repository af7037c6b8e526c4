"""Every numeric option of both command lines has a range; a value outside it is one line, exit 2, before any work."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from segdeploy.cli import main as segdeploy
from segtrain.cli import main as segtrain


def numeric_params() -> list[tuple[str, str, click.Parameter]]:
    out = []
    for cli_name, group in (("segtrain", segtrain), ("segdeploy", segdeploy)):
        for command_name, command in group.commands.items():
            for param in command.params:
                if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)) or \
                        type(param.type).__name__ == "IntList":
                    out.append((cli_name, command_name, param))
    return out


def test_every_numeric_option_has_a_range() -> None:
    from segtrain.common.commandline import FiniteFloat

    params = numeric_params()
    assert len(params) >= 25  # the walk sees the options
    unbounded = []
    for cli_name, command, param in params:
        t = param.type
        ok = isinstance(t, (click.IntRange, FiniteFloat)) or (type(t).__name__ == "IntList" and t.maximum)
        if not ok:
            unbounded.append(f"{cli_name} {command} --{param.name.replace('_', '-')} ({t.name})")
    assert not unbounded, "numeric options without a range: " + "; ".join(unbounded)


@pytest.mark.parametrize(("cli", "args", "message"), [
    (segtrain, ["evaluate", "ck.pth", "--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
    (segtrain, ["sample-data", "x", "--seed", "-3"], "'--seed': -3 is not in the range x>=0"),
    (segdeploy, ["export", "ck.pth", "--verify-batch-size", "0"], "'--verify-batch-size': 0 is not in the range x>=1"),
    (segdeploy, ["export", "ck.pth", "--verify-images", "0"], "'--verify-images': 0 is not in the range x>=1"),
    (segdeploy, ["export", "ck.pth", "--opset", "1"], "'--opset': 1 is not in the range 18<=x<=23"),
    (segdeploy, ["export", "ck.pth", "--max-diff", "nan"], "'--max-diff': 'nan' is not a finite number"),
    (segdeploy, ["export", "ck.pth", "--max-diff", "inf"], "'--max-diff': 'inf' is not a finite number"),
    (segdeploy, ["export", "ck.pth", "--min-agreement", "101"], "'--min-agreement': 101.0 is not in the range"),
    (segdeploy, ["export", "ck.pth", "--calibration-images", "0"], "'--calibration-images': 0 is not in the range"),
    (segdeploy, ["evaluate", "m.onnx", "--threads", "0"], "'--threads': 0 is not in the range 1<=x<=256"),
    (segdeploy, ["evaluate", "m.onnx", "--batch-size", "0"], "'--batch-size': 0 is not in the range 1<=x<=256"),
    (segdeploy, ["bench", "--image-size", "100000"], "'--image-size': '100000': every value must be a positive "
                                                     "integer, at most 8192"),
    (segdeploy, ["bench", "--batch-sizes", "1,0"], "every value must be a positive integer, at most 4096"),
    (segdeploy, ["bench", "--sgemm-size", "1000000"], "'--sgemm-size': 1000000 is not in the range 16<=x<=16384"),
    (segdeploy, ["batch", "in", "--out", "o", "--alpha", "nan"], "'--alpha': 'nan' is not a finite number"),
    (segdeploy, ["batch", "in", "--out", "o", "--alpha", "1.5"], "'--alpha': 1.5 is not in the range 0.0<=x<=1.0"),
    (segdeploy, ["batch", "in", "--out", "o", "--tile-overlap", "nan"], "'--tile-overlap': 'nan' is not a finite"),
    (segdeploy, ["batch", "in", "--out", "o", "--batch-size", "0"], "'--batch-size': 0 is not in the range 1<=x<=256"),
    (segdeploy, ["batch", "in", "--out", "o", "--workers", "0"], "'--workers': 0 is not in the range 1<=x<=64"),
    (segdeploy, ["batch", "in", "--out", "o", "--memory-budget", "-5"], "'--memory-budget': -5 is not in the range"),
])
def test_values_outside_the_range_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, args: list,
                                                   message: str) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the repository
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and message in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Invalid value for") and "--help`)" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("cli", "args", "line"), [
    (segdeploy, ["--bogus"], "Error: No such option '--bogus' (see `segdeploy --help`)"),
    (segdeploy, ["batchh"], "Error: No such command 'batchh'. Did you mean 'batch'? (see `segdeploy --help`)"),
    (segdeploy, ["batch"], "Error: Missing argument 'SOURCE...' (see `segdeploy batch --help`)"),
    (segdeploy, ["batch", "in", "--frobnicate"], "Error: No such option '--frobnicate' (see `segdeploy batch --help`)"),
    (segtrain, ["evaluate", "ck.pth", "--split"], "Error: Option '--split' requires an argument "
                                                  "(see `segtrain evaluate --help`)"),
])
def test_every_usage_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, args: list,
                                       line: str) -> None:
    """Not click's usage block (Usage:, Try ..., a blank line, Error:): the error and where help is, one line."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, args, prog_name="segtrain" if cli is segtrain else "segdeploy")
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [line], res.output


@pytest.mark.parametrize("cli", [segtrain, segdeploy])
def test_a_bare_command_prints_its_help(cli) -> None:
    res = CliRunner().invoke(cli, [])
    assert res.output.startswith("Usage:") and "Exit codes:" in res.output and "Error" not in res.output


def test_every_numeric_fit_setting_has_a_rule() -> None:
    """`segtrain fit` options are settings: flags and --config values go through segtrain.common.settings.coerce,
    and TrainConfig's fields hold the ranges as rules (so a flag and a settings file are refused alike)."""
    import typing

    from segtrain.cli import fit_command
    from segtrain.common.settings import rule_of
    from segtrain.training.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    numeric = [p.name for p in fit_command.params
               if p.name in hints and {int, float} & set(typing.get_args(hints[p.name]) or (hints[p.name],))]
    assert len(numeric) >= 9 and not [name for name in numeric if rule_of(TrainConfig, name) is None]


@pytest.mark.parametrize(("args", "line"), [
    (["--lr", "nan"], "Error: --lr must be a finite number, got 'nan'"),
    (["--lr", "-1e-4"], "Error: --lr must be at least 0, got -0.0001"),
    (["--image-size", "100000"], "Error: --image-size must be between 32 and 8192, got 100000"),
    (["--image-size", "100"], "Error: --image-size must be a multiple of 32, got 100"),
    (["--epochs", "-1"], "Error: --epochs must be at least 1, got -1"),
    (["--workers", "1.5"], "Error: --workers must be a whole number, got '1.5'"),
])
def test_fit_settings_outside_their_range_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list,
                                                       line: str) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(segtrain, ["fit", "deeplab", *args])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [line], res.output
    assert list(tmp_path.iterdir()) == []


def test_the_opset_range_is_torchs() -> None:
    torch_constants = pytest.importorskip("torch.onnx._internal.exporter._constants")
    from torch.onnx import _constants

    from segdeploy.export.trace import MAX_OPSET, MIN_OPSET

    assert (MIN_OPSET, MAX_OPSET) == (torch_constants.TORCHLIB_OPSET, _constants.ONNX_MAX_OPSET)


def test_no_help_text_shows_an_empty_bound() -> None:
    for cli_name, group in (("segtrain", segtrain), ("segdeploy", segdeploy)):
        for command_name in group.commands:
            res = CliRunner().invoke(group, [command_name, "--help"], terminal_width=200)
            assert res.exit_code == 0, (cli_name, command_name)
            assert "None]" not in res.output and "x<=None" not in res.output, (cli_name, command_name)
    help_text = CliRunner().invoke(segdeploy, ["batch", "--help"], terminal_width=200).output
    assert "[default: 0.25; 0<=x<=0.75]" in help_text  # --tile-overlap: its range, from its setting


@pytest.mark.parametrize(("args", "hint"), [
    (["predict", "photos/"], "No such command 'predict'; `segdeploy batch SOURCE... --out DIR` segments images"),
    (["batch", "--source", "photos/", "--out", "o"], "No such option '--source'; SOURCE is an argument, not an "
                                                     "option: `segdeploy batch SOURCE... --out DIR`"),
    (["batch", "photos/", "--out", "o", "--device", "0"], "No such option '--device'; --provider auto|cpu|cuda|"
                                                          "tensorrt chooses where the model runs"),
    (["val", "m.onnx"], "`segdeploy evaluate MODEL.onnx --data DIR` scores a model"),
])
def test_habits_from_ultralytics_get_a_hint(args: list[str], hint: str) -> None:
    res = CliRunner().invoke(segdeploy, args)
    assert res.exit_code == 2 and hint in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_evaluate_without_a_dataset_names_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from colour_models import build_colour_model

    model = build_colour_model(tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(segdeploy, ["evaluate", str(model)])
    assert res.exit_code == 2
    assert res.output.strip() == "Error: data: dataset folder not found; --data names the dataset root (default: data)"

"""Fuzz: any value for any numeric option of both command lines is either refused as a usage error or accepted and
the command goes on to its (here missing) input: exit 2 with a last line "Error: ...", never a traceback.
(`segdeploy batch` over real inputs, with hostile names, kinds and text options: test_fuzz_batch.py.)
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from fuzzing import assert_ended_well, budget
from hypothesis import given
from hypothesis import strategies as st

from segdeploy.cli import main as segdeploy
from segtrain.cli import main as segtrain

CLIS = {"segtrain": segtrain, "segdeploy": segdeploy}
# Arguments that make each command stop at a missing or unusable input once its options are parsed.
BASE_ARGS = {
    ("segtrain", "sample-data"): ["a-file"],
    ("segtrain", "fit"): ["deeplab", "--data", "missing"],
    ("segtrain", "evaluate"): ["missing.pth"],
    ("segdeploy", "export"): ["missing.pth"],
    ("segdeploy", "evaluate"): ["missing.onnx"],
    ("segdeploy", "bench"): ["missing.onnx"],
    ("segdeploy", "batch"): ["missing-folder", "--out", "out", "--model", "missing.onnx"],
}


def numeric_options() -> list[tuple[str, str, str]]:
    out = []
    for cli_name, group in CLIS.items():
        for command_name, command in group.commands.items():
            for param in command.params:
                numeric = isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)) or \
                    type(param.type).__name__ == "IntList" or (cli_name, command_name, param.name) in FIT_NUMBERS
                if numeric and isinstance(param, click.Option) and (cli_name, command_name) in BASE_ARGS:
                    out.append((cli_name, command_name, param.opts[0]))
    return sorted(out)


def _fit_numbers() -> set[tuple[str, str, str]]:
    """`segtrain fit`'s numeric settings: text options that segtrain.training.config converts (int or float fields)."""
    import typing

    from segtrain.training.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    return {("segtrain", "fit", name) for name, hint in hints.items()
            if {int, float} & set(typing.get_args(hint) or (hint,))}


FIT_NUMBERS = _fit_numbers()


VALUES = (st.integers(-(10**20), 10**20).map(str) | st.floats(allow_nan=True, allow_infinity=True).map(repr)
          | st.sampled_from(["nan", "inf", "-inf", "1e309", "0", "-0", "1,2", "", " 3", "0x10", "1_000", "2,0,4",
                             "4096", "4097", "8192", "8193", "17", "18", "23", "24", "100", "100.0001"])
          | st.text(max_size=6))


def test_the_walk_finds_the_options() -> None:
    options = numeric_options()
    assert len(options) >= 20 and ("segdeploy", "export", "--opset") in options
    assert {("segdeploy", "batch", flag) for flag in ("--alpha", "--memory-budget", "--tile-overlap")} <= set(options)


@given(option=st.sampled_from(numeric_options()), value=VALUES)
@budget(80)
def test_numeric_option_values(tmp_path_factory, monkeypatch: pytest.MonkeyPatch, option: tuple, value: str) -> None:
    cli_name, command, flag = option
    work = tmp_path_factory.getbasetemp() / "fuzz-cli"
    work.mkdir(exist_ok=True)
    (work / "a-file").write_text("not a folder")
    monkeypatch.chdir(work)
    result = CliRunner().invoke(CLIS[cli_name], [command, *BASE_ARGS[(cli_name, command)], flag, value])
    assert_ended_well(result, allowed=(2,))
    assert sorted(p.name for p in Path(work).iterdir()) == ["a-file"]  # nothing was written

"""A command that needs an extra which is not installed says so in one line (exit 2), naming what to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from segdeploy.cli import main as segdeploy_main
from segtrain.cli import main as segtrain_main
from segtrain.common.extras import EXTRAS, MissingExtraError, extra_for_module, installed, missing_extra


def without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `import <module>` fail as it does where the package is not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(("cli", "args"), [
    (segtrain_main, ["fit", "deeplab", "--data", "{data}", "--epochs", "1"]),
    (segtrain_main, ["evaluate", "{ckpt}", "--data", "{data}"]),
    (segdeploy_main, ["export", "{ckpt}", "--out", "{tmp}/exported"]),
    (segdeploy_main, ["bench", "{ckpt}", "--data", "{data}"]),
])
def test_training_and_export_without_torch_say_which_extra_to_install(cli, args: list[str], sample_root: Path,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "best_model.pth"
    ckpt.write_bytes(b"not read: torch is needed first")
    without(monkeypatch, *EXTRAS["train"])
    argv = [a.format(data=sample_root, ckpt=ckpt, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: `"), result.output
    assert f" {argv[0]}` needs the 'train' extra" in lines[0] and 'pip install "segtrain[train]"' in lines[0]
    assert not isinstance(result.exception, ImportError)


def test_an_import_error_of_no_extra_is_not_disguised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only packages an extra brings are mapped; anything else stays the error it is."""
    assert missing_extra(ModuleNotFoundError("x", name="numpy")) is None
    assert extra_for_module("torch.nn") == "train" and extra_for_module("openvino.runtime") == "openvino"
    error = missing_extra(ModuleNotFoundError("x", name="openvino"), "--runtime openvino")
    assert isinstance(error, MissingExtraError) and error.exit_code == 2
    assert str(error) == ("--runtime openvino needs the 'openvino' extra, which is not installed here (no module "
                          "'openvino'): pip install \"segtrain[openvino]\"")
    without(monkeypatch, "torch")
    assert not installed("train")

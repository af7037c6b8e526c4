"""A PyTorch checkpoint given to an inference command: every command says to export it first. Both
`evaluate` commands score the same split by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from segdeploy.cli import evaluate_command as onnx_evaluate
from segdeploy.cli import main
from segtrain.cli import evaluate_command as checkpoint_evaluate
from segtrain.evaluation import DEFAULT_SPLIT


@pytest.fixture(params=["zip", "legacy"])
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "best_model.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, path, _use_new_zipfile_serialization=request.param == "zip")
    return path


@pytest.mark.parametrize("command", ["info", "evaluate", "batch"])
def test_inference_commands_say_to_export_a_checkpoint_first(command: str, checkpoint: Path, tmp_path: Path,
                                                             sample_root: Path) -> None:
    args = {"info": ["info", str(checkpoint)],
            "evaluate": ["evaluate", str(checkpoint), "--data", str(sample_root)],
            "batch": ["batch", str(sample_root / "test" / "data"), "--out", str(tmp_path / "preds"),
                      "--model", str(checkpoint)]}[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"Error: {checkpoint}: a PyTorch checkpoint, not an ONNX model; export it first: "
        f"`segdeploy export {checkpoint}`"], result.output


def test_both_evaluate_commands_default_to_the_same_split() -> None:
    defaults = [next(p.default for p in command.params if p.name == "split")
                for command in (onnx_evaluate, checkpoint_evaluate)]
    assert defaults == [DEFAULT_SPLIT, DEFAULT_SPLIT] and DEFAULT_SPLIT == "validation"


@pytest.mark.parametrize("command", ["info", "batch"])
def test_an_empty_model_file_is_named_as_empty(command: str, tmp_path: Path, sample_root: Path) -> None:
    empty = tmp_path / "zero.onnx"
    empty.write_bytes(b"")
    args = {"info": ["info", str(empty)],
            "batch": ["batch", str(sample_root / "test" / "data"), "--out", str(tmp_path / "preds"),
                      "--model", str(empty)]}
    result = CliRunner().invoke(main, args[command])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"Error: {empty}: empty file (0 bytes), not an ONNX model"], result.output
    assert not (tmp_path / "preds").exists()

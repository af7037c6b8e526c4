"""--resume of a last.pth that loads safely but is malformed: one line, exit 2, nothing in the run folder touched."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_arch import ARCH, POOL_ARCH, tiny_registered

from segtrain.cli import main
from segtrain.data.synthetic import make_sample_dataset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished epoch of `tinypool`: a good last.pth to break in many ways."""
    root = tmp_path_factory.mktemp("resume")
    data = make_sample_dataset(root / "data", seed=4, sizes={"train": 4, "validation": 2})
    with tiny_registered():
        res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--data", str(data), "--out", str(root / "run"),
                                        "--epochs", "1", "--encoder", "conv", "--encoder-weights", "none",
                                        "--image-size", "32", "--batch-size", "2", "--workers", "0",
                                        "--progress", "off"])
    assert res.exit_code == 0, res.output
    return root / "run"


def _set(path: tuple, value: object) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


CASES = {
    "no config": (_set(("config",), {}), "holds no training config, so the run cannot be resumed from it"),
    "unknown key": (_set(("config", "colour"), "red"),
                    "(its stored config): unknown setting 'colour' (known settings: "),
    "bad value": (_set(("config", "epochs"), "many"), "(its stored config): epochs must be a whole number, got 'many'"),
    "wrong shapes": (_set(("model", "head.weight"), torch.zeros(2, 2)), "weights do not fit the model ("),
    "optimizer shapes": (_set(("optimizer", "state", 0, "exp_avg"), torch.zeros(3)),
                         "optimizer state does not fit the model (exp_avg has shape (3,)"),
    "optimizer type": (_set(("optimizer",), [1, 2]), "optimizer state does not fit the model ("),
    "rng": (_set(("rng", "numpy"), torch.zeros(5, dtype=torch.int64)), "RNG state is unusable ("),
    "history": (_set(("history",), "lost"), "its training history is not one row per epoch 1..1"),
    "epoch": (_set(("epoch",), None), "records no finished epoch"),
    "best": (_set(("best_miou",), "high"), "its best mIoU is not a number ('high')"),
}


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_last_pth_is_one_line_and_touches_nothing(run_dir: Path, tmp_path: Path, case: str) -> None:
    change, message = CASES[case]
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    raw = torch.load(folder / "last.pth", weights_only=True)
    change(raw)
    torch.save(raw, folder / "last.pth")
    before = snapshot(folder)
    with tiny_registered():
        res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--resume", str(folder / "last.pth"), "--epochs", "2"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert lines[0].startswith(f"Error: {folder / 'last.pth'}") and message in lines[0], lines[0]
    assert snapshot(folder) == before


def test_resume_needs_last_pth_of_the_same_model_and_more_epochs(run_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    before = snapshot(folder)
    lacks = "lacks optimizer, scaler, rng, history, best_miou; use the run's last.pth"
    cases = {(POOL_ARCH, "best_model.pth", "2"): f"{folder / 'best_model.pth'}: cannot resume from it ({lacks})",
             (ARCH, "last.pth", "2"): f"{folder / 'last.pth'}: is a {POOL_ARCH} run; resume it with "
                                      f"`segtrain fit {POOL_ARCH} --resume {folder / 'last.pth'}`",
             (POOL_ARCH, "last.pth", "1"): f"--epochs 1: {folder / 'last.pth'} has finished 1 epochs already; "
                                           "give a larger --epochs (the new total) to continue it"}
    for (arch, name, epochs), message in cases.items():
        with tiny_registered():
            res = CliRunner().invoke(main, ["fit", arch, "--resume", str(folder / name), "--epochs", epochs])
        assert res.exit_code == 2 and res.output.strip().splitlines() == [f"Error: {message}"], res.output
    assert snapshot(folder) == before


def test_onnx_file_given_as_a_checkpoint_gets_the_segdeploy_hint(tmp_path: Path) -> None:
    model = tmp_path / "deeplab.onnx"
    model.write_bytes(b"\x08\x07not really protobuf")
    res = CliRunner().invoke(main, ["evaluate", str(model)])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"Error: {model}: an ONNX model, not a segtrain checkpoint; ONNX models are scored with "
        f"`segdeploy evaluate {model}` (and described by `segdeploy info`)"]

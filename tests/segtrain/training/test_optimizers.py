"""--optimizer adam|adamw|sgd (momentum 0.9, --nesterov) under the existing schedules, recorded in the config;
the default lr follows the optimizer; a resumed run keeps its optimizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_arch import POOL_ARCH, tiny_config, tiny_registered

from segtrain.cli import main
from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.checkpoint import CheckpointError
from segtrain.training.config import TrainConfig
from segtrain.training.loop import fit
from segtrain.training.schedule import lr_factor

TINY = ["--encoder", "conv", "--encoder-weights", "none", "--image-size", "32", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--progress", "off"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("optim") / "data", seed=7, sizes={"train": 4, "validation": 2})


@pytest.fixture(autouse=True)
def _tiny():
    with tiny_registered():
        yield


def test_default_lr_follows_the_optimizer() -> None:
    assert TrainConfig().resolved().lr == 1e-4 and TrainConfig(optimizer="adamw").resolved().lr == 1e-4
    assert TrainConfig(optimizer="sgd").resolved().lr == 0.01
    assert TrainConfig(optimizer="sgd", lr=0.02).resolved().lr == 0.02


def test_sgd_with_nesterov_and_poly_trains_and_is_recorded(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--data", str(data), "--out", str(out), *TINY, "--epochs", "2",
                                    "--optimizer", "sgd", "--nesterov", "--lr-schedule", "poly",
                                    "--weight-decay", "5e-4"])
    assert res.exit_code == 0, res.output
    last = torch.load(out / "last.pth", weights_only=True)
    group = last["optimizer"]["param_groups"][0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 5e-4)
    assert all("momentum_buffer" in s for s in last["optimizer"]["state"].values())  # SGD's state, not Adam's
    assert group["lr"] == pytest.approx(0.01 * lr_factor("poly", 3, 4))  # 2 steps per epoch, the last one
    assert (last["config"]["optimizer"], last["config"]["nesterov"], last["config"]["lr"]) == ("sgd", True, 0.01)


@pytest.mark.parametrize("name, state_key", [("adam", "exp_avg"), ("adamw", "exp_avg")])
def test_adam_and_adamw(name: str, state_key: str, data: Path, tmp_path: Path) -> None:
    fit(tiny_config(data, tmp_path / "run", epochs=1, optimizer=name, weight_decay=0.01), log=lambda _: None)
    last = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert all(state_key in s for s in last["optimizer"]["state"].values())
    assert last["config"]["optimizer"] == name
    assert last["optimizer"]["param_groups"][0]["decoupled_weight_decay"] == (name == "adamw")


def test_nesterov_without_sgd_is_refused(data: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--data", str(data), "--out", str(tmp_path / "r"), *TINY,
                                    "--nesterov"])
    assert res.exit_code == 2 and res.output.startswith("Error: nesterov: Nesterov momentum is an SGD setting")
    assert not (tmp_path / "r").exists()


def test_resume_with_another_optimizer_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(tiny_config(data, out, epochs=1), log=lambda _: None)
    with pytest.raises(CheckpointError, match="was trained with adam, so --optimizer sgd cannot continue"):
        fit(tiny_config(data, out, epochs=2, optimizer="sgd"), resume=out / "last.pth", log=lambda _: None)
    res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--resume", str(out / "last.pth"), "--epochs", "2"])
    assert res.exit_code == 0, res.output

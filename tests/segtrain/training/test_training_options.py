"""Training basics: lr schedules and warm-up, weight decay, early stop, progress lines, resume on the same curve."""

from __future__ import annotations

import csv
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from tiny_arch import PLAIN_ARCH, tiny_config, tiny_registered

import segtrain.training.loop as train_mod
from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.config import TrainConfig
from segtrain.training.loop import fit
from segtrain.training.progress import Progress, format_seconds, resolve_mode
from segtrain.training.schedule import lr_factor


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("options") / "data", seed=6,
                               sizes={"train": 6, "validation": 3})


def cfg(data: Path, out: Path, **kw) -> TrainConfig:
    return tiny_config(data, out, **{"epochs": 3, **kw})


def csv_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_lr_factor() -> None:
    assert [lr_factor("constant", s, 10) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [lr_factor("constant", s, 10, warmup=4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10) == pytest.approx(0.0)
    assert lr_factor("poly", 5, 10) == pytest.approx(0.5 ** 0.9)
    assert lr_factor("cosine", 2, 10, warmup=2) == 1.0  # the decay starts after the warm-up
    assert lr_factor("poly", 6, 10, warmup=2) == pytest.approx(0.5 ** 0.9)


def test_schedule_and_weight_decay_reach_the_optimizer(data: Path, tmp_path: Path) -> None:
    """Each epoch's recorded lr is the schedule's value at its last step (3 steps per epoch)."""
    with tiny_registered():
        fit(cfg(data, tmp_path / "run", lr_schedule="cosine", warmup_epochs=1, weight_decay=0.01),
            log=lambda _: None)
    rows = csv_rows(tmp_path / "run" / "metrics.csv")
    expected = [0.01 * lr_factor("cosine", 3 * e - 1, 9, warmup=3) for e in (1, 2, 3)]
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected, abs=1e-6)
    last = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert last["optimizer"]["param_groups"][0]["weight_decay"] == 0.01
    assert last["config"]["lr_schedule"] == "cosine" and last["config"]["warmup_epochs"] == 1


def test_resume_follows_the_same_schedule_as_a_straight_run(data: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    settings = dict(epochs=4, lr_schedule="poly", warmup_epochs=1, weight_decay=1e-3)
    with tiny_registered():
        fit(cfg(data, tmp_path / "straight", **settings), log=lambda _: None)
        with monkeypatch.context() as m:  # stop after epoch 2, as an interrupted run would
            m.setattr(train_mod, "should_stop", lambda history, patience: len(history) == 2)
            fit(cfg(data, tmp_path / "resumed", **settings), log=lambda _: None)
        assert torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)["epoch"] == 2
        fit(cfg(data, tmp_path / "resumed", **settings), resume=tmp_path / "resumed" / "last.pth", log=lambda _: None)
    a = torch.load(tmp_path / "straight" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert (tmp_path / "straight" / "metrics.csv").read_text() == (tmp_path / "resumed" / "metrics.csv").read_text()


def test_early_stop_at_the_right_epoch_when_miou_cannot_improve(data: Path, tmp_path: Path) -> None:
    """lr 0 and no BatchNorm: every epoch scores the same, so the best stays epoch 1 and epoch 1 + patience stops."""
    lines: list[str] = []
    with tiny_registered():
        result = fit(cfg(data, tmp_path / "run", model=PLAIN_ARCH, lr=0.0, epochs=10, patience=2), log=lines.append)
    assert result.epochs_run == 3 and result.stopped_early and result.best_epoch == 1
    assert [int(r["epoch"]) for r in csv_rows(tmp_path / "run" / "metrics.csv")] == [1, 2, 3]
    assert torch.load(tmp_path / "run" / "best_model.pth", weights_only=True)["epoch"] == 1
    assert lines[-1] == ("early stop after epoch 3: validation mIoU has not improved for 2 epoch(s); "
                         "best_model.pth is epoch 1")


def test_log_progress_prints_step_rate_loss_and_eta() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = Progress("log", total=10, desc="epoch 2/5 train", log=lines.append, interval=30,
                        run_left=120.0, clock=lambda: now[0])
    for step in range(10):
        now[0] += 10.0  # 10 s per step of 4 images
        progress.update(4, loss=1.0 + step)
    # a line every 30 s, never for the last step (the epoch summary follows it)
    assert lines == ["epoch 2/5 train: step 3/10 (30%), 0.4 img/s, loss 2.0000, ETA 1m10s (run: 3m10s)",
                     "epoch 2/5 train: step 6/10 (60%), 0.4 img/s, loss 3.5000, ETA 40s (run: 2m40s)",
                     "epoch 2/5 train: step 9/10 (90%), 0.4 img/s, loss 5.0000, ETA 10s (run: 2m10s)"]
    assert format_seconds(3725) == "1h02m"


def test_fit_logs_progress_lines_when_asked(data: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    with tiny_registered():
        fit(cfg(data, tmp_path / "run", epochs=1, progress="log"), log=lines.append, log_interval=0.0)
    train = [line for line in lines if line.startswith("epoch 1/1 train: step")]
    assert len(train) == 2  # 3 steps: a line after steps 1 and 2, then the epoch summary
    pattern = r"epoch 1/1 train: step \d/3 \(\d+%\), [\d.]+ img/s, loss \d+\.\d{4}, ETA \d+s$"
    assert all(re.match(pattern, line) for line in train), train
    assert any(line.startswith("epoch 1/1 validate: step 1/2") for line in lines), lines


def test_auto_progress_is_a_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for stream in (sys.stdout, sys.stderr):
        monkeypatch.setattr(stream, "isatty", lambda: True, raising=False)
    assert resolve_mode("auto") == "bar" and resolve_mode("auto", is_main=False) == "off"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert resolve_mode("auto") == "log" and resolve_mode("off") == "off"
    assert math.isfinite(float(format_seconds(5)[:-1]))

"""segtrain fit / evaluate: artifacts, best checkpoint, resume equivalence, overfitting, failures."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import segtrain.training.loop as train_mod
from segtrain.cli import main
from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.checkpoint import Checkpoint, CheckpointError
from segtrain.training.config import TrainConfig
from segtrain.training.loop import fit

SMALL = ["--image-size", "64", "--encoder", "resnet18", "--encoder-weights", "none", "--workers", "0"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("tiny") / "data", seed=1,
                               sizes={"train": 12, "validation": 6, "test": 4})


def small_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="deeplab", data=str(data), out=str(out), epochs=2, batch_size=4, image_size=64,
                encoder="resnet18", encoder_weights="none", workers=0, seed=0, progress="off")
    return TrainConfig(**{**base, **kw})


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_fit_cli_on_coco_mini_writes_every_artifact(coco_mini, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["fit", "deeplab", "--data", str(coco_mini), "--out", str(out), "--epochs", "2",
                                    "--batch-size", "16", *SMALL])
    assert res.exit_code == 0, res.output
    for name in ("best_model.pth", "last.pth", "loss.png", "miou.png", "confusion.png", "samples.png", "metrics.csv",
                 "config.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in ("loss.png", "miou.png"):
        assert Image.open(out / png).size[0] > 200
    rows = read_csv(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "miou", "iou_person", "iou_book"} <= set(rows[0])
    best_row = max(rows, key=lambda r: float(r["miou"]))
    best = torch.load(out / "best_model.pth", weights_only=True)
    assert best["epoch"] == int(best_row["epoch"])
    assert best["metrics"]["miou"] == pytest.approx(float(best_row["miou"]), abs=1e-6)
    assert best["spec"]["classes"] == ["background", "person", "cat", "sports ball", "book"]
    assert best["config"]["data"] == str(coco_mini) and "optimizer" not in best
    assert json.loads((out / "config.json").read_text())["image_size"] == 64
    assert f"best validation mIoU {100 * float(best_row['miou']):.2f}% at epoch {best_row['epoch']}" in res.output

    ev = CliRunner().invoke(main, ["evaluate", str(out / "best_model.pth"), "--split", "test", "--json"])
    assert ev.exit_code == 0, ev.output
    metrics = json.loads(ev.output)
    assert 0.0 <= metrics["miou"] <= 1.0 and set(metrics["iou"]) == set(best["spec"]["classes"])


def test_resume_gives_the_same_weights_and_metrics_as_a_straight_run(tiny, tmp_path):
    fit(small_cfg(tiny, tmp_path / "straight", epochs=4), log=lambda s: None)
    fit(small_cfg(tiny, tmp_path / "resumed", epochs=2), log=lambda s: None)
    fit(small_cfg(tiny, tmp_path / "resumed", epochs=4), resume=tmp_path / "resumed" / "last.pth",
        log=lambda s: None)
    a = torch.load(tmp_path / "straight" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert (tmp_path / "straight" / "metrics.csv").read_text() == (tmp_path / "resumed" / "metrics.csv").read_text()


def test_resume_through_the_cli_continues_from_the_next_epoch(tiny, tmp_path):
    out = tmp_path / "run"
    args = ["fit", "deeplab", "--data", str(tiny), "--out", str(out), "--batch-size", "4", *SMALL]
    assert CliRunner().invoke(main, [*args, "--epochs", "1"]).exit_code == 0
    res = CliRunner().invoke(main, ["fit", "deeplab", "--resume", str(out / "last.pth"), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert "epoch 1/2" not in res.output and "epoch 2/2" in res.output
    assert [int(r["epoch"]) for r in read_csv(out / "metrics.csv")] == [1, 2]


def test_config_file_is_read_and_flags_win(tiny, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"data": str(tiny), "epochs": 3, "image-size": 64, "batch_size": 4,
                               "encoder": "resnet18", "encoder_weights": "none", "workers": 0}))
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["fit", "deeplab", "--config", str(cfg), "--epochs", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    written = json.loads((out / "config.json").read_text())
    assert written["epochs"] == 1 and written["image_size"] == 64 and written["loss"] == "ce"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochz": 3}))
    res = CliRunner().invoke(main, ["fit", "deeplab", "--config", str(bad)])
    assert res.exit_code == 2 and f"{bad}: unknown setting 'epochz' (did you mean 'epochs'?)" in res.output


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    real = train_mod.SegLoss

    class NanAfterEpochOne(real):
        calls = 0

        def forward(self, logits, target):
            if self.training:
                NanAfterEpochOne.calls += 1
            loss = super().forward(logits, target)
            return loss * float("nan") if NanAfterEpochOne.calls > 3 else loss  # 3 train steps = epoch 1

    monkeypatch.setattr(train_mod, "SegLoss", NanAfterEpochOne)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["fit", "deeplab", "--data", str(tiny), "--out", str(out), "--epochs", "3",
                                    "--batch-size", "4", *SMALL])
    assert res.exit_code == 1
    assert "loss became non-finite (nan) at epoch 2, step 1" in res.output
    assert Checkpoint.load(out / "last.pth").epoch == 1 and (out / "best_model.pth").is_file()


def test_overfits_four_real_images(coco_mini):
    """A few dozen steps on 4 coco-mini photos at 128 px drive their mIoU above 0.8."""
    from segtrain.contract import build_spec
    from segtrain.data.coco import CocoSplit
    from segtrain.metrics import ConfusionMatrix
    from segtrain.models import build_model
    from segtrain.training.dataset import SegmentationDataset
    from segtrain.training.losses import SegLoss

    torch.manual_seed(0)
    split = CocoSplit.open(coco_mini, "train")
    idx = [i for i, r in enumerate(split.records) if r.anns][:4]
    spec = build_spec("deeplab", "resnet18", split.categories, 128)
    ds = SegmentationDataset(split, spec)
    x = torch.stack([ds[i][0] for i in idx])
    y = torch.stack([ds[i][1] for i in idx])
    model = build_model(spec, "none")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = SegLoss("ce", spec.ignore_index)
    for _ in range(40):
        model.train()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    cm = ConfusionMatrix(spec.num_classes)
    cm.update(y.numpy(), pred.numpy())
    assert cm.miou() > 0.8, cm.iou()


def test_bad_checkpoints_give_one_line_errors(tiny, tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    evil = tmp_path / "evil.pth"
    torch.save({"format": "segtrain-checkpoint", "payload": _Evil()}, evil)
    cases = {text: "not a readable checkpoint", foreign: "not a segtrain checkpoint",
             evil: "refused, not a plain weights checkpoint", tmp_path / "none.pth": "checkpoint not found"}
    for path, message in cases.items():
        res = CliRunner().invoke(main, ["evaluate", str(path), "--data", str(tiny)])
        assert res.exit_code == 2, (path, res.output)
        assert f"{path}: {message}" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CheckpointError, match="cannot resume"):
        out = tmp_path / "run"
        fit(small_cfg(tiny, out, epochs=1), log=lambda s: None)
        fit(small_cfg(tiny, out, epochs=2), resume=out / "best_model.pth", log=lambda s: None)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path.cwd() / 'pwned'}",))


def test_fit_rejects_bad_settings(tiny):
    res = CliRunner().invoke(main, ["fit", "deeplab", "--data", str(tiny), "--image-size", "100", *SMALL[2:]])
    assert res.exit_code == 2 and "--image-size must be a multiple of 32, got 100" in res.output
    res = CliRunner().invoke(main, ["fit", "deeplab", "--data", str(tiny / "nope"), *SMALL])
    assert res.exit_code == 2 and "dataset folder not found" in res.output
    res = CliRunner().invoke(main, ["fit", "deeplab", "--data", str(tiny), "--device", "cuda:7", *SMALL])
    assert res.exit_code == 2 and "cuda:7" in res.output



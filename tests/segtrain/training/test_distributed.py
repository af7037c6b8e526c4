"""torchrun + DistributedDataParallel on CPU (gloo): one short epoch on coco-mini."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from segtrain.cli import main

EXPECTED = {"best_model.pth", "last.pth", "loss.png", "miou.png", "confusion.png", "samples.png", "metrics.csv",
            "config.json"}


@pytest.mark.slow
def test_two_process_ddp_epoch_matches_single_process_evaluation(coco_mini, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "segtrain", "fit", "deeplab", "--data", str(coco_mini), "--out", str(out), "--epochs", "1",
           "--image-size", "64", "--encoder", "resnet18", "--encoder-weights", "none", "--batch-size", "16",
           "--workers", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert "2 process(es)" in log
    # Rank 0 alone reports and writes: one summary, exactly the expected files, no temporaries.
    assert log.count("best validation mIoU") == 1 and log.count("epoch 1/1:") == 1
    assert {p.name for p in out.iterdir()} == EXPECTED
    with open(out / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    # The DDP validation (each rank scores half the images, confusion matrices summed) equals
    # one process scoring every image with the same checkpoint.
    single = CliRunner().invoke(main, ["evaluate", str(out / "best_model.pth"), "--data", str(coco_mini),
                                       "--at-input-size", "--json", "--device", "cpu"])
    assert single.exit_code == 0, single.output
    metrics = json.loads(single.output)
    assert metrics["miou"] == pytest.approx(float(row["miou"]), abs=2e-6)
    assert metrics["pixel_accuracy"] == pytest.approx(float(row["pixel_accuracy"]), abs=2e-6)
    assert json.loads((out / "config.json").read_text())["batch_size"] == 16

"""torchrun + DistributedDataParallel on CPU (gloo): one short epoch on coco-mini."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from segtrain.cli import main

EXPECTED = {"best_model.pth", "last.pth", "loss.png", "miou.png", "confusion.png", "samples.png", "metrics.csv",
            "config.json"}


def torchrun_fit(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "segtrain", "fit", *args]


@pytest.mark.slow
@pytest.mark.parametrize("aux", [False, True], ids=["plain", "aux-loss"])
def test_two_process_ddp_epoch_matches_single_process_evaluation(coco_mini, tmp_path, aux):
    out = tmp_path / "ddp"
    cmd = torchrun_fit("deeplab", "--data", str(coco_mini), "--out", str(out), "--epochs", "1",
                       "--image-size", "64", "--encoder", "resnet18", "--encoder-weights", "none", "--batch-size", "16",
                       "--workers", "0", "--device", "cpu", *(["--aux-loss", "0.5"] if aux else []))
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
    # with --aux-loss, DDP trains the model and its head together; the head is kept for --resume only
    last = torch.load(out / "last.pth", weights_only=True)
    assert ("aux_head" in last) == aux and last["config"]["aux_loss"] == (0.5 if aux else 0.0)


def test_sync_bn_on_cpu_is_one_line_before_anything_is_written(tmp_path):
    res = subprocess.run(torchrun_fit("deeplab", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "r"),
                                      "--device", "cpu", "--sync-bn"),
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]  # each rank: one line
    assert res.returncode != 0 and errors, res.stderr[-2000:]
    assert set(errors) == {"Error: sync_bn: SyncBatchNorm works on CUDA devices only, and this run is on cpu; "
                           "run without --sync-bn"}
    assert not (tmp_path / "r").exists()

"""Training never crashes on the dataset's size: images x batch size x processes (gloo, 2 ranks).

`tinypool` has DeepLabV3's image-pooling branch, whose BatchNorm sees one value per channel in a
1-image batch (the crash users met: "Expected more than 1 value per channel when training").
Every cell trains one epoch; validation must score every image exactly once, which the
confusion matrix's row sums (pixels per true class, independent of the predictions) show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from process_group import run_ranks
from tiny_arch import POOL_ARCH, tiny_registered
from train_grid import cell_name, fit_cell, fit_cells

from segtrain.contract import build_spec
from segtrain.data.coco import CocoSplit
from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.dataset import SegmentationDataset

SIZES = (1, 2, 3, 5)         # images in train and in validation
BATCH_SIZES = (1, 2, 4)
CELLS = [(n, b) for n in SIZES for b in BATCH_SIZES]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sizes")
    for n in SIZES:
        make_sample_dataset(root / f"n{n}", seed=n, sizes={"train": n, "validation": n})
    return root


@pytest.fixture(scope="module")
def two_process_results(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every cell trained by 2 processes sharing one gloo process group (one spawn for the whole grid)."""
    out = tmp_path_factory.mktemp("ddp-grid")
    try:
        run_ranks(fit_cells, (CELLS, str(datasets), str(out), 2), world_size=2, workdir=out, timeout=600)
    except (TimeoutError, Exception) as e:  # cells that finished still report below
        print(f"process group ended with: {e}")
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")} | {"_out": {"path": str(out)}}


def true_class_pixels(data: Path) -> np.ndarray:
    """Pixels per true class over every validation image at the input size (what validation must count)."""
    split = CocoSplit.open(data, "validation")
    spec = build_spec(POOL_ARCH, "conv", split.categories, 32)
    ds = SegmentationDataset(split, spec)
    masks = np.stack([ds[i][1].numpy() for i in range(len(ds))])
    return np.bincount(masks[masks != spec.ignore_index].ravel(), minlength=spec.num_classes)


def check_run(out: Path, data: Path) -> None:
    best = torch.load(out / "best_model.pth", weights_only=True)
    last = torch.load(out / "last.pth", weights_only=True)
    assert last["epoch"] == 1 and np.isfinite(last["history"][0]["train_loss"])
    rows = np.asarray(best["metrics"]["confusion"]).sum(1)
    np.testing.assert_array_equal(rows, true_class_pixels(data))  # each validation image scored once


@pytest.mark.parametrize("n,batch", CELLS, ids=[cell_name(c, 1) for c in CELLS])
def test_one_process_trains_any_size_with_any_batch(datasets: Path, tmp_path: Path, n: int, batch: int) -> None:
    with tiny_registered():
        result = fit_cell(datasets / f"n{n}", tmp_path / "run", batch)
    assert result.epochs_run == 1
    check_run(tmp_path / "run", datasets / f"n{n}")


@pytest.mark.parametrize("n,batch", CELLS, ids=[cell_name(c, 2) for c in CELLS])
def test_two_processes_train_any_size_with_any_batch(two_process_results: dict, datasets: Path, n: int,
                                                     batch: int) -> None:
    name = cell_name((n, batch), 2)
    result = two_process_results.get(name)
    assert result is not None, f"{name} never finished (a crash or a hang in another process)"
    assert result["ok"], result.get("error")
    assert result["epochs_run"] == 1
    check_run(Path(two_process_results["_out"]["path"]) / name, datasets / f"n{n}")

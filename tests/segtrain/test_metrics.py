"""IoU from the confusion matrix against torchmetrics' multiclass Jaccard index."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_jaccard_index

from segtrain.metrics import ConfusionMatrix

K, IGNORE = 5, 255


def reference_iou(target: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """torchmetrics per-class IoU, with classes absent from truth and prediction set to NaN."""
    t, p = torch.from_numpy(target.astype(np.int64)), torch.from_numpy(pred.astype(np.int64))
    iou = multiclass_jaccard_index(p, t, num_classes=K, ignore_index=IGNORE, average=None).numpy().astype(float)
    valid = t != IGNORE
    for c in range(K):
        if not ((t[valid] == c).any() or (p[valid] == c).any()):
            iou[c] = math.nan
    return iou


def ours(target: np.ndarray, pred: np.ndarray, chunks: int = 1) -> ConfusionMatrix:
    cm = ConfusionMatrix(K, IGNORE)
    for t, p in zip(np.array_split(target, chunks), np.array_split(pred, chunks), strict=True):
        cm.update(t, p)
    return cm


@pytest.mark.parametrize("seed", range(5))
def test_random_inputs_match_torchmetrics(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, K, size=(3, 17, 23))
    target[rng.random(target.shape) < 0.1] = IGNORE
    pred = np.where(rng.random(target.shape) < 0.6, target % K, rng.integers(0, K, size=target.shape))
    cm = ours(target, pred, chunks=3)  # accumulated over batches
    ref = reference_iou(target, pred)
    np.testing.assert_allclose(cm.iou(), ref, rtol=1e-6)
    assert cm.miou() == pytest.approx(np.nanmean(ref), rel=1e-6)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    target = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    cm = ours(target, pred)
    iou = cm.iou()
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(2 / 3)
    assert all(math.isnan(v) for v in iou[2:])
    assert cm.miou() == pytest.approx((0.5 + 2 / 3) / 2)
    np.testing.assert_allclose(iou, reference_iou(target, pred))
    assert cm.result(["bg", "a", "b", "c", "d"]).absent == ["b", "c", "d"]


def test_class_predicted_but_absent_from_truth_scores_zero():
    target = np.zeros((4, 4), int)
    pred = target.copy()
    pred[0, 0] = 3
    iou = ours(target, pred).iou()
    assert iou[3] == 0.0 and iou[0] == pytest.approx(15 / 16)
    np.testing.assert_allclose(iou, reference_iou(target, pred))


def test_ignored_pixels_count_nowhere():
    target = np.full((4, 4), IGNORE)
    target[0] = 2
    pred = np.full((4, 4), 4)  # wrong everywhere, but only row 0 counts
    pred[0] = 2
    cm = ours(target, pred)
    assert cm.mat.sum() == 4 and cm.miou() == 1.0 and cm.pixel_accuracy() == 1.0


def test_everything_ignored_gives_nan_not_an_error():
    cm = ours(np.full((2, 2), IGNORE), np.zeros((2, 2), int))
    assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())


def test_table_and_json_report_absent_classes():
    res = ours(np.array([0, 1]), np.array([0, 1])).result(["background", "person", "cat", "ball", "book"])
    assert "n/a: absent from truth and prediction, left out of the mean: cat, ball, book" in res.table()
    d = res.to_dict()
    assert d["iou"]["cat"] is None and d["miou"] == 1.0


def test_frequency_weighted_iou_and_mean_accuracy_as_coco_stuff_defines_them():
    cm = ConfusionMatrix(3)
    cm.add(np.array([[50, 10, 0], [20, 20, 0], [0, 0, 0]]))  # class 2 absent from truth and prediction
    iou = [50 / 80, 20 / 50]
    assert cm.frequency_weighted_iou() == pytest.approx(0.6 * iou[0] + 0.4 * iou[1])
    assert cm.mean_accuracy() == pytest.approx((50 / 60 + 20 / 40) / 2)
    assert np.isnan(ConfusionMatrix(2).frequency_weighted_iou()) and np.isnan(ConfusionMatrix(2).mean_accuracy())

"""The training report: loss/mIoU curves, the confusion matrix, samples.png, and optional TensorBoard."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from tiny_arch import POOL_ARCH, tiny_config, tiny_registered

from segtrain.cli import main
from segtrain.contract import build_spec, colorize
from segtrain.data.coco import CocoSplit
from segtrain.data.synthetic import make_sample_dataset
from segtrain.models import load_model, torch_predictor
from segtrain.training.config import TrainConfig
from segtrain.training.loop import fit
from segtrain.training.plots import confusion_figure, loss_figure, miou_figure, normalised_rows
from segtrain.training.samples import SAMPLE_IMAGES, canvas_size, load_samples, placed_box, predict_masks


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("report") / "data", seed=5,
                               sizes={"train": 24, "validation": 6})


def tiny_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    return tiny_config(data, out, **{"batch_size": 1, "lr": 0.02, **kw})


@pytest.fixture(scope="module")
def two_epochs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report-run") / "run"
    with tiny_registered():
        assert fit(tiny_cfg(data, out), log=lambda _: None).epochs_run == 2
    return out


def test_report_images_exist_with_their_sizes(two_epochs: Path) -> None:
    spec = build_spec(POOL_ARCH, "conv", image_size=32)
    assert Image.open(two_epochs / "loss.png").size == (600, 400)
    assert Image.open(two_epochs / "miou.png").size == (700, 400)
    side = 2.2 + 0.55 * spec.num_classes
    assert Image.open(two_epochs / "confusion.png").size == (round(100 * (side + 1.2)), round(100 * side))
    h, w = canvas_size(SAMPLE_IMAGES, spec.num_classes)
    assert Image.open(two_epochs / "samples.png").size == (w, h)


def test_samples_prediction_column_is_the_best_models_masks_in_its_palette(two_epochs: Path, data: Path) -> None:
    with tiny_registered():
        model, ckpt = load_model(two_epochs / "best_model.pth")
    samples = load_samples(CocoSplit.open(data, "validation"))
    predictions = predict_masks(torch_predictor(model, torch.device("cpu")), samples.photos, ckpt.spec)
    picture = np.asarray(Image.open(two_epochs / "samples.png").convert("RGB"))
    palette = {tuple(c) for c in ckpt.spec.palette}
    shown = set()
    for row, pred in enumerate(predictions):
        left, top, right, bottom = placed_box(pred.shape, row, 2)
        cell = picture[top:bottom, left:right]
        expected = np.asarray(Image.fromarray(colorize(pred, ckpt.spec.palette)).resize(
            (right - left, bottom - top), Image.Resampling.NEAREST))
        assert (cell == expected).mean() > 0.99  # nearest-neighbour rounding may differ on a few edge pixels
        shown |= {tuple(c) for c in cell.reshape(-1, 3)}
    assert shown <= palette and len(shown) >= 2, shown  # the model's colours, more than one class


def history(epochs: int, classes: tuple[str, ...]) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        miou = [0.1, 0.3, 0.5, 0.4, 0.45, 0.2, 0.3][e - 1]
        rows.append({"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "miou": miou, "pixel_accuracy": 0.5,
                     "lr": 1e-4, **{f"iou_{c}": miou for c in classes}})
    return rows


def test_curves_have_whole_epoch_ticks_the_best_epoch_and_the_palette() -> None:
    spec = build_spec("deeplab", "resnet18", image_size=64)
    rows = history(7, spec.classes)
    for fig in (loss_figure(rows, best_epoch=3), miou_figure(rows, spec, best_epoch=3)):
        ax = fig.axes[0]
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        best = [line for line in ax.get_lines() if line.get_label() == "best (epoch 3)"]
        assert len(best) == 1 and list(best[0].get_xdata()) == [3, 3]
    lines = {line.get_label(): line for line in miou_figure(rows, spec, 3).axes[0].get_lines()}
    for name, colour in zip(spec.classes, spec.palette, strict=True):
        np.testing.assert_allclose(np.asarray(lines[name].get_color()) * 255, colour)
    assert lines["mIoU"].get_linewidth() > lines["background"].get_linewidth()  # background is black too


def test_confusion_is_row_normalised_with_class_names() -> None:
    matrix = np.array([[8, 2, 0], [0, 0, 0], [1, 1, 2]])
    norm = normalised_rows(matrix)
    np.testing.assert_allclose(norm[0], [0.8, 0.2, 0.0])
    assert np.isnan(norm[1]).all()  # a class absent from the truth has no row to normalise
    np.testing.assert_allclose(norm[2], [0.25, 0.25, 0.5])
    fig = confusion_figure(matrix, ["background", "cat", "book"], epoch=4)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["background", "cat", "book"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["background", "cat", "book"]
    assert "n/a" in [t.get_text() for t in ax.texts] and "80" in [t.get_text() for t in ax.texts]


def test_tensorboard_missing_is_one_line_before_any_training(data: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails, as without the package
    with tiny_registered():
        res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--data", str(data), "--out", str(tmp_path / "run"),
                                        "--encoder", "conv", "--image-size", "32", "--tensorboard"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith(
        "Error: --tensorboard needs the tensorboard package, which is not installed"), res.output
    assert not (tmp_path / "run").exists()


def test_tensorboard_gets_the_scalars_and_the_samples(data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    class Writer:
        def __init__(self, log_dir: str) -> None:
            calls.append(("init", log_dir))

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            calls.append(("scalar", tag, value, step))

        def add_image(self, tag: str, image: np.ndarray, step: int, dataformats: str) -> None:
            calls.append(("image", tag, image, step, dataformats))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    out = tmp_path / "run"
    with tiny_registered():
        fit(tiny_cfg(data, out, tensorboard=True), log=lambda _: None)
    assert calls[0] == ("init", str(out / "tensorboard")) and calls[-1] == ("close",)
    scalars = {(c[1], c[3]): c[2] for c in calls if c[0] == "scalar"}
    csv = (out / "metrics.csv").read_text().splitlines()
    for epoch in (1, 2):
        row = dict(zip(csv[0].split(","), csv[epoch].split(","), strict=True))
        assert math.isclose(scalars[("miou", epoch)], float(row["miou"]), abs_tol=1e-6)
        assert math.isclose(scalars[("loss/train", epoch)], float(row["train_loss"]), abs_tol=1e-6)
    images = [c for c in calls if c[0] == "image"]
    assert images and images[-1][1] == "samples" and images[-1][4] == "HWC"
    np.testing.assert_array_equal(images[-1][2], np.asarray(Image.open(out / "samples.png").convert("RGB")))

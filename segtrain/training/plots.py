"""loss.png, miou.png and confusion.png of a training run (matplotlib is imported only here, lazily).

Epochs are whole numbers on every axis; the best epoch (highest validation mIoU) is marked; the
per-class IoU lines use the model's own palette (the colours of its masks), with the mIoU line in
a heavier style, since palette colour 0 (background) is black. The confusion matrix is the best
epoch's, each row (a true class) divided by its pixels.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segtrain.common.files import atomic_write_bytes
from segtrain.contract import ModelSpec
from segtrain.training.runs import CONFUSION_PNG, LOSS_PNG, MIOU_PNG

BEST_STYLE = {"color": "#d62728", "linestyle": ":", "linewidth": 1.2}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


def _epoch_axis(ax, epochs: Sequence[int], best_epoch: int | None) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set_xlabel("epoch")
    if best_epoch is not None:
        ax.axvline(best_epoch, label=f"best (epoch {best_epoch})", **BEST_STYLE)
    ax.grid(alpha=0.3)


def loss_figure(history: Sequence[dict], best_epoch: int | None):
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    _epoch_axis(ax, epochs, best_epoch)
    ax.set(ylabel="loss", title="Loss per epoch")
    ax.legend()
    return fig


def miou_figure(history: Sequence[dict], spec: ModelSpec, best_epoch: int | None):
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for name, colour in zip(spec.classes, spec.palette, strict=False):
        ax.plot(epochs, [h[f"iou_{name}"] for h in history], ".--", color=np.asarray(colour) / 255, alpha=0.9,
                linewidth=1.2, markeredgecolor="0.4", label=name)
    ax.plot(epochs, [h["miou"] for h in history], "o-", color="0.15", linewidth=3, markerfacecolor="white",
            label="mIoU", zorder=5)
    if best_epoch is not None:
        best = next(h["miou"] for h in history if h["epoch"] == best_epoch)
        ax.plot([best_epoch], [best], "*", color=BEST_STYLE["color"], markersize=14, zorder=6)
    _epoch_axis(ax, epochs, best_epoch)
    ax.set(ylabel="IoU", title="Validation mIoU and per-class IoU", ylim=(0, 1))
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def normalised_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; rows of classes absent from the truth are NaN."""
    matrix = np.asarray(matrix, dtype=np.float64)
    sums = matrix.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sums > 0, matrix / np.maximum(sums, 1), np.nan)


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], epoch: int):
    plt = _pyplot()
    norm = normalised_rows(matrix)
    n = len(classes)
    side = 2.2 + 0.55 * n
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    cmap = plt.get_cmap("Blues").with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(norm), cmap=cmap, vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion (rows normalised), epoch {epoch}")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                v = norm[i, j]
                text = "n/a" if np.isnan(v) else f"{100 * v:.0f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if not np.isnan(v) and v > 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class's pixels")
    return fig


def write_curves(history: Sequence[dict], spec: ModelSpec, best_epoch: int | None, out: Path) -> None:
    """loss.png and miou.png from the per-epoch history."""
    save_figure(loss_figure(history, best_epoch), out / LOSS_PNG)
    save_figure(miou_figure(history, spec, best_epoch), out / MIOU_PNG)


def write_confusion(matrix: np.ndarray, classes: Sequence[str], epoch: int, out: Path) -> None:
    save_figure(confusion_figure(matrix, classes, epoch), out / CONFUSION_PNG)

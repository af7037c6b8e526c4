"""loss.png and miou.png from the per-epoch history (matplotlib imported only here)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from segtrain.fileio import atomic_write_bytes


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


def write_plots(history: Sequence[dict], classes: Sequence[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss per epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, out / "loss.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["miou"] for h in history], "o-", linewidth=2.5, color="black", label="mIoU")
    for name in classes:
        ax.plot(epochs, [h[f"iou_{name}"] for h in history], ".--", alpha=0.8, label=name)
    ax.set(xlabel="epoch", ylabel="IoU", title="Validation mIoU and per-class IoU", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, out / "miou.png")
    plt.close(fig)

"""The bench report as a picture: latency per batch (p50, bars to p90) and images/s against batch size."""

from __future__ import annotations

import io
from pathlib import Path

from segdeploy.bench.report import BenchReport, size_key
from segtrain.common.files import atomic_write_bytes


def plot(report: BenchReport, path: Path) -> None:
    """A row per model: latency per batch on the left, throughput on the right (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report.models
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
    for (lat_ax, ips_ax), model in zip(axes, models, strict=True):
        for entry in model.timed().values():
            for size in model.image_sizes:
                rows = sorted((r for r in entry.results if r.image_size == size), key=lambda r: r.batch_size)
                if not rows:
                    continue
                label = f"{entry.backend} {size_key(size)}"
                xs = [r.batch_size for r in rows]
                p50 = [r.latency_ms.p50 for r in rows]
                up = [r.latency_ms.p90 - r.latency_ms.p50 for r in rows]
                lat_ax.errorbar(xs, p50, yerr=[[0] * len(rows), up], marker="o", capsize=3, label=label)
                ips_ax.plot(xs, [r.images_per_second for r in rows], marker="o", label=label)
        lat_ax.set(title=f"{model.name}: latency per batch (p50, bar to p90)", xlabel="batch size", ylabel="ms")
        ips_ax.set(title=f"{model.name}: throughput", xlabel="batch size", ylabel="images/s")
        for ax in (lat_ax, ips_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{report.machine.cpu}, {report.threads} threads", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))

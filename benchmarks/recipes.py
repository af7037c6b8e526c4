"""Issue 23's target: the references' recipe (`--augment scale-crop --optimizer sgd --lr-schedule poly`) against
segtrain's first one (`--augment basic`, Adam, constant lr) on coco-mini, DeepLabV3-ResNet18 from random init at
128 px on the CPU, the same epochs, batch size and seed: validation mIoU per epoch (metrics.csv) and training
images/s (the epoch log lines), then the two augmentations alone over the training photos, rounds interleaved
in one process (their cost per image, without the model). Prints a table and writes JSON.

    python benchmarks/recipes.py --data ../shared/data/coco-mini --epochs 12
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

RECIPES = {
    "basic + adam": ["--augment", "basic", "--optimizer", "adam"],
    "scale-crop + sgd/poly": ["--augment", "scale-crop", "--optimizer", "sgd", "--lr-schedule", "poly",
                              "--weight-decay", "1e-4"],
}
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+: .* train ([0-9.]+) img/s")


def fit(name: str, flags: list[str], args: argparse.Namespace, work: Path) -> dict:
    """One `segtrain fit` run; its per-epoch validation mIoU and training images/s."""
    out = work / name.replace(" ", "").replace("+", "_").replace("/", "_")
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "segtrain", "fit", "deeplab", "--data", str(args.data), "--out", str(out),
               "--encoder", "resnet18", "--encoder-weights", "none", "--image-size", str(args.size),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
               "--device", "cpu", "--seed", "0", "--progress", "off", *flags]
    t0 = time.perf_counter()
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    speeds = [float(m[2]) for line in run.stdout.splitlines() if (m := EPOCH_LINE.match(line))]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    miou = [float(r["miou"]) for r in rows]
    return {"command": "segtrain " + " ".join(command[3:]), "val_miou": miou, "best_val_miou": max(miou),
            "last_val_miou": miou[-1], "train_images_per_s": speeds,
            "train_images_per_s_median": statistics.median(speeds), "seconds": round(seconds, 1)}


def augment_cost(args: argparse.Namespace, rounds: int) -> dict:
    """Seconds per training sample of each preset over the training photos (decode + augment + normalise)."""
    from segtrain.contract import build_spec
    from segtrain.data.coco import CocoSplit
    from segtrain.training.dataset import SegmentationDataset

    split = CocoSplit.open(args.data, "train")
    spec = build_spec("deeplab", "resnet18", split.categories, args.size)
    sets = {p: SegmentationDataset(split, spec, train=True, augment=p) for p in ("basic", "scale-crop")}
    times: dict[str, list[float]] = {p: [] for p in sets}
    for r in range(rounds):
        for preset, ds in (sets.items() if r % 2 == 0 else reversed(sets.items())):
            ds.epoch = r
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            times[preset].append((time.perf_counter() - t0) / len(ds))
    median = {p: statistics.median(t) for p, t in times.items()}
    return {"ms_per_sample": {p: round(1000 * v, 3) for p, v in median.items()},
            "scale_crop_over_basic": round(median["scale-crop"] / median["basic"], 3), "rounds": rounds,
            "samples_per_round": len(split)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "coco-mini")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segtrain-recipes"))
    parser.add_argument("--json", type=Path, default=HERE / "results" / "recipes.json")
    args = parser.parse_args()
    args.data = args.data.resolve()
    result = {"machine": "CPU only; a shared 2-core machine under other load",
              "recipes": {name: fit(name, flags, args, args.work) for name, flags in RECIPES.items()},
              "augmentation": augment_cost(args, args.rounds)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("| recipe | best val mIoU | last val mIoU | train img/s (median) | wall s |\n|---|---|---|---|---|")
    for name, r in result["recipes"].items():
        print(f"| {name} | {100 * r['best_val_miou']:.2f}% | {100 * r['last_val_miou']:.2f}% | "
              f"{r['train_images_per_s_median']:.1f} | {r['seconds']} |")
    a = result["augmentation"]
    print(f"augmentation alone, ms per sample: {a['ms_per_sample']}; scale-crop / basic = {a['scale_crop_over_basic']}")


if __name__ == "__main__":
    main()

"""Issue 23's target: the references' recipe (`--augment scale-crop --optimizer sgd --lr-schedule poly`) against
segtrain's first one (`--augment basic`, Adam, constant lr) on coco-mini, DeepLabV3-ResNet18 from random init at
128 px on the CPU, the same epochs, batch size and seed: validation mIoU per epoch (metrics.csv) and training
images/s (the epoch log lines), then the two augmentations alone over the training photos, rounds interleaved
in one process (their cost per image, without the model). The fits run at the same time, so all see the
same machine load; a third recipe adds the auxiliary loss (`--aux-loss 0.5`) to the references' one. Prints a
table and writes JSON.

    python benchmarks/recipes.py --data ../shared/data/coco-mini --epochs 12
    python benchmarks/recipes.py --recipes "scale-crop + sgd/poly,scale-crop + sgd/poly + aux 0.5" --json F
    python benchmarks/recipes.py --collect      # record what the runs in --work finished (after stopping them)
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
    # torchvision's reference adds its auxiliary loss (weight 0.5) to the recipe above
    "scale-crop + sgd/poly + aux 0.5": ["--augment", "scale-crop", "--optimizer", "sgd", "--lr-schedule", "poly",
                                        "--weight-decay", "1e-4", "--aux-loss", "0.5"],
}
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+: .* train ([0-9.]+) img/s")


def fit_command(name: str, flags: list[str], args: argparse.Namespace, work: Path) -> tuple[list[str], Path]:
    out = work / name.replace(" ", "").replace("+", "_").replace("/", "_")
    return [sys.executable, "-m", "segtrain", "fit", "deeplab", "--data", str(args.data), "--out", str(out),
            "--encoder", "resnet18", "--encoder-weights", "none", "--image-size", str(args.size),
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
            "--device", "cpu", "--seed", "0", "--progress", "off", *flags], out


def fit_all(args: argparse.Namespace, work: Path) -> dict:
    """The `segtrain fit` runs of --recipes at once (so all see the same machine load); with --collect, none is
    started and what the earlier runs in `work` finished is read (a run stopped early records fewer epochs)."""
    runs = {}
    for name in args.recipes:
        command, out = fit_command(name, RECIPES[name], args, work)
        log = work / f"{out.name}.log"
        if not args.collect:
            shutil.rmtree(out, ignore_errors=True)
            with open(log, "w") as f:
                child = subprocess.Popen(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, text=True)
            runs[name] = (command, out, log, child)
        else:
            runs[name] = (command, out, log, None)
    return {name: collect(name, command, out, log, child) for name, (command, out, log, child) in runs.items()}


def collect(name: str, command: list[str], out: Path, log: Path, child: subprocess.Popen | None) -> dict:
    """A run's per-epoch validation mIoU (metrics.csv) and training images/s (its log's epoch lines)."""
    if child is not None and child.wait() != 0:
        raise SystemExit(f"{name}: exit {child.returncode}; see {log}")
    speeds = [float(m[2]) for line in log.read_text().splitlines() if (m := EPOCH_LINE.match(line))]
    with open(out / "metrics.csv") as f:
        miou = [float(r["miou"]) for r in csv.DictReader(f)]
    return {"command": "segtrain " + " ".join(command[3:]), "epochs_finished": len(miou), "val_miou": miou,
            "best_val_miou": max(miou), "last_val_miou": miou[-1], "train_images_per_s": speeds,
            "train_images_per_s_median": statistics.median(speeds)}


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
    parser.add_argument("--collect", action="store_true",
                        help="Start no fit: read what the runs in --work finished (they may have been stopped).")
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help=f"Comma-separated recipes to run side by side (default: all): {'; '.join(RECIPES)}.")
    args = parser.parse_args()
    args.recipes = [name.strip() for name in args.recipes.split(",")]
    if unknown := [name for name in args.recipes if name not in RECIPES]:
        parser.error(f"--recipes: unknown {unknown}; choose from {list(RECIPES)}")
    args.data = args.data.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(["python", *sys.argv]),
              "machine": "CPU only; a shared 2-core machine",
              "recipes": fit_all(args, args.work),
              "augmentation": augment_cost(args, args.rounds)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("| recipe | epochs | val mIoU per epoch | train img/s (median) |\n|---|---|---|---|")
    for name, r in result["recipes"].items():
        per_epoch = ", ".join(f"{100 * v:.2f}%" for v in r["val_miou"])
        print(f"| {name} | {r['epochs_finished']} | {per_epoch} | {r['train_images_per_s_median']:.2f} |")
    a = result["augmentation"]
    print(f"augmentation alone, ms per sample: {a['ms_per_sample']}; scale-crop / basic = {a['scale_crop_over_basic']}")


if __name__ == "__main__":
    main()

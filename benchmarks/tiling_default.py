"""Issue 20's target: `segdeploy batch`'s default (photos as the model was trained) against `--tile off`, and against
explicit tiling with windows of the model's input (what the old `--tile auto` did to these photos), on 4 coco-mini
photos of 640x480 with a 128 px model (DeepLabV3-ResNet18, random encoder weights: speed only), in one process,
rounds interleaved; prints and writes JSON.

    python benchmarks/tiling_default.py --data ../shared/data/coco-mini --rounds 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "helpers"))


def photos(data: Path, count: int, into: Path) -> Path:
    """`count` validation photos of 640x480, linked into `into`."""
    from segtrain.data.images import image_size

    into.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in sorted((data / "validation" / "data").iterdir()) if image_size(p) == (480, 640)][:count]
    if len(chosen) < count:
        raise SystemExit(f"{data}: fewer than {count} 640x480 validation photos")
    for p in chosen:
        link = into / p.name
        if not link.exists():
            link.symlink_to(p.resolve())
    return into


def model(work: Path, size: int) -> Path:
    """DeepLabV3-ResNet18 at `size` px, exported once (reused)."""
    onnx = work / f"deeplab_r18_{size}.onnx"
    if onnx.exists():
        return onnx
    from checkpoints import build_checkpoint

    ckpt = build_checkpoint(work / "runs" / f"deeplab_r18_{size}" / "best_model.pth", "deeplab", "resnet18", size)
    subprocess.run([sys.executable, "-m", "segdeploy", "export", str(ckpt), "--out", str(work), "--no-verify"],
                   check=True, cwd=REPO)  # named after the run folder: deeplab_r18_<size>.onnx
    return onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "coco-mini")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "tiling_default.json")
    args = parser.parse_args()

    from segdeploy.infer.batch.config import BatchConfig
    from segdeploy.infer.batch.run import run_batch

    work = HERE / "work" / "tiling"
    source = photos(args.data, args.photos, work / "photos")
    onnx = model(work, args.size)
    settings = {"default": {}, "off": {"tile": "off"}, "windows": {"tile": args.size}}
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    windows: dict[str, int] = {}
    for _ in range(args.rounds + 1):  # the first round warms up and is not counted
        for name, extra in settings.items():
            out = work / "out" / name
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            result = run_batch(BatchConfig(sources=source, out_dir=out, model=onnx, progress=False, **extra),
                               log=lambda m: None)
            seconds[name].append(time.perf_counter() - t0)
            windows[name] = sum(r.tiles for r in result.summary.images)
    median = {name: statistics.median(values[1:]) for name, values in seconds.items()}
    report = {"photos": args.photos, "photo_size": [480, 640], "model": onnx.name, "rounds": args.rounds,
              "median_seconds": {k: round(v, 4) for k, v in median.items()}, "windows": windows,
              "default_over_off": round(median["default"] / median["off"], 3),
              "windows_over_off": round(median["windows"] / median["off"], 3),
              "command": " ".join(["python", "benchmarks/tiling_default.py", *sys.argv[1:]])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

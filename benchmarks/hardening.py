"""What the input hardening of issue 13 costs and saves, measured in one run (prints JSON).

- labels.json: parsing alone against parsing plus the shape check (segtrain.data.coco_schema), on a
  synthetic COCO file of --images images and --annotations annotations (COCO train2017 has about
  118k and 860k).
- photos: decoding a --photo-size JPEG at full size against the reduced decode `evaluate` uses
  for a model input of --input-size (segtrain.data.images.load_image(min_size=...)), and the pixels
  the model input differs by after the contract's resize.
- listing: `segdeploy batch`'s input listing (segdeploy.infer.batch.sources.list_sources: only regular
  files, failures named, duplicates by real path) against the listing it replaced (os.walk, then
  Path.resolve of every file), on a tree of --files empty .jpg files in folders of 200.

The end-to-end cost of the batch memory budget (a lock per image) is in the `segdeploy batch`
rate that `python benchmarks/run_suite.py --only deeplab_r18_256` records.

    python benchmarks/hardening.py                                   # COCO-sized, ~1 GB of RAM
    python benchmarks/hardening.py --images 2000 --annotations 15000 --photo-size 1600x1200 --files 2000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segdeploy.infer.batch.sources import list_sources  # noqa: E402
from segtrain.contract import resize_image  # noqa: E402
from segtrain.data.coco_schema import validate_labels  # noqa: E402
from segtrain.data.images import is_image_file, load_image  # noqa: E402


def synthetic_labels(images: int, annotations: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ims = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 480, "width": 640} for i in range(images)]
    anns = []
    for a in range(annotations):
        xy = rng.uniform(0, 400, 24).round(2).tolist()
        anns.append({"id": a, "image_id": int(rng.integers(images)), "category_id": int(rng.integers(1, 91)),
                     "bbox": [10.0, 20.0, 100.5, 200.25], "area": 1234.5, "iscrowd": 0, "segmentation": [xy]})
    return {"images": ims, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 91)]}


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def labels_cost(images: int, annotations: int, runs: int, work: Path) -> dict:
    path = work / "labels.json"
    path.write_text(json.dumps(synthetic_labels(images, annotations)))
    parse = median_seconds(lambda: json.loads(path.read_text()), runs)
    data = json.loads(path.read_text())
    check = median_seconds(lambda: validate_labels(data), runs)
    return {"images": images, "annotations": annotations, "bytes": path.stat().st_size,
            "parse_seconds": round(parse, 4), "shape_check_seconds": round(check, 4),
            "check_over_parse": round(check / parse, 3)}


def photo_cost(width: int, height: int, input_size: int, runs: int, work: Path) -> dict:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))  # smooth, photo-like
    path = work / "photo.jpg"
    Image.fromarray(photo).save(path, quality=92)
    size = (input_size, input_size)
    full = median_seconds(lambda: resize_image(load_image(path), size), runs)
    reduced = median_seconds(lambda: resize_image(load_image(path, min_size=size), size), runs)
    a = resize_image(load_image(path), size).astype(np.float64)
    b = resize_image(load_image(path, min_size=size), size).astype(np.float64)
    return {"photo": f"{width}x{height}", "input_size": input_size,
            "decoded_reduced": list(load_image(path, min_size=size).shape[:2]),
            "full_decode_and_resize_seconds": round(full, 4), "reduced_decode_and_resize_seconds": round(reduced, 4),
            "speedup": round(full / reduced, 2), "model_input_mean_abs_diff": round(float(np.abs(a - b).mean()), 3),
            "model_input_max_abs_diff": float(np.abs(a - b).max())}


def listing_cost(files: int, runs: int, work: Path) -> dict:
    root = work / "tree"
    for i in range(files):
        folder = root / f"d{i // 200:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:07d}.jpg").touch()

    def before() -> list[Path]:  # issue 12's find_images + resolve_sources' Path.resolve per file
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            found += [(Path(dirpath) / f).resolve() for f in sorted(filenames) if is_image_file(Path(f))]
        return found

    assert len(before()) == len(list_sources([root]).files) == files
    old, new = median_seconds(before, runs), median_seconds(lambda: list_sources([root]), runs)
    return {"files": files, "before_seconds": round(old, 4), "list_sources_seconds": round(new, 4),
            "new_over_before": round(new / old, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=118_000)
    parser.add_argument("--annotations", type=int, default=860_000)
    parser.add_argument("--photo-size", default="6000x4000", help="WIDTHxHEIGHT of the synthetic JPEG")
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--files", type=int, default=100_000, help="files in the listing benchmark's tree")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    width, height = (int(v) for v in args.photo_size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="segtrain-hardening-") as tmp:
        work = Path(tmp)
        doc = {"labels": labels_cost(args.images, args.annotations, args.runs, work),
               "photo": photo_cost(width, height, args.input_size, args.runs, work),
               "listing": listing_cost(args.files, args.runs, work),
               "command": " ".join(["python", "benchmarks/hardening.py", *sys.argv[1:]])}
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()

"""The mask from logits (segtrain.contract.logits_to_mask: only pixels near a class boundary interpolated) against
resizing every class plane (`_mask_from_bands`, what it did before): milliseconds per photo on one OpenCV
thread, and the pixels where the two differ, with how close the two classes' scores are there; prints and writes
JSON.

    python benchmarks/mask_speed.py MODEL.onnx [MODEL.onnx ...] --photos ../shared/data/coco-mini/validation/data
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from segdeploy.infer.predictor import Predictor  # noqa: E402
from segtrain.contract import _mask_from_bands, logits_to_mask  # noqa: E402
from segtrain.data.images import load_image  # noqa: E402


def measure(model: Path, photos: list[Path]) -> dict:
    predictor = Predictor(model, runtime="onnxruntime", threads=2)
    new, old, differ, pixels, gaps = [], [], 0, 0, []
    for photo in photos:
        image = load_image(photo)
        [prediction] = predictor.infer([predictor.prepare(image)])
        logits, size = prediction.logits, image.shape[:2]
        t0 = time.perf_counter()
        before = _mask_from_bands(logits, size)
        t1 = time.perf_counter()
        now = logits_to_mask(logits, size)
        t2 = time.perf_counter()
        old.append(t1 - t0)
        new.append(t2 - t1)
        pixels += now.size
        ys, xs = np.nonzero(before != now)
        differ += len(ys)
        if len(ys):  # how near a tie: the two classes' resized scores, in float64
            wide = logits.astype(np.float64)
            resized = np.stack([cv2.resize(p, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for p in wide])
            for y, x in zip(ys, xs, strict=True):
                v = resized[:, y, x]
                gaps.append(float(abs(v[before[y, x]] - v[now[y, x]]) / max(abs(v).max(), 1e-30)))
    return {"photos": len(photos), "ms_per_photo": {"logits_to_mask": round(1e3 * statistics.median(new), 3),
                                                    "every_plane_resized": round(1e3 * statistics.median(old), 3)},
            "pixels": pixels, "pixels_differing": differ,
            "largest_relative_score_gap_where_differing": max(gaps, default=0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "mask_speed.json")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    photos = sorted(args.photos.glob("*.jpg"))
    results = {model.name: measure(model, photos) for model in args.models}
    for name, figures in results.items():
        print(name, figures)
    doc = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Issue 24: `segdeploy batch --runtime openvino` end to end against OpenVINO's model-only rate, for OpenVINO CPU
settings (thread pinning, TBB partitioner) and decode/write worker counts tuned together, in one process with the
variants interleaved round by round (a slow spell of a shared machine falls on every variant alike); prints and
writes JSON.

Model-only: the OpenVinoModel with the variant's settings on a batch of the photos' model inputs (median of
--runs runs after two warm-up runs), measured just before and just after the end-to-end run and averaged, so a
change of the machine's load during the round falls on both sides of the ratio. End to end: `run_batch`
(default outputs, tiling off, the same batch size and threads) over the photo folder, images/s after the
session is made, as `segdeploy bench` measures it.

    python benchmarks/openvino_e2e.py MODEL.onnx --photos DIR --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from segdeploy.bench.timing import time_runs  # noqa: E402
from segdeploy.infer import openvino_runtime  # noqa: E402
from segdeploy.infer.pipeline import default_workers  # noqa: E402

VARIANTS = {  # name -> (CPU properties over openvino_runtime.CPU_CONFIG, decode/write workers)
    # what `segdeploy batch --runtime openvino` does without flags: CPU_CONFIG, pipeline.default_workers()
    "defaults": ({}, None),
    "pinned, 2 workers": ({"ENABLE_CPU_PINNING": True}, 2),  # OpenVINO's own defaults (pinned, TBB static)
    "not pinned, 2 workers": ({"ENABLE_CPU_PINNING": False}, 2),
    "pinned, 1 worker": ({"ENABLE_CPU_PINNING": True}, 1),
    "not pinned, 1 worker": ({"ENABLE_CPU_PINNING": False}, 1),
    "not pinned, TBB auto, 2 workers": ({"ENABLE_CPU_PINNING": False, "TBB_PARTITIONER": "AUTO"}, 2),
    "not pinned, TBB auto, 1 worker": ({"ENABLE_CPU_PINNING": False, "TBB_PARTITIONER": "AUTO"}, 1),
}


def model_only(model: Path, x: np.ndarray, threads: int, runs: int) -> float:
    m = openvino_runtime.OpenVinoModel(model, threads=threads)
    return len(x) / (time_runs(lambda: m.run(x), runs, warmup=2).latency.p50 / 1e3)


def end_to_end(model: Path, photos: Path, batch: int, threads: int, workers: int) -> float:
    from segdeploy.infer.batch.config import BatchConfig
    from segdeploy.infer.batch.run import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        result = run_batch(BatchConfig(sources=(photos,), out_dir=Path(tmp), model=model, batch_size=batch,
                                       runtime="openvino", threads=threads, workers=workers, progress=False,
                                       tile="off"), log=lambda _: None)
    return result.summary.totals.images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", help="names separated by semicolons (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from segdeploy.infer.batch.sources import find_images
    from segtrain.contract import preprocess
    from segtrain.data.images import load_image

    variants = {k: v for k, v in VARIANTS.items() if not args.variants or k in args.variants.split(";")}
    base = dict(openvino_runtime.CPU_CONFIG)
    spec = openvino_runtime.read_model_metadata(args.model).spec
    files = [args.photos / f for f in sorted(find_images(args.photos))[:args.batch_size]]
    x = np.stack([preprocess(load_image(f), spec)[0] for f in files])
    rates: dict[str, dict[str, list[float]]] = {name: {"model_only": [], "end_to_end": []} for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            props, workers = variants[name]
            workers = workers or default_workers()
            openvino_runtime.CPU_CONFIG.clear()
            openvino_runtime.CPU_CONFIG.update({**base, **props})
            before = model_only(args.model, x, args.threads, args.runs)
            rates[name]["end_to_end"].append(end_to_end(args.model, args.photos, args.batch_size, args.threads,
                                                        workers))
            rates[name]["model_only"].append((before + model_only(args.model, x, args.threads, args.runs)) / 2)
            mo, e2e = rates[name]["model_only"][-1], rates[name]["end_to_end"][-1]
            print(f"round {r}: {name}: model-only {mo:.2f}, end to end {e2e:.2f} images/s ({e2e / mo:.3f}x)",
                  flush=True)
    openvino_runtime.CPU_CONFIG.clear()
    openvino_runtime.CPU_CONFIG.update(base)
    summary = {}
    for name, d in rates.items():
        mo, e2e = statistics.median(d["model_only"]), statistics.median(d["end_to_end"])
        summary[name] = {**d, "median_model_only": mo, "median_end_to_end": e2e, "ratio": e2e / mo}
        print(f"{name}: median model-only {mo:.2f}, end to end {e2e:.2f} images/s: {e2e / mo:.3f}x")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "model": str(args.model),
                                         "photos": str(args.photos), "batch_size": args.batch_size,
                                         "threads": args.threads, "variants": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()

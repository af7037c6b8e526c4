"""Where `segdeploy batch`'s CPU goes per photo: the model alone (process CPU time over model-only runs), the
whole run (process CPU time), and the pipeline's stages (each stage's thread CPU time, summed over the decode
and write threads): end to end / model-only cannot pass model-only CPU / end-to-end CPU per photo while both
keep the cores busy; prints and writes JSON.

Model-only: `--runs` runs of a synthetic batch after three warm-up runs. End to end: `run_batch` (default
outputs, the engine pinned by --runtime) over the photo folders, --rounds times, the stages wrapped to read
`time.thread_time()` around them.

    python benchmarks/pipeline_cpu.py MODEL.onnx --runtime openvino \
        --photos ../shared/data/coco-mini/{train,validation,test}/data
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from segdeploy.infer import predictor as predictor_module  # noqa: E402
from segdeploy.infer.batch import decode as decode_module  # noqa: E402
from segdeploy.infer.batch import run as batch_run  # noqa: E402
from segdeploy.infer.batch import write as write_module  # noqa: E402
from segdeploy.infer.runtime import open_model  # noqa: E402

STAGES: collections.Counter = collections.Counter()  # stage -> thread CPU seconds
_LOCK = threading.Lock()


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            with _LOCK:
                STAGES[name] += time.thread_time() - t0
    return wrapper


def instrument() -> None:
    """Wrap the stages (module attributes the batch run looks up at call time)."""
    batch_run.decode = timed("decode (read, decode, prepare)", decode_module.decode)
    predictor_module.Predictor.prepare = timed("prepare (resize, normalise)", predictor_module.Predictor.prepare)
    predictor_module.Predictor.infer = timed("infer (calling thread only)", predictor_module.Predictor.infer)
    write_module.ImageWriter.__call__ = timed("write (all of it)", write_module.ImageWriter.__call__)
    mask = predictor_module.Prediction.mask
    predictor_module.Prediction.mask = property(timed("mask", mask.fget))
    predictor_module.Prediction.overlay = timed("overlay", predictor_module.Prediction.overlay)
    for name in ("encode_rgb", "encode_mask", "write_atomic"):
        setattr(write_module, name, timed(name, getattr(write_module, name)))


def model_only(model: Path, runtime: str, threads: int, batch: int, runs: int) -> dict:
    m = open_model(model, runtime=runtime, threads=threads)
    h, w = m.spec.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w), dtype=np.float32)
    for _ in range(3):
        m.run(x)
    c0, t0 = process_cpu(), time.perf_counter()
    for _ in range(runs):
        m.run(x)
    cpu, wall, images = process_cpu() - c0, time.perf_counter() - t0, runs * batch
    return {"images_per_second": round(images / wall, 2), "cpu_ms_per_image": round(1e3 * cpu / images, 2)}


def end_to_end(model: Path, runtime: str, threads: int, batch: int, photos: list[Path]) -> dict:
    from segdeploy.infer.batch.config import BatchConfig

    out = Path(tempfile.mkdtemp(prefix="pipeline-cpu-"))
    STAGES.clear()
    try:
        c0, t0 = process_cpu(), time.perf_counter()
        result = batch_run.run_batch(BatchConfig(sources=photos, out_dir=out, model=model, runtime=runtime,
                                                 threads=threads, batch_size=batch, progress=False),
                                     log=lambda m: None)
        cpu, wall = process_cpu() - c0, time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    n = result.summary.totals.processed
    return {"images_per_second": result.summary.totals.images_per_second,
            "images_per_second_with_start": round(n / wall, 2), "cpu_ms_per_image": round(1e3 * cpu / n, 2),
            "stage_cpu_ms_per_image": {k: round(1e3 * v / n, 2) for k, v in STAGES.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--photos", type=Path, nargs="+", required=True)
    parser.add_argument("--runtime", default="openvino", choices=("onnxruntime", "openvino"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    instrument()
    rounds = []
    for r in range(args.rounds):
        row = {"model_only": model_only(args.model, args.runtime, args.threads, args.batch, args.runs),
               "end_to_end": end_to_end(args.model, args.runtime, args.threads, args.batch, args.photos)}
        row["ratio"] = round(row["end_to_end"]["images_per_second"] / row["model_only"]["images_per_second"], 3)
        mo, e2e = row["model_only"]["cpu_ms_per_image"], row["end_to_end"]["cpu_ms_per_image"]
        row["ratio_if_cores_stay_busy"] = round(mo / e2e, 3)  # model-only CPU / end-to-end CPU per image
        rounds.append(row)
        print(f"round {r}: {json.dumps(row)}", flush=True)
    if args.json:
        doc = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
               "model": args.model.name, "runtime": args.runtime, "rounds": rounds}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""`segdeploy bench`: PyTorch eager vs onnxruntime FP32/INT8(/FP16) speed, side by side in one process.

For a checkpoint, the bench loads the eager model, exports its ONNX FP32 and INT8 variants (with
`segdeploy.export`, INT8 calibrated on real images) into ``--onnx-dir`` or a temporary folder, and
times every backend on the same preprocessed real images (random ones when there are none), with
the same thread count everywhere. For an .onnx file it times that file and its
``.int8.onnx``/``.fp16.onnx`` siblings (segdeploy.bench.rounds says how).

Per backend: session-creation time and peak RSS; per image size and batch size: first-run time,
latency p50/p90/p99/mean, images/s from the median latency, the achieved GFLOP/s (FLOPs counted
once on the eager model) against the SGEMM samples of the same rounds, and the largest |logit
difference| from the reference backend on the same input. Optional: the INT8 model's mIoU change
against FP32 on a validation split, and the end-to-end `segdeploy batch` images/s on a folder of
photos against the model-only figure.
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.bench.backends import ort_runner, torch_device, torch_threads
from segdeploy.bench.config import BACKENDS, BenchConfig, Echo
from segdeploy.bench.models import ModelRef, export_variants, onnx_home, resolve_models
from segdeploy.bench.report import size_key
from segdeploy.bench.rounds import (
    MEMORY_SHARE,
    available_mib,
    input_batches,
    must_close,
    sample_images,
    start_backend,
    timed_rounds,
)
from segdeploy.bench.timing import time_runs
from segtrain.contract import ModelSpec

SCHEMA = "segdeploy-bench/1"


def model_gflop(spec: ModelSpec, sizes: list[tuple[int, int]]) -> dict[str, dict[str, float]]:
    """{"dense": {"HxW": GFLOP per image}, "valid_taps": {...}}, counted once on the eager architecture
    (weights do not change it); empty for an architecture the registry does not know."""
    from segdeploy.bench.roofline import count_gflop
    from segtrain.models import MODELS, build_model

    if spec.arch not in MODELS:
        return {}
    model = build_model(spec, encoder_weights="none").eval()
    counts = {size_key(size): count_gflop(model, size) for size in sizes}
    return {kind: {key: c[kind] for key, c in counts.items()} for kind in ("dense", "valid_taps")}



def validation_split(ref: ModelRef) -> Any:
    from segtrain.evaluation import open_split_for

    return open_split_for(ref.spec, ref.data, "validation")


def int8_accuracy(ref: ModelRef, config: BenchConfig, echo: Echo) -> dict:
    """FP32 vs INT8 ONNX on the validation split at the model's input size: agreement and both mIoUs."""
    from segdeploy.export.verify import Thresholds, run_parity
    from segdeploy.infer.runtime import OnnxModel

    if not config.accuracy:
        return {"status": "skipped", "reason": "--no-accuracy"}
    if "int8" not in ref.onnx or "ort-int8" not in config.backends:
        return {"status": "skipped", "reason": "no INT8 model benchmarked"}
    if ref.data is None:
        return {"status": "skipped", "reason": "no dataset (pass --data DIR)"}
    split = validation_split(ref)
    fp32, int8 = (OnnxModel(ref.onnx[p], provider=config.provider, threads=config.threads) for p in ("fp32", "int8"))
    limit = len(split) if config.accuracy_images is None else min(config.accuracy_images, len(split))
    echo(f"  INT8 accuracy: FP32 and INT8 on {limit} images of {split.image_dir.parent}")
    report = run_parity(fp32.run, int8.run, split, ref.spec, [tuple(ref.spec.input_size)], 4, limit,
                        Thresholds(max_abs_diff=None, min_agreement=None), ("onnx fp32", "onnx int8"),
                        f"{split.image_dir.parent} (validation)")
    echo("\n".join("  " + line for line in report.summary().splitlines()))
    return {"status": "ok", **report.to_dict()}


def model_only_ips(ref: ModelRef, config: BenchConfig, size: tuple[int, int], batch: int,
                   fp32_results: list[dict], images: list[np.ndarray]) -> float:
    """ORT FP32 images/s at (size, batch): from this run's results, else measured now the same way."""
    for row in fp32_results:
        if tuple(row["image_size"]) == size and row["batch_size"] == batch:
            return row["images_per_second"]
    runner = ort_runner("ort-fp32", ref.onnx["fp32"], config)
    x = input_batches(ref, size, (batch,), images)[batch]
    timing = time_runs(lambda: runner.run(x), config.runs, config.warmup)
    return batch / (timing.latency.p50 / 1e3)


def end_to_end(ref: ModelRef, config: BenchConfig, fp32_results: list[dict], images: list[np.ndarray],
               echo: Echo) -> dict:
    """`segdeploy batch` images/s over --photos against the model alone (same model, size, threads, batch)."""
    from segdeploy.infer.batch import BatchConfig, default_workers, run_batch

    if config.photos is None:
        return {"status": "skipped", "reason": "no --photos folder"}
    if "fp32" not in ref.onnx or ref.onnx["fp32"] is None:
        return {"status": "skipped", "reason": "no FP32 ONNX model"}
    size, batch = tuple(ref.spec.input_size), config.e2e_batch_size
    model_only = model_only_ips(ref, config, size, batch, fp32_results, images)
    workers = config.e2e_workers or default_workers()
    echo(f"  end-to-end: segdeploy batch over {config.photos} (batch {batch}, {config.threads} threads, "
         f"{workers} decode/write workers)")
    with tempfile.TemporaryDirectory(prefix="segdeploy-bench-e2e-") as tmp:
        # Default outputs; tiles off, so the pipeline makes the same model calls as the model-only figure.
        result = run_batch(BatchConfig(sources=(Path(config.photos),), out_dir=Path(tmp), model=ref.onnx["fp32"],
                                       batch_size=batch, provider=config.provider, threads=config.threads,
                                       workers=workers, progress=False, tile="off"), log=lambda message: None)
    totals = result.totals.to_dict()
    e2e = totals["images_per_second"] or 0.0
    echo(f"  end-to-end {e2e:.2f} images/s vs model-only {model_only:.2f} images/s "
         f"(ratio {e2e / model_only:.2f})")
    return {"status": "ok", "photos": str(config.photos), "images": totals["processed"], "failed": totals["failed"],
            "image_size": list(size), "batch_size": batch, "threads": config.threads, "workers": workers,
            "outputs": list(result.summary["settings"]["save"]),
            "seconds": totals["seconds"], "images_per_second": e2e, "model_only_images_per_second": model_only,
            "ratio": e2e / model_only, "pipeline_model_images_per_second": totals["model_images_per_second"],
            "stage_ms_per_image": {k: 1e3 * v / max(totals["processed"], 1)
                                   for k, v in result.totals.stage_seconds.items()}}



def bench_model(ref: ModelRef, config: BenchConfig, onnx_dir: Path, echo: Echo) -> dict:
    """Every requested backend of one model, then its INT8 accuracy and end-to-end figures."""
    from segdeploy.bench.roofline import roofline, sgemm_calls, sgemm_rate

    echo(f"{ref.name}: {ref.spec.arch}/{ref.spec.encoder} from {ref.path}")
    export = export_variants(ref, config, onnx_dir, echo) if ref.kind == "checkpoint" else None
    gflop = model_gflop(ref.spec, ref.sizes)
    images = sample_images(ref, config, max(config.batch_sizes))
    inputs = {size: input_batches(ref, size, config.batch_sizes, images) for size in ref.sizes}
    device, n = torch_device(config), config.sgemm_size
    sgemms = sgemm_calls(n, config.threads, device)
    entries, started, open_now, sgemm_seconds = [], {}, [], {}
    budget = MEMORY_SHARE * available_mib()
    for backend in (b for b in BACKENDS if b in config.backends):
        if open_now and must_close(open_now, config.schedule, budget):
            timed_rounds(open_now, started, ref, inputs, config, sgemms, sgemm_seconds, echo)
            open_now = []
        entry, live = start_backend(backend, ref, inputs, config, echo)
        entries.append(entry)
        if live is not None:
            started[backend] = live
            open_now.append(live)
    timed_rounds(open_now, started, ref, inputs, config, sgemms, sgemm_seconds, echo)
    sgemm = roofline([sgemm_rate(lib, n, config.threads, device, s) for lib, s in sgemm_seconds.items()])
    del started, open_now
    fp32_results = next((e["results"] for e in entries if e["backend"] == "ort-fp32" and e["status"] == "ok"), [])
    return {"name": ref.name, "source": str(ref.path), "kind": ref.kind, "arch": ref.spec.arch,
            "encoder": ref.spec.encoder, "classes": list(ref.spec.classes),
            "spec_input_size": list(ref.spec.input_size), "image_sizes": [list(s) for s in ref.sizes],
            "input": f"{len(images)} real photos" if images else "seeded random normal (no photos found)",
            "onnx_files": {p: str(f) for p, f in ref.onnx.items()}, "export": export,
            "gflop_per_image": gflop.get("dense"), "gflop_per_image_valid_taps": gflop.get("valid_taps"),
            "sgemm": sgemm, "backends": entries,
            "int8_accuracy": int8_accuracy(ref, config, echo),
            "end_to_end": end_to_end(ref, config, fp32_results, images, echo)}


def run_bench(config: BenchConfig, echo: Echo = print) -> dict:
    """Benchmark every model in `config`; returns the report document (see segdeploy.bench.report)."""
    from segdeploy.bench import report
    from segdeploy.bench.roofline import FLOP_CONVENTION, describe_machine

    config.validate()
    refs = resolve_models(config)
    gc.collect()
    gc.freeze()  # what is alive now (libraries, the import-time object graph) is never rescanned by the bench
    try:
        with torch_threads(config.threads), onnx_home(config) as onnx_dir:
            machine = describe_machine()
            echo(f"{machine['cpu']}, {machine['usable_cores']} usable cores; {config.threads} threads for every "
                 "backend")
            models = [bench_model(ref, config, onnx_dir, echo) for ref in refs]
    finally:
        gc.unfreeze()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
    settings["models"] = [str(m) for m in config.models]
    doc = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
           "settings": settings, "flop_convention": FLOP_CONVENTION, "models": models}
    report.add_derived(doc)
    return doc

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

from segdeploy.bench.backends import make_runner, skip_reason, torch_device, torch_threads
from segdeploy.bench.config import BACKENDS, BenchConfig, Echo, backend_for
from segdeploy.bench.models import ModelRef, export_variants, onnx_home, resolve_models, wanted_precisions
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
from segtrain.common.extras import installed
from segtrain.contract import ModelSpec

SCHEMA = "segdeploy-bench/1"


def model_gflop(spec: ModelSpec, sizes: list[tuple[int, int]]) -> dict[str, dict[str, float]]:
    """{"dense": {"HxW": GFLOP per image}, "valid_taps": {...}}, counted once on the eager architecture
    (weights do not change it); empty for an architecture the registry does not know, or without PyTorch."""
    if not installed("train"):
        return {}
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
    """FP32 vs INT8 ONNX on the validation split at the model's input size: agreement and both mIoUs, with
    the INT8 file run by onnxruntime and (under "openvino", when ov-int8 is benchmarked) by OpenVINO."""
    from segdeploy.infer.runtime import OnnxModel, OpenVinoModel

    if not config.accuracy:
        return {"status": "skipped", "reason": "--no-accuracy"}
    if "int8" not in ref.onnx or "int8" not in wanted_precisions(config):
        return {"status": "skipped", "reason": "no INT8 model benchmarked"}
    if ref.data is None:
        return {"status": "skipped", "reason": "no dataset (pass --data DIR)"}
    split = validation_split(ref)
    fp32, int8 = (OnnxModel(ref.onnx[p], provider=config.provider, threads=config.threads) for p in ("fp32", "int8"))
    limit = len(split) if config.accuracy_images is None else min(config.accuracy_images, len(split))
    echo(f"  INT8 accuracy: FP32 and INT8 on {limit} images of {split.image_dir.parent}")
    doc = {"status": "ok", **_parity(fp32.run, int8.run, "onnx int8", ref, split, limit, echo)}
    reason = "ov-int8 not benchmarked" if "ov-int8" not in config.backends else skip_reason("ov-int8", ref, config)
    if reason:
        doc["openvino"] = {"status": "skipped", "reason": reason}
    else:
        ov_int8 = OpenVinoModel(ref.onnx["int8"], threads=config.threads)
        doc["openvino"] = {"status": "ok", **_parity(fp32.run, ov_int8.run, "openvino int8", ref, split, limit, echo)}
    return doc


def _parity(reference: Any, candidate: Any, label: str, ref: ModelRef, split: Any, limit: int, echo: Echo) -> dict:
    from segdeploy.export.verify import Thresholds, run_parity

    report = run_parity(reference, candidate, split, ref.spec, [tuple(ref.spec.input_size)], 4, limit,
                        Thresholds(max_abs_diff=None, min_agreement=None), ("onnx fp32", label),
                        f"{split.image_dir.parent} (validation)")
    echo("\n".join("  " + line for line in report.summary().splitlines()))
    return report.to_dict()


def model_only_ips(backend: str, ref: ModelRef, config: BenchConfig, size: tuple[int, int], batch: int,
                   entries: list[dict], images: list[np.ndarray]) -> float:
    """`backend`'s images/s at (size, batch): from this run's results, else measured now the same way."""
    for entry in entries:
        if entry["backend"] == backend and entry["status"] == "ok":
            for row in entry["results"]:
                if tuple(row["image_size"]) == size and row["batch_size"] == batch:
                    return row["images_per_second"]
    runner = make_runner(backend, ref, config)
    x = input_batches(ref, size, (batch,), images)[batch]
    timing = time_runs(lambda: runner.run(x), config.runs, config.warmup)
    return batch / (timing.latency.p50 / 1e3)


def end_to_end(ref: ModelRef, config: BenchConfig, entries: list[dict], images: list[np.ndarray],
               echo: Echo) -> dict:
    """`segdeploy batch --runtime R` images/s over --photos with the FP32 and the INT8 model, each against the
    model alone (same size, threads, batch) in the runtime batch used and in onnxruntime."""
    if config.photos is None:
        return {"status": "skipped", "reason": "no --photos folder"}
    precisions = [p for p in ("fp32", "int8") if ref.onnx.get(p) is not None]
    if not precisions:
        return {"status": "skipped", "reason": "no FP32 or INT8 ONNX model"}
    runs = [_e2e_run(ref, config, precision, entries, images, echo) for precision in precisions]
    return {"status": "ok", "photos": str(config.photos), "runtime": config.runtime, "runs": runs}


def _e2e_run(ref: ModelRef, config: BenchConfig, precision: str, entries: list[dict], images: list[np.ndarray],
             echo: Echo) -> dict:
    from segdeploy.infer.batch.config import BatchConfig
    from segdeploy.infer.batch.run import run_batch
    from segdeploy.infer.pipeline import default_workers

    size, batch = tuple(ref.spec.input_size), config.e2e_batch_size
    workers = config.e2e_workers or default_workers()
    echo(f"  end-to-end: segdeploy batch --runtime {config.runtime} with the {precision.upper()} model over "
         f"{config.photos} (batch {batch}, {config.threads} threads, {workers} decode/write workers)")
    with tempfile.TemporaryDirectory(prefix="segdeploy-bench-e2e-") as tmp:
        # Default outputs; tiles off, so the pipeline makes the same model calls as the model-only figure.
        result = run_batch(BatchConfig(sources=(Path(config.photos),), out_dir=Path(tmp), model=ref.onnx[precision],
                                       batch_size=batch, runtime=config.runtime, provider=config.provider,
                                       threads=config.threads, workers=workers, progress=False, tile="off"),
                           log=lambda message: None)
    summary, totals = result.summary, result.summary.totals
    used = summary.runtime.used
    backend, ort = backend_for(used, precision), backend_for("onnxruntime", precision)
    model_only = model_only_ips(backend, ref, config, size, batch, entries, images)
    ort_only = model_only if backend == ort else model_only_ips(ort, ref, config, size, batch, entries, images)
    e2e = totals.images_per_second or 0.0
    echo(f"  end-to-end {precision.upper()} on {summary.provider}: {e2e:.2f} images/s vs model-only "
         f"{model_only:.2f} ({backend}; ratio {e2e / model_only:.2f}) and {ort_only:.2f} ({ort}; ratio "
         f"{e2e / ort_only:.2f})")
    return {"precision": precision, "runtime": used, "runtime_reason": summary.runtime.reason,
            "provider": summary.provider, "images": totals.processed, "failed": totals.failed,
            "image_size": list(size), "batch_size": batch, "threads": config.threads, "workers": workers,
            "outputs": list(summary.settings["save"]),
            "seconds": totals.seconds, "images_per_second": e2e, "model_only_backend": backend,
            "model_only_images_per_second": model_only, "ratio": e2e / model_only,
            "onnxruntime_model_only_images_per_second": ort_only, "ratio_vs_onnxruntime": e2e / ort_only,
            "pipeline_model_images_per_second": totals.model_images_per_second,
            "stage_ms_per_image": {k: 1e3 * v / max(totals.processed, 1)
                                   for k, v in totals.stage_seconds_summed.items()}}


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
        if open_now and must_close(open_now, config.schedule, budget, available_mib()):
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
    return {"name": ref.name, "source": str(ref.path), "kind": ref.kind, "arch": ref.spec.arch,
            "encoder": ref.spec.encoder, "classes": list(ref.spec.classes),
            "spec_input_size": list(ref.spec.input_size), "image_sizes": [list(s) for s in ref.sizes],
            "input": f"{len(images)} real photos" if images else "seeded random normal (no photos found)",
            "onnx_files": {p: str(f) for p, f in ref.onnx.items()}, "export": export,
            "gflop_per_image": gflop.get("dense"), "gflop_per_image_valid_taps": gflop.get("valid_taps"),
            "sgemm": sgemm, "backends": entries,
            "int8_accuracy": int8_accuracy(ref, config, echo),
            "end_to_end": end_to_end(ref, config, entries, images, echo)}


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

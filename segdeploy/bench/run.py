"""`segdeploy bench`: every backend of every model side by side in one process, then the report.

A checkpoint's ONNX files are exported first (segdeploy.bench.models); every backend sees the same
preprocessed inputs with the same threads (segdeploy.bench.rounds says how they are timed).
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
from segdeploy.bench.config import BACKENDS, PRECISION, BenchConfig, Echo, backend_for
from segdeploy.bench.models import (
    ModelRef,
    check_writable,
    default_models,
    export_for_bench,
    onnx_home,
    resolve_models,
    wanted_precisions,
)
from segdeploy.bench.report import (
    OK,
    SCHEMA,
    SKIPPED,
    AutoChoice,
    BackendEntry,
    BenchReport,
    EndToEnd,
    EndToEndRun,
    Int8Accuracy,
    ModelReport,
    Size,
    size_key,
)
from segdeploy.bench.rounds import (
    MEMORY_SHARE,
    available_mib,
    input_batches,
    memory_short,
    must_close,
    sample_images,
    start_backend,
    timed_rounds,
)
from segdeploy.bench.timing import time_runs
from segdeploy.export.verify import ParityReport
from segtrain.common.extras import installed
from segtrain.contract import ModelSpec
from segtrain.evaluation import EVALUATE_BATCH_SIZE


def model_gflop(spec: ModelSpec, sizes: list[Size]) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """({"HxW": GFLOP per image} on every tap, the same on valid taps), counted once on the eager architecture
    (weights do not change it); (None, None) for an architecture the registry does not know, or without PyTorch."""
    if not installed("train"):
        return None, None
    from segdeploy.bench.roofline import count_gflop
    from segtrain.models import MODELS, build_model

    if spec.arch not in MODELS:
        return None, None
    model = build_model(spec, encoder_weights="none").eval()
    counts = {size_key(size): count_gflop(model, size) for size in sizes}
    dense, valid = ({key: c[kind] for key, c in counts.items()} for kind in ("dense", "valid_taps"))
    return dense, valid


def validation_split(ref: ModelRef) -> Any:
    from segtrain.evaluation import open_split_for

    return open_split_for(ref.spec, ref.data, "validation")


def int8_accuracy(ref: ModelRef, config: BenchConfig, echo: Echo) -> Int8Accuracy:
    """FP32 vs INT8 ONNX on the validation split at the model's input size: agreement and both mIoUs, with
    the INT8 file run by onnxruntime and (under "openvino", when ov-int8 is benchmarked) by OpenVINO."""
    from segdeploy.infer.runtime import OnnxModel, OpenVinoModel

    if not config.accuracy:
        return Int8Accuracy.skipped("--no-accuracy")
    if "int8" not in ref.onnx or "int8" not in wanted_precisions(config):
        return Int8Accuracy.skipped("no INT8 model benchmarked")
    if ref.data is None:
        return Int8Accuracy.skipped("no dataset (pass --data DIR)")
    split = validation_split(ref)
    fp32, int8 = (OnnxModel(ref.onnx[p], provider=config.provider, threads=config.threads) for p in ("fp32", "int8"))
    limit = len(split) if config.accuracy_images is None else min(config.accuracy_images, len(split))
    echo(f"  INT8 accuracy: FP32 and INT8 on {limit} images of {split.image_dir.parent}")
    result = Int8Accuracy(status=OK, parity=_parity(fp32.run, int8.run, "onnx int8", ref, split, limit, echo))
    reason = "ov-int8 not benchmarked" if "ov-int8" not in config.backends else skip_reason("ov-int8", ref, config)
    if reason:
        result.openvino = Int8Accuracy.skipped(reason)
    else:
        ov_int8 = OpenVinoModel(ref.onnx["int8"], threads=config.threads)
        result.openvino = Int8Accuracy(status=OK, parity=_parity(fp32.run, ov_int8.run, "openvino int8", ref, split,
                                                                 limit, echo))
    return result


def _parity(reference: Any, candidate: Any, label: str, ref: ModelRef, split: Any, limit: int,
            echo: Echo) -> ParityReport:
    from segdeploy.export.verify import Thresholds, run_parity

    report = run_parity(reference, candidate, split, ref.spec, [tuple(ref.spec.input_size)], EVALUATE_BATCH_SIZE,
                        limit, Thresholds(), ("onnx fp32", label),
                        f"{split.image_dir.parent} (validation)")
    echo("\n".join("  " + line for line in report.summary().splitlines()))
    return report


def model_only_ips(backend: str, ref: ModelRef, config: BenchConfig, size: Size, batch: int,
                   entries: list[BackendEntry], images: list[np.ndarray]) -> float:
    """`backend`'s images/s at (size, batch): from this run's results, else measured now the same way."""
    timed = next((e.result_at(size, batch) for e in entries if e.backend == backend and e.status == OK), None)
    if timed is not None:
        return timed.images_per_second
    runner = make_runner(backend, ref, config)
    x = input_batches(ref, size, (batch,), images)[batch]
    timing = time_runs(lambda: runner.run(x), config.runs, config.warmup)
    return batch / (timing.latency.p50 / 1e3)


def end_to_end(ref: ModelRef, config: BenchConfig, entries: list[BackendEntry], images: list[np.ndarray],
               echo: Echo) -> EndToEnd:
    """`segdeploy batch --runtime R` images/s over --photos with the FP32 and the INT8 model, each against the
    model alone (same size, threads, batch) in the runtime batch used and in onnxruntime."""
    if config.photos is None:
        return EndToEnd.skipped("no --photos folder")
    precisions = [p for p in ("fp32", "int8") if ref.onnx.get(p) is not None]
    if not precisions:
        return EndToEnd.skipped("no FP32 or INT8 ONNX model")
    runtimes = list(dict.fromkeys(config.runtime))  # each once, in the order given
    runs = [_e2e_run(ref, config, runtime, precision, entries, images, echo)
            for runtime in runtimes for precision in precisions]
    return EndToEnd(status=OK, photos=str(config.photos), runtime=",".join(runtimes), runs=runs)


def _e2e_run(ref: ModelRef, config: BenchConfig, runtime: str, precision: str, entries: list[BackendEntry],
             images: list[np.ndarray], echo: Echo) -> EndToEndRun:
    from segdeploy.infer.batch.config import BatchConfig
    from segdeploy.infer.batch.run import run_batch
    from segdeploy.infer.pipeline import default_workers

    size, batch = tuple(ref.spec.input_size), config.e2e_batch_size
    workers = config.e2e_workers or default_workers()
    echo(f"  end-to-end: segdeploy batch --runtime {runtime} with the {precision.upper()} model over "
         f"{config.photos} (batch {batch}, {config.threads} threads, {workers} decode/write workers)")
    with tempfile.TemporaryDirectory(prefix="segdeploy-bench-e2e-") as tmp:
        # Default outputs; tiles off, so the pipeline makes the same model calls as the model-only figure.
        result = run_batch(BatchConfig(sources=(Path(config.photos),), out_dir=Path(tmp), model=ref.onnx[precision],
                                       batch_size=batch, runtime=runtime, provider=config.provider,
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
    return EndToEndRun(precision=precision, asked=runtime, runtime=used, runtime_reason=summary.runtime.reason,
                       provider=summary.provider, images=totals.processed, failed=totals.failed,
                       image_size=size, batch_size=batch, threads=config.threads, workers=workers,
                       outputs=list(summary.settings["save"]), seconds=totals.seconds,
                       images_per_second=e2e, model_only_backend=backend, model_only_images_per_second=model_only,
                       ratio=e2e / model_only, onnxruntime_model_only_images_per_second=ort_only,
                       ratio_vs_onnxruntime=e2e / ort_only,
                       pipeline_model_images_per_second=totals.model_images_per_second,
                       stage_ms_per_image={k: 1e3 * v / max(totals.processed, 1)
                                           for k, v in totals.stage_seconds_summed.items()})


def auto_choices(ref: ModelRef, config: BenchConfig, entries: list[BackendEntry], echo: Echo) -> list[AutoChoice]:
    """What `--runtime auto` chooses (segdeploy.infer.runtime_choice, measuring now, no cache) for each precision
    and batch size at the model's input size where both engines were timed, against the bench rounds' figures."""
    from segdeploy.infer.runtime_choice import open_chosen

    timed, size, out = {e.backend: e for e in entries if e.status == OK}, tuple(ref.spec.input_size), []
    for precision in (p for p in ("fp32", "int8") if p in ref.onnx):
        backends = {runtime: backend_for(runtime, precision) for runtime in ("onnxruntime", "openvino")}
        for batch in config.batch_sizes:
            rows = {runtime: timed[b].result_at(size, batch) if b in timed else None for runtime, b in backends.items()}
            if None in rows.values():
                continue
            model = open_chosen(ref.onnx[precision], provider=config.provider, threads=config.threads,
                                batch_size=batch, note=lambda _: None, remember=False)
            rates = {runtime: row.images_per_second for runtime, row in rows.items()}
            out.append(AutoChoice(precision=precision, image_size=size, batch_size=batch, chosen=model.runtime,
                                  reason=model.runtime_reason, rounds_images_per_second=rates,
                                  share_of_faster=rates[model.runtime] / max(rates.values())))
            echo(f"  --runtime auto, {precision.upper()} batch {batch}: {model.runtime_reason}")
            del model
    return out


def _skipped(backend: str, reason: str, echo: Echo) -> tuple[BackendEntry, None]:
    echo(f"  {backend}: skipped ({reason})")
    return BackendEntry(backend=backend, precision=PRECISION[backend], status=SKIPPED, reason=reason), None


def bench_model(ref: ModelRef, config: BenchConfig, onnx_dir: Path, echo: Echo) -> ModelReport:
    """Every requested backend of one model, then its INT8 accuracy and end-to-end figures."""
    from segdeploy.bench.roofline import roofline, sgemm_calls, sgemm_rate

    echo(f"{ref.name}: {ref.spec.arch}/{ref.spec.encoder} from {ref.path}")
    export = export_for_bench(ref, config, onnx_dir, echo) if ref.kind == "checkpoint" else None
    gflop, gflop_valid_taps = model_gflop(ref.spec, ref.sizes)
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
        short = memory_short(entries, available_mib())
        entry, live = (_skipped(backend, short, echo) if short else start_backend(backend, ref, inputs, config, echo))
        entries.append(entry)
        if live is not None:
            started[backend] = live
            open_now.append(live)
    timed_rounds(open_now, started, ref, inputs, config, sgemms, sgemm_seconds, echo)
    sgemm = roofline([sgemm_rate(lib, n, config.threads, device, s) for lib, s in sgemm_seconds.items()])
    del started, open_now
    model = ModelReport(name=ref.name, source=str(ref.path), kind=ref.kind, arch=ref.spec.arch,
                        encoder=ref.spec.encoder, classes=list(ref.spec.classes),
                        spec_input_size=tuple(ref.spec.input_size), image_sizes=list(ref.sizes),
                        input=f"{len(images)} real photos" if images else "seeded random normal (no photos found)",
                        onnx_files={p: str(f) for p, f in ref.onnx.items()}, export=export,
                        gflop_per_image=gflop, gflop_per_image_valid_taps=gflop_valid_taps,
                        sgemm=sgemm, backends=entries, auto_choices=auto_choices(ref, config, entries, echo),
                        int8_accuracy=int8_accuracy(ref, config, echo),
                        end_to_end=end_to_end(ref, config, entries, images, echo))
    model.add_derived()
    return model


def run_bench(config: BenchConfig, echo: Echo = print) -> BenchReport:
    """Benchmark every model in `config` (none: default_models()); returns the report."""
    from segdeploy.bench.roofline import FLOP_CONVENTION, describe_machine

    if not config.models:
        config = dataclasses.replace(config, models=default_models())
    config.check_folders()
    refs = resolve_models(config)
    gc.collect()
    gc.freeze()  # what is alive now (libraries, the import-time object graph) is never rescanned by the bench
    try:
        with torch_threads(config.threads), onnx_home(config) as onnx_dir:
            machine = describe_machine()
            echo(f"{machine.cpu}, {machine.usable_cores} usable cores; {config.threads} threads for every backend")
            models = [bench_model(ref, config, onnx_dir, echo) for ref in refs]
    finally:
        gc.unfreeze()
    return BenchReport(schema=SCHEMA, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=machine,
                       settings=config.to_dict(), flop_convention=FLOP_CONVENTION, models=models)


def bench_and_write(config: BenchConfig, json_path: Path | None = None, plot_path: Path | None = None,
                    echo: Echo = print, log: Echo = print) -> BenchReport:
    """`segdeploy bench`: run, print the report with `echo` (progress goes to `log`), write --json and --plot.

    The plot goes beside the JSON when matplotlib is installed and no --plot is given. Both destinations are
    checked before any work.
    """
    from segdeploy.bench.plot import plot
    from segdeploy.bench.text import format_report
    from segtrain.common.extras import importable, require

    if plot_path is None and json_path is not None and importable("matplotlib"):
        plot_path = json_path.with_suffix(".png")
    if plot_path is not None:
        require("matplotlib", "--plot")
    for path in (json_path, plot_path):
        check_writable(path)
    report = run_bench(config, echo=log)
    echo(format_report(report))
    if json_path is not None:
        report.write(json_path)
        echo(f"wrote {json_path}")
    if plot_path is not None:
        plot(report, plot_path)
        echo(f"wrote {plot_path}")
    return report

"""`segdeploy bench`: PyTorch eager vs onnxruntime FP32/INT8(/FP16) speed, side by side in one process.

For a checkpoint, the bench loads the eager model, exports its ONNX FP32 and INT8 variants (with
`segdeploy.export`, INT8 calibrated on real images) into ``--onnx-dir`` or a temporary folder, and
times every backend on the same preprocessed real images (random ones when there are none), with
the same thread count everywhere (torch.set_num_threads = onnxruntime intra_op_num_threads,
inter-op 1). For an .onnx file it times that file and its ``.int8.onnx``/``.fp16.onnx`` siblings.

Per backend: session-creation time, and peak RSS over the session's creation and its first and
warm-up runs; per image size and batch size: the first run timed on its own, then N timed rounds
in which every backend (and one SGEMM) runs once, in an order that rotates each round, so a slow
spell of a shared machine falls on all of them alike. Latency p50/p90/p99/mean, images/s from
the median latency, the achieved GFLOP/s (FLOPs counted once on the eager model) against the
SGEMM samples of the same rounds, and the largest |logit difference| from the reference backend
on the same input. Optional: the INT8 model's mIoU change against FP32 on a validation split, and the
end-to-end `segdeploy batch` images/s on a folder of photos against the model-only figure.
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.bench_setup import (  # noqa: F401  (BenchConfig and the errors are this module's interface too)
    BACKENDS,
    PRECISION,
    BenchConfig,
    BenchInputError,
    BenchRunError,
    Echo,
    ModelRef,
    check_writable,
    default_models,
    export_variants,
    gpu_provider_available,
    onnx_home,
    resolve_models,
)
from segdeploy.runtime import ModelLoadError
from segdeploy.timing import LatencyStats, PeakRss, first_and_warmup, time_interleaved, time_runs
from segtrain.contract import ModelSpec, preprocess

SCHEMA = "segdeploy-bench/1"
REWARM_BELOW_SECONDS = 1.0  # in the rounds, calls shorter than this get an untimed call right before each timed one


# --------------------------------------------------------------------------------------------
# Backends: something that turns a float32 NCHW batch into float32 logits


@dataclass
class Runner:
    backend: str
    provider: str
    session_seconds: float
    run: Callable[[np.ndarray], np.ndarray]
    notes: list[str] = field(default_factory=list)


def torch_device(config: BenchConfig) -> str:
    """Where PyTorch runs: the GPU when onnxruntime gets a GPU provider (and torch has CUDA), else the CPU."""
    import torch

    return "cuda" if gpu_provider_available(config.provider) and torch.cuda.is_available() else "cpu"


def torch_runner(ref: ModelRef, config: BenchConfig) -> Runner:
    """The checkpoint's eager model (load + build + weights = its session time), inference mode."""
    import torch

    from segtrain.checkpoint import load_model

    device = torch_device(config)
    t0 = time.perf_counter()
    model, _, _ = load_model(ref.path, device=device)
    notes = []
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
        notes.append("channels-last")
    seconds = time.perf_counter() - t0

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(x).to(device)
            if config.channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            return model(t).float().cpu().numpy()

    return Runner("torch", f"pytorch eager ({device})", seconds, run, notes)


def ort_runner(backend: str, path: Path, config: BenchConfig) -> Runner:
    """An onnxruntime session with the bench's threads, graph optimisation level and provider."""
    from segdeploy.runtime import OnnxModel

    model = OnnxModel(path, provider=config.provider, threads=config.threads,
                      graph_optimization=config.graph_optimization)
    notes = [f"graph optimisation {config.graph_optimization}"]
    run = model.run
    if config.iobinding:
        notes.append("IOBinding")
        run = _iobinding_run(model)
    return Runner(backend, model.providers[0], model.session_seconds, run, notes)


def _iobinding_run(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Run through an IOBinding: input bound in place, output allocated by the provider, then copied out."""
    session = model.session

    def run(x: np.ndarray) -> np.ndarray:
        binding = session.io_binding()
        binding.bind_cpu_input(model.input_name, np.ascontiguousarray(x, np.float32))
        binding.bind_output(model.output_name)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)

    return run


def make_runner(backend: str, ref: ModelRef, config: BenchConfig) -> Runner:
    if backend == "torch":
        return torch_runner(ref, config)
    return ort_runner(backend, ref.onnx[PRECISION[backend]], config)


def skip_reason(backend: str, ref: ModelRef, config: BenchConfig) -> str | None:
    """Why `backend` cannot run for this model here, or None."""
    if backend == "torch" and ref.kind != "checkpoint":
        return "needs a checkpoint (an .onnx file has no PyTorch weights)"
    if backend == "ort-fp16" and not gpu_provider_available(config.provider):
        return "FP16 is benchmarked with a GPU provider only (none available or --provider cpu)"
    if backend != "torch" and PRECISION[backend] not in ref.onnx:
        return f"no {PRECISION[backend]} model (export with --{PRECISION[backend]})"
    return None


# --------------------------------------------------------------------------------------------
# Measuring


def sample_images(ref: ModelRef, config: BenchConfig, count: int) -> list[np.ndarray]:
    """Up to `count` real photos (--photos, else the dataset's validation images); none: random input."""
    from segdeploy.batch import find_images
    from segtrain.coco import DataError, resolve_split
    from segtrain.images import ImageReadError, load_image

    folders = [Path(config.photos)] if config.photos else []
    if ref.data is not None:
        try:
            folders.append(resolve_split(ref.data, "validation")[0])
        except DataError:
            pass
    for folder in folders:
        images = []
        for rel in find_images(folder)[:count] if folder.is_dir() else []:
            try:
                images.append(load_image(folder / rel))
            except ImageReadError:
                continue
        if images:
            return images
    return []


def input_batches(ref: ModelRef, size: tuple[int, int], batch_sizes: tuple[int, ...],
                  images: list[np.ndarray]) -> dict[int, np.ndarray]:
    """The same preprocessed images at `size` for every batch size (cycled; seeded noise without photos)."""
    n = max(batch_sizes)
    if images:
        spec = dataclasses.replace(ref.spec, input_size=size)
        full = preprocess([images[i % len(images)] for i in range(n)], spec)
    else:
        full = np.random.default_rng(0).standard_normal((n, 3, *size), dtype=np.float32)
    return {b: np.ascontiguousarray(full[:b]) for b in batch_sizes}


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch.set_num_threads for the bench (restored afterwards, so tests running in-process are unaffected)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def backend_errors(ref: ModelRef, backend: str) -> Iterator[None]:
    """A backend that cannot load is an input error; one that fails while running is a run error."""
    try:
        yield
    except ModelLoadError as e:
        raise BenchInputError(str(e)) from e
    except (BenchInputError, BenchRunError, KeyboardInterrupt):
        raise
    except Exception as e:  # onnxruntime and torch raise their own types; name the backend and the model
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise BenchRunError(f"{ref.path}: {backend} failed ({first})") from e


@dataclass
class Live:
    """A started backend: its report entry, its first-run time and output per (size, batch), and its
    session while open (closed, runner None, once it has been timed)."""

    backend: str
    runner: Runner | None
    entry: dict
    first: dict[tuple[tuple[int, int], int], tuple[float, np.ndarray]]

    @property
    def growth_mib(self) -> float:
        return self.entry["peak_rss_mib"] - self.entry["rss_at_start_mib"]


def start_backend(backend: str, ref: ModelRef, inputs: dict, config: BenchConfig,
                  echo: Echo) -> tuple[dict, Live | None]:
    """Open the backend and run its first and warm-up runs at every size and batch; peak RSS covers both."""
    entry: dict[str, Any] = {"backend": backend, "precision": PRECISION[backend]}
    reason = skip_reason(backend, ref, config)
    if reason:
        echo(f"  {backend}: skipped ({reason})")
        return {**entry, "status": "skipped", "reason": reason}, None
    with PeakRss() as peak, backend_errors(ref, backend):
        runner = make_runner(backend, ref, config)
        first = {(size, b): first_and_warmup(lambda x=x: runner.run(x), config.warmup)
                 for size, batches in inputs.items() for b, x in batches.items()}
    entry.update(status="ok", provider=runner.provider, threads=config.threads, notes=runner.notes,
                 file=str(ref.onnx[PRECISION[backend]]) if backend != "torch" else str(ref.path),
                 session_seconds=runner.session_seconds, peak_rss_mib=peak.mib, rss_at_start_mib=peak.start_mib,
                 rss_scope=peak.scope, results=[])
    echo(f"  {backend}: session {runner.session_seconds:.2f} s, first runs "
         f"{', '.join(f'{t:.2f}' for t, _ in first.values())} s, peak RSS {peak.mib:.0f} MiB")
    return entry, Live(backend, runner, entry, {k: (t, np.asarray(out)) for k, (t, out) in first.items()})


def _guarded(fn: Callable[[], object], ref: ModelRef, backend: str) -> Callable[[], None]:
    def call() -> None:
        with backend_errors(ref, backend):
            fn()

    return call


def timed_rounds(lives: list[Live], started: dict[str, Live], ref: ModelRef, inputs: dict, config: BenchConfig,
                 sgemms: dict[str, Callable[[], None]], sgemm_seconds: dict[str, list[float]], echo: Echo) -> None:
    """N interleaved rounds per (size, batch): every backend in `lives` and each SGEMM once per round.

    The backends' results go into their entries (compared with the reference among `started`), the
    SGEMM seconds into `sgemm_seconds`; then the sessions are closed.
    """
    for live in lives:
        live.entry["timed_with"] = [other.backend for other in lives]
    for size, batches in inputs.items():
        for b, x in batches.items():
            fns = {live.backend: _guarded(lambda r=live.runner, x=x: r.run(x), ref, live.backend) for live in lives}
            fns.update({f"sgemm {lib}": fn for lib, fn in sgemms.items()})
            # short calls would pay for the switch from the previous library: warm them up again first
            rewarm = {f"sgemm {lib}" for lib in sgemms} | {
                live.backend for live in lives if live.first[(size, b)][0] < REWARM_BELOW_SECONDS}
            seconds = time_interleaved(fns, config.runs, rewarm)
            for lib in sgemms:
                sgemm_seconds.setdefault(lib, []).extend(seconds[f"sgemm {lib}"])
            for live in lives:
                row = result_row(live, size, b, seconds[live.backend], started)
                live.entry["results"].append(row)
                echo(f"  {live.backend:<8} {size[0]}x{size[1]} batch {b}: p50 {row['latency_ms']['p50']:.1f} ms, "
                     f"{row['images_per_second']:.2f} images/s")
    for live in lives:
        live.runner = None  # the session (and, for torch, the model) is freed


def result_row(live: Live, size: tuple[int, int], batch: int, seconds: list[float], started: dict[str, Live]) -> dict:
    """Latency statistics of one backend at (size, batch), and how its first output compares with the reference."""
    latency = LatencyStats.from_seconds(seconds)
    first_seconds, out = live.first[(size, batch)]
    row = {"image_size": list(size), "batch_size": batch, "first_run_seconds": first_seconds,
           "latency_ms": latency.to_dict(), "images_per_second": batch / (latency.p50 / 1e3)}
    reference = reference_for(live.backend, started)
    if reference is not None:
        ref_out = reference.first[(size, batch)][1]
        row["max_abs_diff"] = {"against": reference.backend,
                               "value": float(np.abs(out.astype(np.float64) - ref_out).max()),
                               "argmax_agreement": float((out.argmax(1) == ref_out.argmax(1)).mean())}
    return row


def model_gflop(spec: ModelSpec, sizes: list[tuple[int, int]]) -> dict[str, dict[str, float]]:
    """{"dense": {"HxW": GFLOP per image}, "valid_taps": {...}}, counted once on the eager architecture
    (weights do not change it); empty for an architecture the registry does not know."""
    from segdeploy.roofline import count_gflop
    from segtrain.models import MODELS, build_model

    if spec.arch not in MODELS:
        return {}
    model = build_model(spec, encoder_weights="none").eval()
    counts = {size_key(size): count_gflop(model, size) for size in sizes}
    return {kind: {key: c[kind] for key, c in counts.items()} for kind in ("dense", "valid_taps")}


def size_key(size: tuple[int, int] | list[int]) -> str:
    return f"{size[0]}x{size[1]}"


# --------------------------------------------------------------------------------------------
# Accuracy of INT8 and the end-to-end pipeline


def validation_split(ref: ModelRef) -> Any:
    from segtrain.coco import CocoSplit
    from segtrain.evaluation import split_categories

    return CocoSplit.open(ref.data, "validation", categories=split_categories(ref.spec))


def int8_accuracy(ref: ModelRef, config: BenchConfig, echo: Echo) -> dict:
    """FP32 vs INT8 ONNX on the validation split at the model's input size: agreement and both mIoUs."""
    from segdeploy.runtime import OnnxModel
    from segdeploy.verify import Thresholds, run_parity

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
    from segdeploy.batch import BatchConfig, default_workers, run_batch

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
        result = run_batch(BatchConfig(input_dir=Path(config.photos), out_dir=Path(tmp), model=ref.onnx["fp32"],
                                       batch_size=batch, provider=config.provider, threads=config.threads,
                                       workers=workers, progress=False), log=lambda message: None)
    totals = result.totals.to_dict()
    e2e = totals["images_per_second"] or 0.0
    echo(f"  end-to-end {e2e:.2f} images/s vs model-only {model_only:.2f} images/s "
         f"(ratio {e2e / model_only:.2f})")
    return {"status": "ok", "photos": str(config.photos), "images": totals["processed"], "failed": totals["failed"],
            "image_size": list(size), "batch_size": batch, "threads": config.threads, "workers": workers,
            "seconds": totals["seconds"], "images_per_second": e2e, "model_only_images_per_second": model_only,
            "ratio": e2e / model_only, "pipeline_model_images_per_second": totals["model_images_per_second"],
            "stage_ms_per_image": {k: 1e3 * v / max(totals["processed"], 1)
                                   for k, v in result.totals.stage_seconds.items()}}


# --------------------------------------------------------------------------------------------
# The run


MEMORY_SHARE = 0.6  # of the memory available when a model starts, for backends open at the same time


def available_mib() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**20


def must_close(open_now: list[Live], schedule: str, budget_mib: float) -> bool:
    """Whether the open backends are timed (and closed) before the next one opens.

    interleaved: never (all backends share the timed rounds); sequential: always; auto: when the
    memory they grew by, plus as much again for the next one, would pass `budget_mib` (three
    SegNet-512 sessions with batch-8 arenas do not fit in 24 GB together).
    """
    if schedule == "sequential":
        return True
    if schedule == "interleaved":
        return False
    growths = [live.growth_mib for live in open_now]
    return sum(growths) + max(growths) > budget_mib


def reference_for(backend: str, started: dict[str, Live]) -> Live | None:
    """What a backend's logits are compared with: torch for ORT FP32, ORT FP32 (else torch) for the rest."""
    if backend == "torch":
        return None
    order = ("torch",) if backend == "ort-fp32" else ("ort-fp32", "torch")
    return next((started[b] for b in order if b in started), None)


def bench_model(ref: ModelRef, config: BenchConfig, onnx_dir: Path, echo: Echo) -> dict:
    """Every requested backend of one model, then its INT8 accuracy and end-to-end figures."""
    from segdeploy.roofline import roofline, sgemm_calls, sgemm_rate

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
    """Benchmark every model in `config`; returns the report document (see segdeploy.bench_report)."""
    from segdeploy import bench_report
    from segdeploy.roofline import FLOP_CONVENTION, describe_machine

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
    bench_report.add_derived(doc)
    return doc

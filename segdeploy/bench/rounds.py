"""Measuring: the same inputs for every backend, first and warm-up runs, then interleaved timed rounds.

Per backend: its session is opened and, at each (size, batch), its first run is timed on its own,
then the warm-up runs follow (peak RSS covers both). Then N timed rounds in which every open
backend (and each SGEMM of the roofline) runs once, in an order that rotates each round, so a slow
spell of a shared machine falls on all of them alike. With --schedule auto, backends are opened
only while their memory fits; otherwise the open ones are timed and closed first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.bench.backends import Runner, backend_errors, make_runner, skip_reason
from segdeploy.bench.config import PRECISION, BenchConfig, Echo
from segdeploy.bench.models import ModelRef
from segdeploy.bench.report import OK, SKIPPED, BackendEntry, Difference, Measurement, Size
from segdeploy.bench.timing import LatencyStats, PeakRss, first_and_warmup, time_interleaved
from segtrain.contract import preprocess

REWARM_BELOW_SECONDS = 1.0  # in the rounds, calls shorter than this get an untimed call right before each timed one


def sample_images(ref: ModelRef, config: BenchConfig, count: int) -> list[np.ndarray]:
    """Up to `count` real photos (--photos, else the dataset's validation images); none: random input."""
    from segdeploy.infer.batch.sources import find_images
    from segtrain.data.coco import DataError, resolve_split
    from segtrain.data.images import ImageReadError, load_image

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


@dataclass
class Live:
    """A started backend: its report entry, its first-run time and output per (size, batch), and its
    session while open (closed, runner None, once it has been timed)."""

    backend: str
    runner: Runner | None
    entry: BackendEntry
    first: dict[tuple[Size, int], tuple[float, np.ndarray]]


def start_backend(backend: str, ref: ModelRef, inputs: dict, config: BenchConfig,
                  echo: Echo) -> tuple[BackendEntry, Live | None]:
    """Open the backend and run its first and warm-up runs at every size and batch; peak RSS covers both."""
    reason = skip_reason(backend, ref, config)
    if reason:
        echo(f"  {backend}: skipped ({reason})")
        return BackendEntry(backend=backend, precision=PRECISION[backend], status=SKIPPED, reason=reason), None
    with PeakRss() as peak, backend_errors(ref, backend):
        runner = make_runner(backend, ref, config)
        first = {(size, b): first_and_warmup(lambda x=x: runner.run(x), config.warmup)
                 for size, batches in inputs.items() for b, x in batches.items()}
    entry = BackendEntry(backend=backend, precision=PRECISION[backend], status=OK, provider=runner.provider,
                         threads=config.threads, notes=runner.notes,
                         file=str(ref.onnx[PRECISION[backend]]) if backend != "torch" else str(ref.path),
                         session_seconds=runner.session_seconds, peak_rss_mib=peak.mib,
                         rss_at_start_mib=peak.start_mib, rss_scope=peak.scope, results=[])
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
        live.entry.timed_with = [other.backend for other in lives]
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
                row = measurement(live, size, b, seconds[live.backend], started)
                live.entry.results.append(row)
                echo(f"  {live.backend:<8} {size[0]}x{size[1]} batch {b}: p50 {row.latency_ms.p50:.1f} ms, "
                     f"{row.images_per_second:.2f} images/s")
    for live in lives:
        live.runner = None  # the session (and, for torch, the model) is freed


def measurement(live: Live, size: Size, batch: int, seconds: list[float], started: dict[str, Live]) -> Measurement:
    """Latency statistics of one backend at (size, batch), and how its first output compares with the reference."""
    latency = LatencyStats.from_seconds(seconds)
    first_seconds, out = live.first[(size, batch)]
    reference, difference = reference_for(live.backend, started), None
    if reference is not None:
        ref_out = reference.first[(size, batch)][1]
        difference = Difference(against=reference.backend, value=float(np.abs(out.astype(np.float64) - ref_out).max()),
                                argmax_agreement=float((out.argmax(1) == ref_out.argmax(1)).mean()))
    return Measurement(image_size=size, batch_size=batch, first_run_seconds=first_seconds, latency_ms=latency,
                       images_per_second=batch / (latency.p50 / 1e3), max_abs_diff=difference)


MEMORY_HEADROOM = 1.25  # a backend opens only where this many times the largest growth so far is available
MEMORY_SHARE = 0.6  # of the memory available when a model starts, for backends open at the same time


def available_mib() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**20


def must_close(open_now: list[Live], schedule: str, budget_mib: float, available_now_mib: float | None = None) -> bool:
    """Whether the open backends are timed (and closed) before the next one opens.

    interleaved: never (all backends share the timed rounds); sequential: always; auto: when the
    memory they grew by, plus as much again for the next one, would pass `budget_mib` (three
    SegNet-512 sessions with batch-8 arenas do not fit in 24 GB together), or when the memory
    available now (`available_now_mib`) is less than twice the largest growth: what the backends
    timed and closed earlier left resident (allocator caches the libraries keep) is not in the
    growths, and five SegNet-512 backends were killed for it on a 24 GB machine.
    """
    if schedule == "sequential":
        return True
    if schedule == "interleaved":
        return False
    growths = [live.entry.rss_growth_mib for live in open_now]
    if available_now_mib is not None and available_now_mib < 2 * max(growths):
        return True
    return sum(growths) + max(growths) > budget_mib


def memory_short(entries: list[BackendEntry], available_now_mib: float) -> str | None:
    """Why the next backend is not opened, or None: when the memory available now is less than the most any
    backend of this model grew by (plus a quarter), opening one more would likely get the process killed by
    the kernel and every figure measured so far with it. Freed sessions do not always give their pages back
    (a SegNet-512 bench kept 6 GB after closing onnxruntime FP32), so what is available is measured, not
    assumed."""
    grown = max((e.rss_growth_mib for e in entries if e.status == OK), default=0.0)
    if grown and available_now_mib < MEMORY_HEADROOM * grown:
        return (f"not enough memory: {available_now_mib:.0f} MiB available, and the backends before it grew by "
                f"up to {grown:.0f} MiB; use fewer --batch-sizes or --backends")
    return None


def reference_for(backend: str, started: dict[str, Live]) -> Live | None:
    """What a backend's logits are compared with: torch for ORT FP32; for OpenVINO, onnxruntime on the same
    file first; ORT FP32 (else torch) for the rest."""
    if backend == "torch":
        return None
    same_file = ("ort-" + backend.removeprefix("ov-"),) if backend.startswith("ov-") else ()
    order = ("torch",) if backend == "ort-fp32" else (*same_file, "ort-fp32", "torch")
    return next((started[b] for b in order if b in started), None)

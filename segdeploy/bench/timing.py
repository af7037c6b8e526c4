"""Timing loops, latency statistics and peak memory for the benchmarks (torch-free).

A measurement is: one first run (timed on its own: it pays for lazy allocation, kernel selection
and, in onnxruntime, shape-specialised planning), more warm-up runs (untimed), then N timed runs.
Several things compared with each other are timed in interleaved rounds (`time_interleaved`), so
that on a shared machine a slow spell falls on all of them alike. Latencies are wall-clock
seconds from `time.perf_counter` around one call that returns the outputs as host arrays, so a
GPU backend is timed up to its results being usable.

Peak RSS on Linux comes from the kernel's high-water mark (VmHWM in /proc/self/status), which
writing "5" to /proc/self/clear_refs resets: each backend's peak is measured from its own start.
Elsewhere the process's lifetime peak is reported instead, and labelled so.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class LatencyStats:
    """Latency percentiles of the timed runs of one batch size, in milliseconds."""

    runs: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def from_seconds(cls, seconds: list[float]) -> LatencyStats:
        if not seconds:
            raise ValueError("no timed runs")
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])  # linear interpolation between order statistics
        return cls(runs=len(ms), p50=float(p50), p90=float(p90), p99=float(p99), mean=float(ms.mean()),
                   min=float(ms.min()), max=float(ms.max()))


@dataclass(frozen=True)
class Timing:
    first_run_seconds: float
    latency: LatencyStats
    output: object  # what the first run returned, for comparing backends on the same input


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside timed loops (a full collection can take longer than a run)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def first_and_warmup(fn: Callable[[], object], warmup: int) -> tuple[float, object]:
    """(seconds of the first call, its result), then `warmup - 1` more untimed calls."""
    if warmup < 1:
        raise ValueError(f"need at least one warm-up run (got {warmup})")
    t0 = time.perf_counter()
    output = fn()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        fn()
    return first, output


def time_interleaved(fns: dict[str, Callable[[], object]], runs: int,
                     rewarm: frozenset[str] | set[str] = frozenset()) -> dict[str, list[float]]:
    """Seconds per call of each function over `runs` rounds, one timed call of each per round.

    The order rotates by one each round, so a slow spell of a shared machine (another process
    waking up) falls on every function alike instead of on whichever ran during it: ratios of
    the medians stay fair where back-to-back blocks of runs would not. Switching costs a few
    milliseconds (the previous library's worker threads still spin, this one's are parked), which
    matters for short calls only: a function named in `rewarm` gets an untimed call just before
    each timed one.
    """
    if runs < 1:
        raise ValueError(f"need at least one timed run (got {runs})")
    names = list(fns)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    with gc_paused():
        for r in range(runs):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                if name in rewarm:
                    fns[name]()
                t0 = time.perf_counter()
                fns[name]()
                seconds[name].append(time.perf_counter() - t0)
    return seconds


def time_runs(fn: Callable[[], object], runs: int, warmup: int) -> Timing:
    """One function alone: its first run (timed on its own), `warmup - 1` more, then `runs` timed runs."""
    first, output = first_and_warmup(fn, warmup)
    return Timing(first, LatencyStats.from_seconds(time_interleaved({"fn": fn}, runs)["fn"]), output)


class PeakRss:
    """Peak resident memory of this process over a stretch of code, in MiB.

    ``with PeakRss() as peak: ...`` then ``peak.mib`` (the high-water mark during the block, which
    includes everything already resident when it started: ``peak.start_mib``), ``peak.scope``
    says whether the mark could be reset ("phase") or is the process's lifetime peak ("process").
    """

    def __init__(self) -> None:
        self.start_mib = 0.0
        self.mib = 0.0
        self.scope = "phase"

    def __enter__(self) -> PeakRss:
        release_free_memory()
        self.start_mib = current_rss_mib()
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            self.scope = "process"
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_kib("VmHWM") if self.scope == "phase" else None
        if hwm is None:
            self.scope = "process"
            self.mib = _lifetime_peak_mib()
        else:
            self.mib = hwm / 1024


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so the next peak starts low."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): freed memory stays mapped; peaks are still correct
            pass


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _lifetime_peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def current_rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20

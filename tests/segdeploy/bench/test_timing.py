"""Timing primitives: latency percentiles, first/warm-up/timed runs, interleaved rounds, per-phase peak RSS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segdeploy.bench.timing import LatencyStats, PeakRss, time_interleaved, time_runs


def test_latency_percentiles_of_known_runs() -> None:
    stats = LatencyStats.from_seconds([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (stats.runs, stats.min, stats.max) == (100, pytest.approx(1), pytest.approx(100))
    assert stats.p50 == pytest.approx(50.5) and stats.p90 == pytest.approx(90.1) and stats.p99 == pytest.approx(99.01)
    assert stats.mean == pytest.approx(50.5)
    with pytest.raises(ValueError, match="no timed runs"):
        LatencyStats.from_seconds([])


def test_time_runs_calls_first_warmup_and_timed_runs() -> None:
    calls = []
    timing = time_runs(lambda: calls.append(len(calls)) or len(calls), runs=5, warmup=3)
    assert len(calls) == 1 + 2 + 5 and timing.output == 1 and timing.latency.runs == 5
    with pytest.raises(ValueError):
        time_runs(lambda: None, runs=0, warmup=1)


def test_time_interleaved_rotates_the_order_each_round() -> None:
    calls: list[str] = []
    seconds = time_interleaved({name: (lambda n=name: calls.append(n)) for name in "abc"}, runs=4)
    assert calls == list("abc" "bca" "cab" "abc")
    assert {k: len(v) for k, v in seconds.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for v in seconds.values() for t in v)
    calls.clear()
    time_interleaved({name: (lambda n=name: calls.append(n)) for name in "ab"}, runs=2, rewarm={"b"})
    assert calls == list("abb" "bba")  # b's timed call always follows an untimed one of its own


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable VmHWM")
def test_peak_rss_is_per_phase() -> None:
    with PeakRss() as big:
        block = np.ones(256 * 2**20 // 8)  # 256 MiB, touched
        del block
    with PeakRss() as small:
        block = np.ones(16 * 2**20 // 8)
        del block
    assert big.scope == small.scope == "phase"
    assert big.mib - big.start_mib > 200
    assert small.mib - small.start_mib < 100  # the earlier 256 MiB peak was reset

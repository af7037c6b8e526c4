"""The timing schedule: when the open backends are timed and closed before the next one opens."""

from __future__ import annotations


def test_auto_schedule_closes_backends_before_memory_runs_out() -> None:
    from segdeploy.bench.report import BackendEntry
    from segdeploy.bench.rounds import Live, must_close

    def live(growth: float) -> Live:
        return Live("x", None, BackendEntry(backend="x", precision="fp32", status="ok", peak_rss_mib=1000 + growth,
                                            rss_at_start_mib=1000), {})

    assert not must_close([live(2000), live(3000)], "auto", budget_mib=8001)  # 5000 open + 3000 for the next
    assert must_close([live(2000), live(3000)], "auto", budget_mib=7999)
    assert must_close([live(1)], "sequential", budget_mib=1e9)
    assert not must_close([live(1e9)], "interleaved", budget_mib=1)
    # what earlier, closed backends left resident: the memory available now decides too
    assert not must_close([live(2000)], "auto", budget_mib=1e6, available_now_mib=4001)
    assert must_close([live(2000)], "auto", budget_mib=1e6, available_now_mib=3999)


def test_a_backend_is_skipped_not_killed_when_memory_is_short() -> None:
    from segdeploy.bench.report import BackendEntry
    from segdeploy.bench.rounds import memory_short

    grew = BackendEntry(backend="ort-fp32", precision="fp32", status="ok", peak_rss_mib=7000, rss_at_start_mib=1000)
    skipped = BackendEntry(backend="ort-fp16", precision="fp16", status="skipped", reason="no GPU")
    assert memory_short([], 10) is None  # the first backend always opens: nothing is known yet
    assert memory_short([skipped], 10) is None
    assert memory_short([grew, skipped], 7501) is None  # 1.25 x 6000
    reason = memory_short([grew, skipped], 7499)
    assert reason.startswith("not enough memory: 7499 MiB available") and "6000 MiB" in reason

"""The bench report on screen (and the lines benchmarks/targets.py reuses in its markdown page)."""

from __future__ import annotations

import math

from segdeploy.bench.report import (
    OK,
    BackendEntry,
    BenchReport,
    EndToEnd,
    Int8Accuracy,
    Measurement,
    ModelReport,
    size_key,
)

ROW_HEADER = (f"  {'backend':<9} {'size':>9} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'mean ms':>9} "
              f"{'img/s':>8} {'GFLOP/s':>8} {'%SGEMM':>6} {'%valid':>6} {'first s':>8} {'max|diff|':>9}")


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def machine_line(report: BenchReport) -> str:
    m = report.machine
    return (f"{m.cpu} ({m.usable_cores} usable cores; {' '.join(m.isa) or 'no AVX'}), {m.memory_gib} GiB; "
            f"onnxruntime {m.onnxruntime}, torch {m.torch}; {report.threads} threads for every backend")


def _row(backend: str, r: Measurement) -> str:
    lat = r.latency_ms
    return (f"  {backend:<9} {size_key(r.image_size):>9} {r.batch_size:>5} {lat.p50:>9.1f} {lat.p90:>9.1f} "
            f"{lat.p99:>9.1f} {lat.mean:>9.1f} {r.images_per_second:>8.2f} "
            f"{fmt(r.gflops_per_second, '.1f'):>8} {fmt(pct(r.sgemm_fraction), '.0f'):>6} "
            f"{fmt(pct(r.sgemm_fraction_valid_taps), '.0f'):>6} {r.first_run_seconds:>8.2f} "
            f"{fmt(r.max_abs_diff.value if r.max_abs_diff else None, '.2e'):>9}")


def rounds_line(model: ModelReport) -> str:
    g = model.sgemm
    libs = ", ".join(f"{r.library} {r.gflops:.1f}" for r in g.libraries)
    groups = []
    for entry in model.timed().values():
        if entry.timed_with not in groups:
            groups.append(entry.timed_with)
    together = "; ".join(" + ".join(group) for group in groups)
    return (f"timed in interleaved rounds (each backend once per round, rotating order): {together}; "
            f"SGEMM {g.n}^3 float32 on {g.device} in the same rounds, median GFLOP/s: {libs} "
            f"(roofline: {g.library})")


def flops_text(model: ModelReport) -> str:
    gflop, valid = model.gflop_per_image, model.gflop_per_image_valid_taps or {}
    if not gflop:
        return "FLOPs not counted"
    return ", ".join(f"{g:.1f} GFLOP/image at {k} ({valid.get(k, math.nan):.1f} on valid taps)"
                     for k, g in gflop.items())


def rss_growth(entry: BackendEntry) -> str:
    return f"{entry.rss_growth_mib:+.0f} MiB"


def model_lines(model: ModelReport) -> list[str]:
    lines = [f"{model.name} ({model.arch}/{model.encoder}, {model.kind} {model.source}); {flops_text(model)}; "
             f"input: {model.input}", f"  {rounds_line(model)}", ROW_HEADER]
    for entry in model.backends:
        if entry.status != OK:
            lines.append(f"  {entry.backend:<9} skipped: {entry.reason}")
            continue
        lines += [_row(entry.backend, r) for r in entry.results]
    for entry in model.timed().values():
        lines.append(f"  {entry.backend:<9} {entry.provider}: session {entry.session_seconds:.2f} s, "
                     f"peak RSS {entry.peak_rss_mib:.0f} MiB ({rss_growth(entry)} over the "
                     f"{entry.rss_at_start_mib:.0f} MiB at its start"
                     f"{'' if entry.rss_scope == 'phase' else '; process lifetime peak'})")
    for r in model.ratios:
        lines.append(f"  {r.name} at {size_key(r.image_size)} batch {r.batch_size}: {r.value:.2f}x"
                     f"{'' if r.same_rounds else ' (timed in separate rounds)'}")
    return lines + auto_lines(model) + accuracy_lines(model.int8_accuracy) + e2e_lines(model.end_to_end)


def auto_lines(model: ModelReport) -> list[str]:
    """What `--runtime auto` chose (its own measurement), and where that engine stands in the bench rounds."""
    lines = []
    for c in model.auto_choices or []:
        rates = c.rounds_images_per_second
        figures = ", ".join(f"{name} {rate:.2f}" for name, rate in rates.items())
        lines.append(f"  --runtime auto for {c.precision.upper()} at {size_key(c.image_size)} batch {c.batch_size}: "
                     f"{c.chosen}; bench rounds images/s {figures}: the choice runs at {c.share_of_faster:.2f}x the "
                     f"faster ({c.reason})")
    return lines


def accuracy_lines(acc: Int8Accuracy, title: str = "INT8 accuracy") -> list[str]:
    """The INT8 model's mIoU against FP32 (onnxruntime), then the same INT8 file on OpenVINO."""
    if acc.status != OK:
        return [f"  {title}: skipped ({acc.reason})"]
    r = acc.parity.results[0]
    ref, new = r.miou_reference, r.miou_candidate
    if math.isnan(ref) or math.isnan(new):
        lines = [f"  {title} on {r.images} images: mIoU undefined; agreement {100 * r.agreement:.2f}%"]
    else:
        lines = [f"  {title} on {r.images} images of {acc.parity.data}: mIoU FP32 {100 * ref:.2f}%, "
                 f"INT8 {100 * new:.2f}% ({100 * (new - ref):+.2f} points), arg-max agreement "
                 f"{100 * r.agreement:.2f}%"]
    nested = accuracy_lines(acc.openvino, "INT8 accuracy on OpenVINO") if acc.openvino is not None else []
    return lines + nested


def e2e_lines(e2e: EndToEnd) -> list[str]:
    if e2e.status != OK:
        return [f"  end-to-end: skipped ({e2e.reason})"]
    lines = []
    for run in e2e.runs:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in run.stage_ms_per_image.items())
        ort = run.onnxruntime_model_only_images_per_second
        vs_ort = "" if run.model_only_backend.startswith("ort-") else \
            f", {run.ratio_vs_onnxruntime:.2f}x onnxruntime's model-only {ort:.2f}"
        lines.append(f"  end-to-end `segdeploy batch --runtime {e2e.asked(run)}` ({run.provider}) with the "
                     f"{run.precision.upper()} model on {run.images} photos ({e2e.photos}), batch "
                     f"{run.batch_size}, {run.threads} threads, {run.workers} decode/write workers: "
                     f"{run.images_per_second:.2f} images/s vs model-only {run.model_only_images_per_second:.2f} "
                     f"({run.model_only_backend}) = {run.ratio:.2f}x{vs_ort} (per image, ms summed over "
                     f"threads: {stages})")
    return lines


def format_report(report: BenchReport) -> str:
    lines = [machine_line(report), f"FLOPs: {report.flop_convention}"]
    for model in report.models:
        lines += [""] + model_lines(model)
    return "\n".join(lines)

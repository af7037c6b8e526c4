"""This project's acceptance bars for the benchmark suite, and the markdown page of its results.

`segdeploy bench` reports measurements only; the bars below are the project's goals (issues), held
to the figures of one bench run here, not something a user's bench prints.
"""

from __future__ import annotations

from segdeploy.bench.report import (
    accuracy_lines,
    e2e_lines,
    flops_text,
    fmt,
    machine_line,
    ok_backends,
    pct,
    rounds_line,
    rss_growth,
    size_key,
)

FP32_SPEEDUP, INT8_SPEEDUP, E2E_RATIO, SGEMM_FRACTION, INT8_MAX_DROP_POINTS = 1.3, 1.8, 0.95, 0.9, 1.0


def _target(text: str, size: list[int] | None, measured: float, threshold: float, higher: bool = True) -> dict:
    return {"target": text, "image_size": size, "measured": measured, "threshold": threshold,
            "met": bool(measured >= threshold) if higher else bool(measured <= threshold)}


def targets(model: dict) -> list[dict]:
    """The issue's targets that this model's figures can be held to (ratios measured in this run)."""
    out = []
    for r in model["ratios"]:
        if r["batch_size"] == 1 and r["name"] == "ort-fp32 / torch":
            out.append(_target(f"onnxruntime FP32 >= {FP32_SPEEDUP}x PyTorch eager images/s at batch 1",
                               r["image_size"], r["value"], FP32_SPEEDUP))
        if r["batch_size"] == 1 and r["name"] == "ort-int8 / ort-fp32":
            out.append(_target(f"INT8 >= {INT8_SPEEDUP}x onnxruntime FP32 images/s at batch 1",
                               r["image_size"], r["value"], INT8_SPEEDUP))
    acc = model.get("int8_accuracy") or {}
    if acc.get("status") == "ok" and acc.get("results") and acc["results"][0]["miou_change"] is not None:
        change = 100 * acc["results"][0]["miou_change"]
        out.append(_target(f"INT8 mIoU drop at most {INT8_MAX_DROP_POINTS:g} point (change in points)",
                           acc["results"][0]["size"], change, -INT8_MAX_DROP_POINTS))
    e2e = model.get("end_to_end") or {}
    if e2e.get("status") == "ok":
        out.append(_target(f"end-to-end batch images/s >= {E2E_RATIO}x model-only", e2e["image_size"],
                           e2e["ratio"], E2E_RATIO))
    fp32 = ok_backends(model).get("ort-fp32")
    if fp32:
        for size in model["image_sizes"]:
            fractions = [r["sgemm_fraction_valid_taps"] for r in fp32["results"]
                         if r["image_size"] == size and r["sgemm_fraction_valid_taps"] is not None]
            if fractions:
                out.append(_target(f"onnxruntime FP32 GFLOP/s (valid taps) >= {SGEMM_FRACTION:.0%} of SGEMM "
                                   "(best batch size)", size, max(fractions), SGEMM_FRACTION))
    return out


def markdown(doc: dict, command: str, level: int = 1) -> str:
    """A markdown page of the results: machine, command, one table per model, ratios and targets."""
    h = "#" * level
    lines = [f"{h} Benchmark results", "", f"- Machine: {machine_line(doc)}",
             f"- FLOPs: {doc['flop_convention']}", f"- Recorded: {doc['created']}",
             f"- Command: `{command}`", ""]
    for model in doc["models"]:
        lines += [f"{h}# {model['name']} ({model['arch']}/{model['encoder']})", "",
                  f"{flops_text(model)}; input: {model['input']}; {rounds_line(model)}.", "",
                  "| backend | size | batch | p50 ms | p90 ms | p99 ms | mean ms | images/s | GFLOP/s | % SGEMM "
                  "| % SGEMM (valid taps) | first run s | session s | peak RSS MiB (growth) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for entry in model["backends"]:
            if entry["status"] != "ok":
                lines.append(f"| {entry['backend']} | skipped: {entry['reason']} |" + " |" * 12)
                continue
            for r in entry["results"]:
                lat = r["latency_ms"]
                frac, valid = pct(r.get("sgemm_fraction")), pct(r.get("sgemm_fraction_valid_taps"))
                lines.append(f"| {entry['backend']} | {size_key(r['image_size'])} | {r['batch_size']} "
                             f"| {lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} | {lat['mean']:.1f} | "
                             f"{r['images_per_second']:.2f} | {fmt(r['gflops_per_second'], '.1f')} "
                             f"| {fmt(frac, '.0f')} | {fmt(valid, '.0f')} | {r['first_run_seconds']:.2f} "
                             f"| {entry['session_seconds']:.2f} "
                             f"| {entry['peak_rss_mib']:.0f} ({rss_growth(entry)}) |")
        lines.append("")
        extra = [f"{r['name']} at {size_key(r['image_size'])} batch {r['batch_size']}: **{r['value']:.2f}x**"
                 f"{'' if r['same_rounds'] else ' (timed in separate rounds)'}" for r in model["ratios"]]
        extra += [s.strip() for s in accuracy_lines(model.get("int8_accuracy") or {})]
        extra += [s.strip() for s in e2e_lines(model.get("end_to_end") or {})]
        extra += [f"target {'met' if t['met'] else '**missed**'}: {t['target']}"
                  f"{' at ' + size_key(t['image_size']) if t['image_size'] else ''}: {t['measured']:.2f} "
                  f"(bar {t['threshold']:g})" for t in targets(model)]
        lines += [f"- {s}" for s in extra] + [""]
    return "\n".join(lines)

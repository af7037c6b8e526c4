"""What a bench run reports: derived figures (GFLOP/s, ratios), the screen table, JSON and the
latency plot. Measurements only: this project's acceptance bars live in benchmarks/.

The JSON document (schema ``segdeploy-bench/1``)::

    {"schema", "created", "machine": {...}, "settings": {...}, "flop_convention",
      "models": [{"name", "source", "kind", "arch", "encoder", "image_sizes", "gflop_per_image": {"HxW": g},
                 "gflop_per_image_valid_taps": {"HxW": g},
                 "onnx_files", "export",
                 "sgemm": {"gflops", "library", "n", "threads", "device", "runs", "libraries": [...]},
                 "backends": [{"backend", "precision", "status", "reason"?, "provider", "threads",
                               "session_seconds", "peak_rss_mib", "rss_at_start_mib", "rss_scope",
                               "timed_with": [backends timed in the same interleaved rounds],
                               "results": [{"image_size", "batch_size", "first_run_seconds",
                                            "latency_ms": {"runs", "p50", "p90", "p99", "mean", "min", "max"},
                                            "images_per_second", "gflops_per_second", "sgemm_fraction",
                                            "gflops_per_second_valid_taps", "sgemm_fraction_valid_taps",
                                            "max_abs_diff"?: {"against", "value", "argmax_agreement"}}]}],
                 "ratios": [{"name", "image_size", "batch_size", "value", "same_rounds"}],
                 "int8_accuracy": {"status", ...ParityReport (INT8 on onnxruntime),
                                   "openvino": {"status", ...ParityReport (INT8 on OpenVINO)}},
                 "end_to_end": {"status", "photos", "runtime", "runs": [{"precision", "runtime", "provider",
                                "images_per_second", "model_only_backend", "model_only_images_per_second",
                                "ratio", "onnxruntime_model_only_images_per_second", "ratio_vs_onnxruntime",
                                "stage_ms_per_image", ...}]}}]}

gflop_per_image counts every kernel tap (torch.utils.flop_counter); the valid-taps count leaves out
taps that fall on zero padding, which kernels that skip padding never compute (DeepLabV3's dilated
3x3 convolutions at output stride 8 mostly read padding on small feature maps), so it is the
arithmetic actually needed.
images/s is the batch size over the median latency of the timed runs. A result's sgemm_fraction
is its GFLOP/s over its model's "sgemm" roofline (the faster of torch.mm and onnxruntime's MatMul,
each timed once per round in the same rounds as the model runs).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from segtrain.common.files import atomic_write_bytes, atomic_write_text

RATIOS = (("ort-fp32", "torch"), ("ort-int8", "ort-fp32"), ("ort-fp16", "ort-fp32"), ("ov-fp32", "ort-fp32"),
          ("ov-int8", "ort-int8"), ("ov-int8", "ort-fp32"))


def size_key(size: list[int] | tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def ok_backends(model: dict) -> dict[str, dict]:
    return {e["backend"]: e for e in model["backends"] if e["status"] == "ok"}


def add_derived(doc: dict) -> None:
    """Fill GFLOP/s and SGEMM fraction per result, and the speed ratios, in place."""
    for model in doc["models"]:
        roofline = model["sgemm"]["gflops"]
        for entry in ok_backends(model).values():
            for row in entry["results"]:
                for suffix, counts in (("", model.get("gflop_per_image")),
                                       ("_valid_taps", model.get("gflop_per_image_valid_taps"))):
                    g = (counts or {}).get(size_key(row["image_size"]))
                    rate = g * row["images_per_second"] if g else None
                    row["gflops_per_second" + suffix] = rate
                    row["sgemm_fraction" + suffix] = rate / roofline if rate and roofline else None
        model["ratios"] = ratios(model)


def ratios(model: dict) -> list[dict]:
    """images/s of one backend over another's, at each (size, batch) both measured."""
    ok, out = ok_backends(model), []
    for num, den in RATIOS:
        if num not in ok or den not in ok:
            continue
        base = {(tuple(r["image_size"]), r["batch_size"]): r["images_per_second"] for r in ok[den]["results"]}
        same_rounds = den in ok[num].get("timed_with", [])
        for row in ok[num]["results"]:
            key = (tuple(row["image_size"]), row["batch_size"])
            if key in base:
                out.append({"name": f"{num} / {den}", "image_size": row["image_size"], "batch_size": row["batch_size"],
                            "value": row["images_per_second"] / base[key], "same_rounds": same_rounds})
    return out


# --------------------------------------------------------------------------------------------
# Text


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def machine_line(doc: dict) -> str:
    m, s = doc["machine"], doc["settings"]
    return (f"{m['cpu']} ({m['usable_cores']} usable cores; {' '.join(m['isa']) or 'no AVX'}), {m['memory_gib']} GiB; "
            f"onnxruntime {m['onnxruntime']}, torch {m.get('torch')}; {s['threads']} threads for every backend")


ROW_HEADER = (f"  {'backend':<9} {'size':>9} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'mean ms':>9} "
              f"{'img/s':>8} {'GFLOP/s':>8} {'%SGEMM':>6} {'%valid':>6} {'first s':>8} {'max|diff|':>9}")


def pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def _row(backend: str, r: dict) -> str:
    lat, diff = r["latency_ms"], r.get("max_abs_diff")
    frac, valid = pct(r.get("sgemm_fraction")), pct(r.get("sgemm_fraction_valid_taps"))
    return (f"  {backend:<9} {size_key(r['image_size']):>9} {r['batch_size']:>5} {lat['p50']:>9.1f} {lat['p90']:>9.1f} "
            f"{lat['p99']:>9.1f} {lat['mean']:>9.1f} {r['images_per_second']:>8.2f} "
            f"{fmt(r['gflops_per_second'], '.1f'):>8} {fmt(frac, '.0f'):>6} {fmt(valid, '.0f'):>6} "
            f"{r['first_run_seconds']:>8.2f} "
            f"{fmt(diff['value'] if diff else None, '.2e'):>9}")


def rounds_line(model: dict) -> str:
    g = model["sgemm"]
    libs = ", ".join(f"{r['library']} {r['gflops']:.1f}" for r in g["libraries"])
    groups = []
    for entry in ok_backends(model).values():
        if entry["timed_with"] not in groups:
            groups.append(entry["timed_with"])
    together = "; ".join(" + ".join(group) for group in groups)
    return (f"timed in interleaved rounds (each backend once per round, rotating order): {together}; "
            f"SGEMM {g['n']}^3 float32 on {g['device']} in the same rounds, median GFLOP/s: {libs} "
            f"(roofline: {g['library']})")


def flops_text(model: dict) -> str:
    gflop, valid = model.get("gflop_per_image"), model.get("gflop_per_image_valid_taps") or {}
    if not gflop:
        return "FLOPs not counted"
    return ", ".join(f"{g:.1f} GFLOP/image at {k} ({valid.get(k, float('nan')):.1f} on valid taps)"
                     for k, g in gflop.items())


def model_lines(model: dict) -> list[str]:
    flops = flops_text(model)
    lines = [f"{model['name']} ({model['arch']}/{model['encoder']}, {model['kind']} {model['source']}); {flops}; "
             f"input: {model['input']}", f"  {rounds_line(model)}", ROW_HEADER]
    for entry in model["backends"]:
        if entry["status"] != "ok":
            lines.append(f"  {entry['backend']:<9} skipped: {entry['reason']}")
            continue
        lines += [_row(entry["backend"], r) for r in entry["results"]]
    for entry in ok_backends(model).values():
        lines.append(f"  {entry['backend']:<9} {entry['provider']}: session {entry['session_seconds']:.2f} s, "
                     f"peak RSS {entry['peak_rss_mib']:.0f} MiB ({rss_growth(entry)} over the "
                     f"{entry['rss_at_start_mib']:.0f} MiB at its start"
                     f"{'' if entry['rss_scope'] == 'phase' else '; process lifetime peak'})")
    for r in model["ratios"]:
        lines.append(f"  {r['name']} at {size_key(r['image_size'])} batch {r['batch_size']}: {r['value']:.2f}x"
                     f"{'' if r['same_rounds'] else ' (timed in separate rounds)'}")
    lines += accuracy_lines(model.get("int8_accuracy") or {}) + e2e_lines(model.get("end_to_end") or {})
    return lines


def rss_growth(entry: dict) -> str:
    return f"{entry['peak_rss_mib'] - entry['rss_at_start_mib']:+.0f} MiB"


def accuracy_lines(acc: dict, title: str = "INT8 accuracy") -> list[str]:
    """The INT8 model's mIoU against FP32 (onnxruntime), then the same INT8 file on OpenVINO."""
    if acc.get("status") != "ok":
        return [f"  {title}: skipped ({acc.get('reason', 'not run')})"] if acc else []
    r = acc["results"][0]
    ref, new = r["miou_reference"], r["miou_candidate"]
    if ref is None or new is None:
        lines = [f"  {title} on {r['images']} images: mIoU undefined; agreement {100 * r['agreement']:.2f}%"]
    else:
        lines = [f"  {title} on {r['images']} images of {acc['data']}: mIoU FP32 {100 * ref:.2f}%, "
                 f"INT8 {100 * new:.2f}% ({100 * (new - ref):+.2f} points), arg-max agreement "
                 f"{100 * r['agreement']:.2f}%"]
    return lines + accuracy_lines(acc.get("openvino") or {}, "INT8 accuracy on OpenVINO")


def e2e_lines(e2e: dict) -> list[str]:
    if e2e.get("status") != "ok":
        return [f"  end-to-end: skipped ({e2e.get('reason', 'not run')})"] if e2e else []
    lines = []
    for run in e2e["runs"]:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in run["stage_ms_per_image"].items())
        ort = run["onnxruntime_model_only_images_per_second"]
        vs_ort = "" if run["model_only_backend"].startswith("ort-") else \
            f", {run['ratio_vs_onnxruntime']:.2f}x onnxruntime's model-only {ort:.2f}"
        lines.append(f"  end-to-end `segdeploy batch --runtime {e2e['runtime']}` ({run['provider']}) with the "
                     f"{run['precision'].upper()} model on {run['images']} photos ({e2e['photos']}), batch "
                     f"{run['batch_size']}, {run['threads']} threads, {run['workers']} decode/write workers: "
                     f"{run['images_per_second']:.2f} images/s vs model-only {run['model_only_images_per_second']:.2f} "
                     f"({run['model_only_backend']}) = {run['ratio']:.2f}x{vs_ort} (per image, ms summed over "
                     f"threads: {stages})")
    return lines


def format_report(doc: dict) -> str:
    lines = [machine_line(doc), f"FLOPs: {doc['flop_convention']}"]
    for model in doc["models"]:
        lines += [""] + model_lines(model)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Files


def write_json(doc: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def plot(doc: dict, path: Path) -> None:
    """Latency per batch (p50, bars to p90) and images/s against batch size: a row per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = doc["models"]
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
    for (lat_ax, ips_ax), model in zip(axes, models, strict=True):
        for entry in ok_backends(model).values():
            for size in model["image_sizes"]:
                rows = sorted((r for r in entry["results"] if r["image_size"] == size), key=lambda r: r["batch_size"])
                if not rows:
                    continue
                label = f"{entry['backend']} {size_key(size)}"
                xs = [r["batch_size"] for r in rows]
                p50 = [r["latency_ms"]["p50"] for r in rows]
                up = [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in rows]
                lat_ax.errorbar(xs, p50, yerr=[[0] * len(rows), up], marker="o", capsize=3, label=label)
                ips_ax.plot(xs, [r["images_per_second"] for r in rows], marker="o", label=label)
        lat_ax.set(title=f"{model['name']}: latency per batch (p50, bar to p90)", xlabel="batch size",
                   ylabel="ms")
        ips_ax.set(title=f"{model['name']}: throughput", xlabel="batch size", ylabel="images/s")
        for ax in (lat_ax, ips_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{doc['machine']['cpu']}, {doc['settings']['threads']} threads", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))

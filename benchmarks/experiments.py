"""What was tried where a target is missed: INT8 quantization options, session settings, op
profiles, and DeepLabV3's output stride. Each prints a table and can write JSON (--out).

    python benchmarks/experiments.py int8 FP32.onnx --data DIR        # quantization variants: speed + mIoU,
                                                                        # onnxruntime and OpenVINO
    python benchmarks/experiments.py settings FP32.onnx --checkpoint CKPT  # ORT levels, IOBinding, threads,
                                                                        # PyTorch channels-last
    python benchmarks/experiments.py profile MODEL.onnx|CKPT.pth ...   # kernel time per op type (--runtime
                                                                        # openvino: per layer type and kernel)
    python benchmarks/experiments.py stride CHECKPOINT --data DIR      # DeepLabV3 output stride 8 vs 16
    python benchmarks/experiments.py outputs MODEL.onnx --photos DIR   # CPU ms per image of each batch stage

Speed is images/s at batch 1 (median of --runs timed runs after warm-up) with --threads intra-op
threads; the things compared are timed in the same interleaved rounds, as `segdeploy bench` does.
Accuracy is the FP32-vs-variant comparison of `segdeploy.export.verify.run_parity` on the validation
split at the model's input size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segdeploy.bench.timing import first_and_warmup, time_interleaved  # noqa: E402
from segdeploy.infer.runtime import OnnxModel, OpenVinoModel  # noqa: E402
from segtrain.common.extras import installed  # noqa: E402
from segtrain.common.system import usable_cores  # noqa: E402
from segtrain.contract import ModelSpec, preprocess  # noqa: E402
from segtrain.evaluation import EVALUATE_BATCH_SIZE, open_split_for  # noqa: E402

# name -> quantize_static options; "export" is what `segdeploy export --int8` does.
INT8_VARIANTS: dict[str, dict] = {
    "export (QDQ, per-channel, u8/s8)": {},
    "per-tensor weights": {"per_channel": False},
    "reduce_range": {"reduce_range": True},
    "QOperator format": {"quant_format": "QOperator"},
    "s8 activations (symmetric)": {"activation_type": "QInt8", "extra_options": {"ActivationSymmetric": True}},
    "percentile calibration (99.999)": {"calibrate_method": "Percentile"},
    "entropy calibration": {"calibrate_method": "Entropy"},
    "exclude the classifier head": {"exclude": 1},
    "exclude the last 3 convolutions (ASPP projection, head)": {"exclude": 3},
    "exclude Resize/Concat/GlobalAveragePool": {"op_types": ["Conv", "MatMul", "Add", "Mul", "Relu", "MaxPool"]},
}


def speeds(fns: dict[str, Callable[[], object]], batch: int, args: argparse.Namespace) -> dict[str, float]:
    """images/s of each function (median latency), timed in the same interleaved rounds after warm-up."""
    for fn in fns.values():
        first_and_warmup(fn, args.warmup)
    seconds = time_interleaved(fns, args.runs)
    return {name: batch / float(np.median(s)) for name, s in seconds.items()}


def ort_call(path: Path, x: np.ndarray, threads: int, **options) -> Callable[[], object]:
    model = OnnxModel(path, provider="cpu", threads=threads, **options)
    return lambda: model.run(x)


def ov_call(path: Path, x: np.ndarray, threads: int) -> Callable[[], object]:
    model = OpenVinoModel(path, threads=threads)
    return lambda: model.run(x)


def sample_batch(spec: ModelSpec, data: Path, batch: int) -> np.ndarray:
    from segtrain.data.coco import resolve_split
    from segtrain.data.images import load_image

    folder = resolve_split(data, "validation")[0]
    files = sorted(folder.iterdir())[:batch]
    return preprocess([load_image(f) for f in files], spec)


def head_nodes(fp32: Path, count: int = 1) -> list[str]:
    """The last `count` convolutions in graph order (1: the classifier that turns features into class logits)."""
    import onnx

    model = onnx.load(str(fp32), load_external_data=False)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return [n.name for n in convs[-count:]]


def quantize_variant(fp32: Path, out: Path, spec: ModelSpec, data: Path, images: int, options: dict) -> None:
    """The export's quantization (segdeploy.export.variants.quantize_int8), its settings overridden by `options`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    from segdeploy.export.variants import calibration_batches, quantize_int8

    batches = calibration_batches(open_split_for(spec, data, "train"), spec, images)
    options = dict(options)
    kwargs = {"quant_format": QuantFormat[options.pop("quant_format", "QDQ")],
              "per_channel": options.pop("per_channel", True), "reduce_range": options.pop("reduce_range", False),
              "activation_type": QuantType[options.pop("activation_type", "QUInt8")],
              "calibrate_method": CalibrationMethod[options.pop("calibrate_method", "MinMax")],
              "extra_options": {"CalibTensorRangeSymmetric": False, **options.pop("extra_options", {})}}
    if options.get("exclude"):
        kwargs["nodes_to_exclude"] = head_nodes(fp32, options.pop("exclude"))
    if "op_types" in options:
        kwargs["op_types_to_quantize"] = options.pop("op_types")
    quantize_int8(fp32, out, batches, OnnxModel(fp32, provider="cpu").input_name, **kwargs)


def int8_command(args: argparse.Namespace) -> list[dict]:
    fp32 = OnnxModel(args.model, provider="cpu", threads=args.threads)
    spec = fp32.spec
    x = sample_batch(spec, args.data, 1)
    split = open_split_for(spec, args.data, "validation") if args.images else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-variants-") as out_dir:
        for i, (name, options) in enumerate(INT8_VARIANTS.items()):
            if not args.only or any(o in name for o in args.only):
                rows.append(int8_variant(args, Path(out_dir) / f"v{i}.onnx", name, options, fp32, split, x))
    return rows


def int8_variant(args: argparse.Namespace, path: Path, name: str, options: dict, fp32: OnnxModel, split: object,
                 x: np.ndarray) -> dict:
    """Quantize with `options`; its speed on onnxruntime and OpenVINO against ORT FP32 in the same rounds, and
    its mIoU change under both (skipped with --images 0)."""
    t0 = time.time()
    quantize_variant(args.model, path, fp32.spec, args.data, args.calibration_images, options)
    seconds = time.time() - t0
    fns = {"ort fp32": ort_call(args.model, x, args.threads), "ort int8": ort_call(path, x, args.threads)}
    if installed("openvino"):
        fns["ov int8"] = ov_call(path, x, args.threads)
    rates = speeds(fns, 1, args)
    ips, base = rates["ort int8"], rates["ort fp32"]
    row = {"variant": name, "options": options, "images_per_second": ips, "fp32_images_per_second": base,
           "speedup": ips / base, "quantize_seconds": seconds}
    line = f"{name}: onnxruntime {ips:.2f} images/s ({ips / base:.2f}x FP32)"
    if "ov int8" in rates:
        row.update(ov_images_per_second=rates["ov int8"], ov_speedup=rates["ov int8"] / base,
                   ov_vs_ort_int8=rates["ov int8"] / ips)
        line += f", OpenVINO {rates['ov int8']:.2f} images/s ({rates['ov int8'] / ips:.2f}x onnxruntime INT8)"
    if split is not None:
        runners = {"": OnnxModel(path, provider="cpu", threads=args.threads).run}
        if installed("openvino"):
            runners["ov_"] = OpenVinoModel(path, threads=args.threads).run
        for prefix, run in runners.items():
            r = _parity(fp32, run, split, name, args)
            row.update({f"{prefix}miou_fp32": r.miou_reference, f"{prefix}miou_int8": r.miou_candidate,
                        f"{prefix}miou_change_points": 100 * r.miou_change, f"{prefix}agreement": r.agreement})
            line += (f"; {'OpenVINO' if prefix else 'onnxruntime'} mIoU {100 * r.miou_candidate:.2f}% "
                     f"({100 * r.miou_change:+.2f} points), agreement {100 * r.agreement:.2f}%")
    print(line, flush=True)
    return row


def _parity(fp32: OnnxModel, run: Callable[[np.ndarray], np.ndarray], split: object, name: str,
            args: argparse.Namespace):
    from segdeploy.export.verify import Thresholds, run_parity

    spec = fp32.spec
    report = run_parity(fp32.run, run, split, spec, [tuple(spec.input_size)], EVALUATE_BATCH_SIZE, args.images,
                        Thresholds(), ("fp32", name), "validation")
    return report.results[0]


def profile_command(args: argparse.Namespace) -> list[dict]:
    """Share of kernel time per op type at batch 1: onnxruntime's profiler for .onnx, torch.profiler for .pth."""
    rows = []
    for path in args.models:
        if path.suffix == ".pth":
            by_op = _torch_profile(path, args)
        else:
            by_op = _ov_profile(path, args) if args.runtime == "openvino" else _ort_profile(path, args)
        total = sum(by_op.values())
        top = sorted(by_op.items(), key=lambda kv: -kv[1])[:args.top]
        print(f"{path}: kernel time by op type over {args.runs} runs at batch 1, {args.threads} threads"
              f"{' (OpenVINO: layer type [kernel])' if args.runtime == 'openvino' else ''}; "
              f"{total / args.runs / 1e3:.1f} ms per run")
        for op, us in top:
            print(f"  {op:<40} {100 * us / total:5.1f}%")
        rows.append({"model": str(path), "runtime": args.runtime if path.suffix != ".pth" else "pytorch",
                     "ms_per_run": total / args.runs / 1e3, "share": {op: us / total for op, us in top}})
    return rows


def _ov_profile(path: Path, args: argparse.Namespace) -> dict[str, float]:
    """OpenVINO's per-layer counters (PERF_COUNT) summed by "layer type [kernel]" over the timed runs; the
    kernel name says the precision it ran in (e.g. brgconv_avx2_I8 or jit_avx2_FP32)."""
    import openvino as ov

    model = OpenVinoModel(path, threads=args.threads, properties={"PERF_COUNT": True})
    x = _input(model.spec, args)
    request = model.compiled.create_infer_request()
    for _ in range(args.warmup):
        request.infer({0: x})
    by_op: dict[str, float] = defaultdict(float)
    for _ in range(args.runs):
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status == ov.ProfilingInfo.Status.EXECUTED:
                by_op[f"{info.node_type} [{info.exec_type}]"] += info.real_time.total_seconds() * 1e6
    return by_op


def _input(spec: ModelSpec, args: argparse.Namespace) -> np.ndarray:
    return sample_batch(spec, args.data, 1) if args.data else np.zeros((1, 3, *spec.input_size), np.float32)


def _ort_profile(path: Path, args: argparse.Namespace) -> dict[str, float]:
    """Kernel microseconds per op type over the timed runs (the warm-up runs are cut from the trace)."""
    import onnxruntime as ort

    x = _input(OnnxModel(path, provider="cpu").spec, args)
    with tempfile.TemporaryDirectory() as work:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(work) / "prof")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(args.warmup + args.runs):
            session.run(None, {name: x})
        trace = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((ev for ev in trace if ev.get("name") == "model_run"), key=lambda ev: ev["ts"])
    cutoff = runs[args.warmup - 1]["ts"] + runs[args.warmup - 1]["dur"] if args.warmup else 0
    by_op: dict[str, float] = defaultdict(float)
    for ev in trace:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time") and ev["ts"] >= cutoff:
            by_op[ev["args"]["op_name"]] += ev["dur"]
    return by_op


def _torch_profile(path: Path, args: argparse.Namespace) -> dict[str, float]:
    import torch

    from segtrain.models import load_model

    torch.set_num_threads(args.threads)
    model, ckpt = load_model(path)
    spec = ckpt.spec
    x = torch.from_numpy(_input(spec, args))
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(args.runs):
                model(x)
    return {e.key: e.self_cpu_time_total for e in prof.key_averages() if e.self_cpu_time_total > 0}


def stride_command(args: argparse.Namespace) -> list[dict]:
    """The same DeepLabV3 weights at output stride 8 (the registry's) and 16: GFLOP, ORT FP32 speed, mIoU."""
    import torch

    from segdeploy.export.verify import Thresholds, run_parity
    from segtrain.models import load_model

    torch.set_num_threads(args.threads)
    model8, ckpt = load_model(args.checkpoint)
    spec = ckpt.spec
    if spec.arch != "deeplab":
        raise SystemExit(f"{args.checkpoint}: output stride applies to deeplab, not {spec.arch}")
    split = open_split_for(spec, args.data, "validation")
    x = sample_batch(spec, args.data, 1)
    rows, runners = [], {}
    with tempfile.TemporaryDirectory(prefix="stride-") as work:
        for stride in (8, 16):
            rows.append(_at_stride(stride, model8, spec, split, Path(work), runners, args))
        rates = speeds({stride: (lambda r=runner: r.run(x)) for stride, runner in runners.items()}, 1, args)
        for row in rows:
            row["images_per_second"] = rates[row["output_stride"]]
            print(f"OS{row['output_stride']}: {row['gflop']['dense']:.1f} GFLOP/image "
                  f"({row['gflop']['valid_taps']:.1f} on valid taps), {row['images_per_second']:.2f} "
                  f"images/s, mIoU {100 * row['miou']:.2f}% (weights trained at OS8)", flush=True)
        report = run_parity(runners[8].run, runners[16].run, split, spec, [tuple(spec.input_size)],
                            EVALUATE_BATCH_SIZE, args.images, Thresholds(), ("OS8", "OS16"), "validation")
    rows.append({"agreement_os16_vs_os8": report.results[0].agreement})
    return rows


def _at_stride(stride: int, model8: object, spec: ModelSpec, split: object, work: Path, runners: dict,
               args: argparse.Namespace) -> dict:
    """Export the OS8 weights rebuilt at `stride`; its GFLOP and mIoU (its session goes into `runners`)."""
    import segmentation_models_pytorch as smp

    from segdeploy.bench.roofline import count_gflop
    from segdeploy.export.artifact import set_metadata
    from segdeploy.export.trace import to_onnx
    from segtrain.evaluation import evaluate_split

    model = smp.DeepLabV3(encoder_name=spec.encoder, encoder_weights=None, encoder_output_stride=stride,
                          classes=spec.num_classes)
    model.load_state_dict(model8.state_dict())  # same parameters; only strides and dilations differ
    model.eval()
    proto = to_onnx(model, stride)
    set_metadata(proto, spec.to_metadata())
    path = work / f"os{stride}.onnx"
    path.write_bytes(proto.SerializeToString())
    runners[stride] = OnnxModel(path, provider="cpu", threads=args.threads)
    metrics = evaluate_split(runners[stride].run, split, spec, limit=args.images)
    return {"output_stride": stride, "gflop": count_gflop(model, tuple(spec.input_size)), "miou": metrics.miou}


def settings_command(args: argparse.Namespace) -> list[dict]:
    """One model under several session settings, all timed in the same interleaved rounds."""
    from segdeploy.bench.backends import _iobinding_run

    spec = OnnxModel(args.model, provider="cpu").spec
    x = np.repeat(_input(spec, args), args.batch, axis=0)
    fns = {f"onnxruntime graph optimisation {level}": ort_call(args.model, x, args.threads, graph_optimization=level)
           for level in ("disable", "basic", "extended", "all")}
    bound = _iobinding_run(OnnxModel(args.model, provider="cpu", threads=args.threads))
    fns["onnxruntime all + IOBinding"] = lambda: bound(x)
    fns["onnxruntime all, 1 thread"] = ort_call(args.model, x, 1)
    if args.checkpoint:
        fns.update(_torch_calls(args.checkpoint, x, args.threads))
    rows = [{"setting": name, "batch": args.batch, "images_per_second": ips}
            for name, ips in speeds(fns, args.batch, args).items()]
    for row in rows:
        print(f"  {row['setting']:<44} {row['images_per_second']:7.2f} images/s")
    return rows


def _torch_calls(checkpoint: Path, x: np.ndarray, threads: int) -> dict[str, Callable[[], object]]:
    """PyTorch eager: contiguous, channels-last, and contiguous on 1 thread (threads set per call)."""
    import copy

    import torch

    from segtrain.models import load_model

    model, _ = load_model(checkpoint)
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    t = torch.from_numpy(x)

    def call(m: torch.nn.Module, n: int, channels_last: bool) -> Callable[[], object]:
        def run() -> object:
            torch.set_num_threads(n)
            with torch.inference_mode():
                inp = t.contiguous(memory_format=torch.channels_last) if channels_last else t
                return m(inp).numpy()

        return run

    return {"pytorch eager": call(model, threads, False), "pytorch eager channels-last": call(cl_model, threads, True),
            "pytorch eager, 1 thread": call(model, 1, False)}


def outputs_command(args: argparse.Namespace) -> list[dict]:
    """CPU time per image (this thread's, so other processes' load barely counts) of each stage of
    `segdeploy batch` besides the model call: decoding, pre-processing, and making and encoding
    each output. On 2 cores every such millisecond is taken from the model's threads."""
    from segdeploy.infer.batch.outputs import confidence_to_grey, encode_grey, encode_mask, encode_rgb
    from segdeploy.infer.batch.rle import rle_entries
    from segdeploy.infer.batch.sources import find_images
    from segdeploy.infer.predictor import Prediction, Predictor
    from segtrain.data.images import load_image

    predictor = Predictor(args.model, threads=args.threads, tile="off")
    spec = predictor.spec
    photos = [args.photos / rel for rel in find_images(args.photos)][:args.images]
    cpu: dict[str, float] = defaultdict(float)

    def timed(stage: str, fn: Callable[[], object]) -> object:
        t0 = time.thread_time()
        out = fn()
        cpu[stage] += time.thread_time() - t0
        return out

    for path in photos:
        image = timed("decode (load_image)", lambda: load_image(path))  # noqa: B023 (called at once)
        x = timed("preprocess", lambda: preprocess(image, spec))  # noqa: B023
        logits = predictor.model.run(x)[0]
        fresh = [Prediction(image, logits, spec) for _ in range(2)]
        pred = fresh[0]
        timed("mask (resize + arg-max)", lambda: pred.mask)  # noqa: B023
        timed("class shares", lambda: pred.class_shares)  # noqa: B023
        timed("encode mask.png", lambda: encode_mask(pred.mask, spec.palette, {"record": 1}))  # noqa: B023
        over = timed("overlay blend", lambda: pred.overlay(0.5))  # noqa: B023
        timed("encode overlay.jpg", lambda: encode_rgb(over, ".jpg"))  # noqa: B023
        timed("overlay blend with --legend", lambda: pred.overlay(0.5, legend=True))  # noqa: B023
        colour = timed("colorize", lambda: pred.colorized())  # noqa: B023
        timed("encode color.png", lambda: encode_rgb(colour, ".png"))  # noqa: B023
        both = fresh[1]
        timed("mask + confidence", lambda: both.confidence)  # noqa: B023
        timed("encode confidence.png", lambda: encode_grey(confidence_to_grey(both.confidence)))  # noqa: B023
        timed("rle entries", lambda: rle_entries(both.mask, both.class_scores, spec, "x"))  # noqa: B023
    n = max(len(photos), 1)
    rows = [{"stage": stage, "cpu_ms_per_image": 1e3 * seconds / n} for stage, seconds in cpu.items()]
    default = ("decode (load_image)", "preprocess", "mask (resize + arg-max)", "class shares", "encode mask.png",
               "overlay blend", "encode overlay.jpg")
    rows.append({"stage": "default outputs (mask, overlay) in all",
                 "cpu_ms_per_image": sum(r["cpu_ms_per_image"] for r in rows if r["stage"] in default)})
    print(f"CPU ms per image on {len(photos)} photos of {args.photos} ({spec.arch}/{spec.encoder}, "
          f"{spec.input_size[0]} px):")
    for r in rows:
        print(f"  {r['stage']:<40} {r['cpu_ms_per_image']:7.2f}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=usable_cores())
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", type=Path, help="Write the rows as JSON here.")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("int8", help="INT8 quantization variants of an FP32 model.")
    q.add_argument("model", type=Path)
    q.add_argument("--data", type=Path, required=True)
    q.add_argument("--images", type=int, default=52, help="Validation images for the mIoU comparison (0: none).")
    q.add_argument("--calibration-images", type=int, default=32)
    q.add_argument("--only", nargs="+", help="Variants whose name contains one of these.")
    pr = sub.add_parser("profile", help="Kernel time per op type.")
    pr.add_argument("models", type=Path, nargs="+")
    pr.add_argument("--data", type=Path)
    pr.add_argument("--top", type=int, default=8)
    pr.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                    help="Which runtime profiles the .onnx files.")
    s = sub.add_parser("stride", help="DeepLabV3 at output stride 8 vs 16.")
    s.add_argument("checkpoint", type=Path)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--images", type=int, default=52)
    st = sub.add_parser("settings", help="onnxruntime graph levels, IOBinding, threads; PyTorch channels-last.")
    st.add_argument("model", type=Path)
    st.add_argument("--checkpoint", type=Path, help="Also time this checkpoint's eager model.")
    st.add_argument("--data", type=Path)
    st.add_argument("--batch", type=int, default=1)
    o = sub.add_parser("outputs", help="CPU ms per image of decoding, pre-processing and each batch output.")
    o.add_argument("model", type=Path)
    o.add_argument("--photos", type=Path, required=True)
    o.add_argument("--images", type=int, default=100, help="Photos to profile (the first N found).")
    args = p.parse_args()
    commands = {"int8": int8_command, "profile": profile_command, "stride": stride_command,
                "settings": settings_command, "outputs": outputs_command}
    rows = commands[args.command](args)
    if args.out:
        from segtrain.common.files import atomic_write_text

        atomic_write_text(args.out, json.dumps({"command": sys.argv, "threads": args.threads, "rows": rows},
                                               indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

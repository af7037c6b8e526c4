"""`segdeploy bench` end to end: the JSON with positive figures per backend and batch size, the plot, exact FLOP
counts, export reuse, .onnx inputs and usage errors."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_arch import DIVISOR, fixed_size_onnx, make_tiny_checkpoint, tiny_gflop, tiny_registered

from segdeploy.bench.report import BenchReport, ModelReport
from segdeploy.cli import main
from segtrain.common.extras import installed
from segtrain.contract import build_spec

SIZES, BATCHES = ((16, 16), (32, 32)), (1, 2)
OV = ("ov-fp32", "ov-int8") if installed("openvino") else ()  # the dev install has OpenVINO; a bare one skips it
TIMED = ("torch", "ort-fp32", "ort-int8", *OV)


@pytest.fixture(scope="module", autouse=True)
def _tiny() -> None:
    with tiny_registered():
        yield


@pytest.fixture(scope="module")
def photos(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for src in sorted((sample_root / "validation" / "data").iterdir())[:3]:
        shutil.copy(src, folder / src.name)
    return folder


@pytest.fixture(scope="module")
def bench_run(sample_root: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full run: checkpoint -> export (FP32 + INT8) -> every backend at 2 sizes x 2 batch sizes."""
    work = tmp_path_factory.mktemp("bench")
    ckpt = make_tiny_checkpoint(work / "tiny.pth", data=sample_root)
    args = ["bench", str(ckpt), "--runs", "2", "--warmup", "1", "--batch-sizes", "1,2", "--image-size", "16,32",
            "--threads", "1", "--sgemm-size", "256", "--onnx-dir", str(work / "onnx"), "--calibration-images", "2",
            "--accuracy-images", "3", "--photos", str(photos), "--e2e-batch-size", "2",
            "--runtime", "auto,onnxruntime", "--json", str(work / "out" / "bench.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return {"doc": json.loads((work / "out" / "bench.json").read_text()), "output": result.output,
            "work": work, "ckpt": ckpt, "args": args}


def ok(model: dict) -> dict[str, dict]:
    return {e["backend"]: e for e in model["backends"] if e["status"] == "ok"}


def test_bench_json_has_positive_figures_for_every_backend_and_batch(bench_run: dict) -> None:
    doc = bench_run["doc"]
    assert doc["schema"] == "segdeploy-bench/1"
    assert doc["settings"]["threads"] == 1 and doc["settings"]["batch_sizes"] == [1, 2]
    (model,) = doc["models"]
    backends = ok(model)
    assert set(backends) == set(TIMED)
    fp16 = next(e for e in model["backends"] if e["backend"] == "ort-fp16")
    assert fp16["status"] == "skipped" and "GPU provider" in fp16["reason"]
    if OV:
        assert backends["ov-int8"]["provider"] == "OpenVINO CPU" and backends["ov-int8"]["notes"][0].startswith(
            "OpenVINO 20")
    for name, entry in backends.items():
        assert entry["timed_with"] == list(TIMED), name  # tiny: all fit in memory together
        assert entry["threads"] == 1 and entry["session_seconds"] > 0 and entry["peak_rss_mib"] > 0, name
        assert {(tuple(r["image_size"]), r["batch_size"]) for r in entry["results"]} == \
            {(s, b) for s in SIZES for b in BATCHES}, name
        for r in entry["results"]:
            lat = r["latency_ms"]
            assert lat["runs"] == 2 and 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], r
            assert r["first_run_seconds"] > 0
            assert r["images_per_second"] == pytest.approx(r["batch_size"] / (lat["p50"] / 1e3))
            assert r["gflops_per_second"] == pytest.approx(
                model["gflop_per_image"][f"{r['image_size'][0]}x{r['image_size'][1]}"] * r["images_per_second"])
            assert r["sgemm_fraction"] == pytest.approx(r["gflops_per_second"] / model["sgemm"]["gflops"])
            assert r["gflops_per_second_valid_taps"] == pytest.approx(
                model["gflop_per_image_valid_taps"][f"{r['image_size'][0]}x{r['image_size'][1]}"]
                * r["images_per_second"])
    # one SGEMM per library per timed round (2 runs at each of 2 sizes x 2 batch sizes); the faster is the roofline
    sgemm = model["sgemm"]
    assert {r["library"] for r in sgemm["libraries"]} == {"torch.mm", "onnxruntime MatMul"}
    assert all(r["runs"] == 2 * len(SIZES) * len(BATCHES) and r["gflops"] > 0 for r in sgemm["libraries"])
    assert sgemm["gflops"] == max(r["gflops"] for r in sgemm["libraries"]) and sgemm["n"] == 256


def test_bench_compares_backends_on_the_same_input(bench_run: dict) -> None:
    (model,) = bench_run["doc"]["models"]
    backends = ok(model)
    for r in backends["ort-fp32"]["results"]:  # the export is exact: ORT FP32 matches eager PyTorch
        assert r["max_abs_diff"]["against"] == "torch" and r["max_abs_diff"]["value"] < 1e-4
        assert r["max_abs_diff"]["argmax_agreement"] > 0.999
    for r in backends["ort-int8"]["results"]:  # INT8 is close to FP32 but not identical
        assert r["max_abs_diff"]["against"] == "ort-fp32" and 0 < r["max_abs_diff"]["value"] < 0.5
    for r in backends.get("ov-fp32", {}).get("results", []):  # OpenVINO runs the same FP32 file in float32
        assert r["max_abs_diff"]["against"] == "ort-fp32" and r["max_abs_diff"]["value"] < 1e-4
    for r in backends.get("ov-int8", {}).get("results", []):  # ... and the same INT8 file with its own kernels
        assert r["max_abs_diff"]["against"] == "ort-int8" and r["max_abs_diff"]["value"] < 0.5
    names = {(r["name"], tuple(r["image_size"]), r["batch_size"]) for r in model["ratios"]}
    ratio_names = ("ort-fp32 / torch", "ort-int8 / ort-fp32") + (
        ("ov-fp32 / ort-fp32", "ov-int8 / ort-int8", "ov-int8 / ort-fp32") if OV else ())
    assert names == {(n, s, b) for n in ratio_names for s in SIZES for b in BATCHES}
    fp32 = {(tuple(r["image_size"]), r["batch_size"]): r["images_per_second"] for r in backends["ort-fp32"]["results"]}
    torch_ips = {(tuple(r["image_size"]), r["batch_size"]): r["images_per_second"]
                 for r in backends["torch"]["results"]}
    for r in model["ratios"]:
        if r["name"] == "ort-fp32 / torch":
            key = (tuple(r["image_size"]), r["batch_size"])
            assert r["value"] == pytest.approx(fp32[key] / torch_ips[key])


def test_bench_counts_flops_exactly(bench_run: dict) -> None:
    (model,) = bench_run["doc"]["models"]
    spec = build_spec("tiny", "conv", image_size=32)
    assert model["gflop_per_image"] == {f"{h}x{w}": pytest.approx(tiny_gflop(spec, (h, w)), rel=1e-12)
                                        for h, w in SIZES}
    # valid taps: along each axis a padded 3x3 convolution reads 3*H - 2 in-image (position, tap) pairs
    assert model["gflop_per_image_valid_taps"] == {
        f"{h}x{w}": pytest.approx(tiny_gflop(spec, (h, w), valid_taps=True), rel=1e-12) for h, w in SIZES}
    assert "2 FLOPs per multiply-add" in bench_run["doc"]["flop_convention"]


def project_targets(model: ModelReport) -> list:
    """benchmarks/targets.py's verdicts for one bench model (benchmarks/ is scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "targets.py"
    spec = importlib.util.spec_from_file_location("benchmark_targets", path)
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))  # dataclasses look it up
    spec.loader.exec_module(module)
    return module.targets(model)


def test_bench_reports_int8_accuracy_and_end_to_end(bench_run: dict) -> None:
    (model,) = bench_run["doc"]["models"]
    acc = model["int8_accuracy"]
    assert acc["status"] == "ok" and acc["reference"] == "onnx fp32" and acc["candidate"] == "onnx int8"
    (res,) = acc["results"]
    assert res["images"] == 3 and res["size"] == [32, 32] and 0.5 < res["agreement"] <= 1
    assert res["miou_change"] == pytest.approx(res["miou_candidate"] - res["miou_reference"])
    ov = acc["openvino"]
    if OV:  # the same INT8 file on OpenVINO, scored on the same images
        assert ov["status"] == "ok" and ov["candidate"] == "openvino int8" and ov["results"][0]["images"] == 3
        assert ov["results"][0]["miou_reference"] == res["miou_reference"]
    else:
        assert ov["status"] == "skipped" and "OpenVINO is not installed" in ov["reason"]
    e2e = model["end_to_end"]
    assert e2e["status"] == "ok" and e2e["runtime"] == "auto,onnxruntime"  # one run per --runtime and precision
    assert [(run["asked"], run["precision"]) for run in e2e["runs"]] == [
        ("auto", "fp32"), ("auto", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    for run in e2e["runs"]:
        used = run["runtime"]  # with both engines, the faster one for this file, measured (runtime_choice)
        if run["asked"] == "onnxruntime":
            assert used == "onnxruntime" and run["runtime_reason"] == "--runtime onnxruntime"
        else:
            assert run["runtime_reason"].startswith(f"auto: {used} " if OV else "auto: OpenVINO is not installed")
        assert run["images"] == 3 and run["failed"] == 0 and run["batch_size"] == 2
        assert run["images_per_second"] > 0 and run["model_only_images_per_second"] > 0
        assert run["ratio"] == pytest.approx(run["images_per_second"] / run["model_only_images_per_second"])
        assert run["ratio_vs_onnxruntime"] == pytest.approx(
            run["images_per_second"] / run["onnxruntime_model_only_images_per_second"])
        assert set(run["stage_ms_per_image"]) == {"decode", "infer", "write"} and run["outputs"] == ["mask", "overlay"]
        stages = run["stage_ms_per_image"]  # records keep ms: a tiny model's inference may round to 0
        assert stages["decode"] > 0 and stages["write"] > 0 and stages["infer"] >= 0
        backend = {"openvino": "ov-", "onnxruntime": "ort-"}[used] + run["precision"]
        timed = next(r for r in ok(model)[backend]["results"] if r["image_size"] == [32, 32] and r["batch_size"] == 2)
        assert run["model_only_backend"] == backend
        assert run["model_only_images_per_second"] == timed["images_per_second"]  # same size, batch and threads
    assert "targets" not in model and "target" not in bench_run["output"]  # measurements, not this project's bars
    suite_targets = project_targets(BenchReport.from_dict(bench_run["doc"]).models[0])  # benchmarks/targets.py's
    assert {"onnxruntime", "INT8", "end-to-end"} <= {t.target.split(" ")[0] for t in suite_targets}
    e2e_targets = [t.target for t in suite_targets if t.target.startswith("end-to-end")]  # one per run, named
    assert len(e2e_targets) == 4 and sum("--runtime onnxruntime: ort-" in t for t in e2e_targets) == 2
    assert all(isinstance(t.met, bool) for t in suite_targets)


def test_bench_writes_plot_and_table(bench_run: dict) -> None:
    plot = bench_run["work"] / "out" / "bench.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(plot) as im:
        assert im.size[0] > 500 and im.size[1] > 300
    out = bench_run["output"]
    assert "p50 ms" in out and "ort-int8 / ort-fp32 at 32x32 batch 1" in out and f"wrote {plot}" in out
    assert not list(plot.parent.glob(".*.tmp"))


def test_bench_reuses_exports_and_benches_onnx_files(bench_run: dict) -> None:
    work = bench_run["work"]
    onnx = work / "onnx" / "tiny.onnx"
    before = {p.name: p.stat().st_mtime_ns for p in (work / "onnx").glob("*.onnx")}
    assert set(before) == {"tiny.onnx", "tiny.int8.onnx"}
    runner = CliRunner()
    again = runner.invoke(main, ["bench", str(bench_run["ckpt"]), "--runs", "1", "--warmup", "1",
                                 "--batch-sizes", "1", "--threads", "1", "--sgemm-size", "256",
                                 "--onnx-dir", str(work / "onnx"), "--no-accuracy", "--schedule", "sequential",
                                 "--json", str(work / "again.json")])
    assert again.exit_code == 0, again.output
    assert "reusing" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in (work / "onnx").glob("*.onnx")} == before
    again_model = json.loads((work / "again.json").read_text())["models"][0]
    assert again_model["export"]["reused"] is True
    assert [e["timed_with"] for e in ok(again_model).values()] == [[b] for b in TIMED]
    assert {r["same_rounds"] for r in again_model["ratios"]} == {False}
    assert "(timed in separate rounds)" in again.output

    direct = runner.invoke(main, ["bench", str(onnx), "--runs", "2", "--warmup", "1", "--batch-sizes", "2",
                                  "--threads", "1", "--sgemm-size", "256", "--json", str(work / "onnx.json")])
    assert direct.exit_code == 0, direct.output
    (model,) = json.loads((work / "onnx.json").read_text())["models"]
    statuses = {e["backend"]: e["status"] for e in model["backends"]}
    assert statuses == {"torch": "skipped", "ort-fp32": "ok", "ort-int8": "ok", "ort-fp16": "skipped",
                        "ov-fp32": "ok" if OV else "skipped", "ov-int8": "ok" if OV else "skipped"}
    assert model["kind"] == "onnx" and model["image_sizes"] == [[32, 32]]  # the size in the model's metadata
    assert model["gflop_per_image"]["32x32"] == pytest.approx(tiny_gflop(build_spec("tiny", "c", image_size=32),
                                                                          (32, 32)))


def test_bench_skips_backends_it_has_no_memory_for_and_keeps_the_rest(bench_run: dict,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend that would not fit is skipped with the reason; the figures measured before it are written (the
    kernel's OOM killer would take them all: a SegNet-512 suite run was lost that way)."""
    import segdeploy.bench.run as bench_run_module

    monkeypatch.setattr(bench_run_module, "available_mib", lambda: 0.0)
    onnx, out = bench_run["work"] / "onnx" / "tiny.onnx", bench_run["work"] / "short.json"
    result = CliRunner().invoke(main, ["bench", str(onnx), "--runs", "1", "--warmup", "1", "--batch-sizes", "1",
                                       "--threads", "1", "--sgemm-size", "64", "--backends", "ort-fp32,ort-int8",
                                       "--no-accuracy", "--json", str(out)])
    assert result.exit_code == 0, result.output
    backends = {e["backend"]: e for e in json.loads(out.read_text())["models"][0]["backends"]}
    assert backends["ort-fp32"]["status"] == "ok" and backends["ort-fp32"]["results"]
    assert backends["ort-int8"]["status"] == "skipped"
    assert backends["ort-int8"]["reason"].startswith("not enough memory: 0 MiB available")
    assert "ort-int8: skipped (not enough memory" in result.output


# --------------------------------------------------------------------------------------------
# Usage errors: exit 2, one line, nothing written


@pytest.mark.parametrize("extra, message", [
    (["--batch-sizes", "0"], "positive integer"),
    (["--batch-sizes", "1,x"], "not a comma-separated list of integers"),
    (["--backends", "torch,tpu"], "unknown tpu"),
    (["--image-size", "30"], f"not a multiple of {DIVISOR}"),
    (["--runs", "0"], "0 is not in the range x>=1"),
    (["--provider", "npu"], "'npu' is not one of"),
])
def test_bench_bad_arguments_are_usage_errors(tmp_path: Path, sample_root: Path, extra: list[str],
                                              message: str) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pth", data=sample_root)
    result = CliRunner().invoke(main, ["bench", str(ckpt), *extra, "--json", str(tmp_path / "out.json")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.json").exists()


def test_bench_bad_inputs_are_usage_errors(tmp_path: Path, sample_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    no_data = make_tiny_checkpoint(tmp_path / "nodata.pth", data=None)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    (tmp_path / "a-file").write_text("")
    cases = [
        ([str(tmp_path / "missing.pth")], "missing.pth: checkpoint not found"),
        ([str(tmp_path / "bad.onnx")], "bad.onnx: not a readable ONNX model"),
        ([str(no_data)], "INT8 calibration needs real images"),
        ([str(no_data), "--data", str(tmp_path / "nowhere")], "nowhere: dataset folder not found"),
        ([str(no_data), "--backends", "torch,ort-fp32", "--photos", str(tmp_path / "empty")], "no images found"),
        ([str(no_data), "--data", str(tmp_path / "empty")], "validation"),
        ([str(no_data), "--plot", str(tmp_path / "a-file" / "plot.png")], "plot.png: cannot write results there"),
    ]
    for args, message in cases:
        result = runner.invoke(main, ["bench", *args, "--json", str(tmp_path / "out.json")])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert not (tmp_path / "out.json").exists()
    monkeypatch.chdir(tmp_path / "empty")
    result = runner.invoke(main, ["bench"])
    assert result.exit_code == 2 and "no MODEL given" in result.output


def test_bench_results_never_replace_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """--json and --plot are renamed into place: a symlink or a FIFO there would be replaced itself (a folder is
    refused by the option's type)."""
    (tmp_path / "target.json").write_text("keep")
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")
    os.mkfifo(tmp_path / "fifo.json")
    model = tmp_path / "missing.onnx"  # the destinations are checked first, before any work
    for option, name, kind in (("--json", "link.json", "a symlink"), ("--json", "fifo.json", "a FIFO"),
                               ("--plot", "link.json", "a symlink"), ("--plot", "fifo.json", "a FIFO")):
        result = CliRunner().invoke(main, ["bench", str(model), option, str(tmp_path / name)])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            f"Error: {tmp_path / name}: not a regular file ({kind}); results go to a new or a regular file"]
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "target.json").read_text() == "keep"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo.json").st_mode)


def test_bench_backend_failure_is_one_line_exit_1(tmp_path: Path) -> None:
    model = fixed_size_onnx(tmp_path / "fixed.onnx", size=32)
    result = CliRunner().invoke(main, ["bench", str(model), "--image-size", "16", "--runs", "1", "--warmup", "1",
                                       "--batch-sizes", "1", "--sgemm-size", "64", "--json", str(tmp_path / "o.json")])
    assert result.exit_code == 1, result.output
    assert f"{model}: ort-fp32 failed (" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.json").exists()


@pytest.mark.skipif(not OV, reason="the openvino extra is not installed")
def test_bench_reports_what_auto_chooses_beside_the_rounds(bench_run: dict) -> None:
    """--runtime auto's own measurement per precision and batch size, held against both engines' round figures."""
    (model,) = bench_run["doc"]["models"]
    size = model["spec_input_size"]
    choices = model["auto_choices"]
    assert [(c["precision"], c["batch_size"]) for c in choices] == [("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2)]
    timed = ok(model)
    for c in choices:
        rounds = {runtime: next(r["images_per_second"] for r in timed[f"{prefix}-{c['precision']}"]["results"]
                                if r["image_size"] == size and r["batch_size"] == c["batch_size"])
                  for runtime, prefix in (("onnxruntime", "ort"), ("openvino", "ov"))}
        assert c["rounds_images_per_second"] == rounds and c["image_size"] == size
        assert c["share_of_faster"] == pytest.approx(rounds[c["chosen"]] / max(rounds.values()))
        assert c["reason"].startswith(f"auto: {c['chosen']} ")
        assert f"(batch {c['batch_size']}, 1 threads; measured in" in c["reason"]
        assert (f"--runtime auto for {c['precision'].upper()} at {size[1]}x{size[0]} batch {c['batch_size']}: "
                f"{c['chosen']}; bench rounds") in bench_run["output"]
    suite_targets = project_targets(BenchReport.from_dict(bench_run["doc"]).models[0])
    shares = [t.measured for t in suite_targets if t.target.startswith("--runtime auto's engine")]
    assert shares == [c["share_of_faster"] for c in choices]

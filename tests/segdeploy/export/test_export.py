"""ONNX export: parity with PyTorch, metadata, failed verification, INT8/FP16, evaluate, bad input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from segdeploy.cli import main as segdeploy
from segdeploy.export.exporter import ExportConfig, export_checkpoint
from segdeploy.infer.runtime import OnnxModel
from segtrain.cli import main as segtrain
from segtrain.common.files import NEW_FILE_MODE, file_sha256
from segtrain.contract import ModelSpec, default_palette, preprocess
from segtrain.evaluation import open_split_for
from segtrain.models import load_model
from segtrain.training.checkpoint import Checkpoint

REPO = Path(__file__).resolve().parents[3]


def export_small(make_checkpoint, tmp: Path, arch: str, encoder: str, data: Path, **kwargs) -> tuple[Path, Path]:
    """(checkpoint, exported .onnx) for a 64 px model, verified on 4 validation images."""
    ckpt = make_checkpoint(tmp / "runs" / arch / "best_model.pth", arch, encoder, 64, data, **kwargs)
    export_checkpoint(ckpt, ExportConfig(out=tmp / "exported", verify_images=4), echo=lambda _: None)
    return ckpt, tmp / "exported" / f"{arch}.onnx"


def assert_parity(ckpt: Path, onnx_path: Path, data: Path, sizes: list[tuple[int, int]], batch: int = 3) -> None:
    """ORT vs PyTorch on real images at a batch size and sizes unlike the export trace (batch 4)."""
    model, loaded = load_model(ckpt)
    spec = loaded.spec
    session = OnnxModel(onnx_path, provider="cpu")
    split = open_split_for(spec, data, "validation")
    images = [split.load_image(i) for i in range(batch)]
    for size in sizes:
        x = preprocess(images, replace(spec, input_size=size))
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(x)
        assert got.shape == (batch, spec.num_classes, *size)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9999


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, coco_mini: Path,
             make_checkpoint) -> dict[str, tuple[Path, Path]]:
    """Both architectures exported once (DeepLabV3 with ResNet-18; SegNet's VGG16-BN is the real one)."""
    tmp = tmp_path_factory.mktemp("export")
    return {arch: export_small(make_checkpoint, tmp, arch, encoder, coco_mini) for arch, encoder in
            (("deeplab", "resnet18"), ("segnet", "vgg16_bn"))}


@pytest.mark.slow
@pytest.mark.parametrize("arch,sizes", [("deeplab", [(40, 56), (72, 48)]), ("segnet", [(96, 64), (128, 128)])])
def test_export_matches_pytorch(exported: dict, coco_mini: Path, arch: str, sizes: list) -> None:
    ckpt, path = exported[arch]
    assert_parity(ckpt, path, coco_mini, sizes)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (model.graph.input[0], model.graph.output[0])]
    assert dims == [["batch", 3, "height", "width"], ["batch", 5, "height", "width"]]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(p.name for p in path.parent.glob(f"{arch}*")) == [f"{arch}.onnx", f"{arch}.verify.json"]

    report = json.loads(path.with_suffix(".verify.json").read_text())
    assert report["passed"] is True and report["failures"] == []
    sizes_checked = [tuple(r["size"]) for r in report["results"]]
    assert sizes_checked == [(64, 64), (32, 64) if arch == "segnet" else (48, 64)]
    for r in report["results"]:
        assert r["images"] == 4 and r["batch_size"] == 2
        assert r["max_abs_diff"] <= 1e-4 and r["agreement"] >= 0.9999
        assert abs(r["miou_reference"] - r["miou_candidate"]) < 1e-3


@pytest.mark.slow
def test_info_shows_the_checkpoint_spec(exported: dict) -> None:
    ckpt_path, path = exported["deeplab"]
    ckpt = Checkpoint.load(ckpt_path)
    result = CliRunner().invoke(segdeploy, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert ModelSpec.from_dict(info["spec"]) == ckpt.spec
    assert info["spec"] == json.loads(json.dumps(ckpt.spec.to_dict()))
    assert info["provenance"]["checkpoint_sha256"] == file_sha256(ckpt_path)
    assert info["provenance"]["epoch"] == ckpt.epoch == 3
    assert info["provenance"]["val_miou"] == ckpt.miou == 0.25
    assert info["provenance"]["precision"] == "fp32"
    assert info["opset"] == {"ai.onnx": 20}
    assert info["inputs"] == [{"name": "input", "type": "float32", "shape": ["batch", 3, "height", "width"]}]

    text = CliRunner().invoke(segdeploy, ["info", str(path)]).output
    assert "deeplab / resnet18, fp32" in text and "input size   64x64" in text
    assert f"3  sports ball  (37)  {default_palette(5)[3]}" in text and "validation mIoU 25.00%" in text


@pytest.mark.slow
def test_perturbed_onnx_weights_fail_verification(tmp_path: Path, coco_mini: Path, make_checkpoint,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import segdeploy.export.exporter as export

    real = export.to_onnx

    def perturbed(*args, **kwargs):
        proto = real(*args, **kwargs)
        weight = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
        array = onnx.numpy_helper.to_array(weight) * np.float32(1.01)
        weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
        return proto

    monkeypatch.setattr(export, "to_onnx", perturbed)
    ckpt = make_checkpoint(tmp_path / "runs" / "deeplab" / "best_model.pth", "deeplab", "resnet18", 64, coco_mini)
    out = tmp_path / "exported"
    result = CliRunner().invoke(segdeploy, ["export", str(ckpt), "--out", str(out), "--verify-images", "2"])
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "failed verification, no model written" in error[0]
    assert "max |logit diff|" in error[0] and "> 0.0001" in error[0]
    assert sorted(p.name for p in out.iterdir()) == ["deeplab.failed.verify.json"]
    assert json.loads((out / "deeplab.failed.verify.json").read_text())["passed"] is False


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, coco_mini: Path, make_checkpoint) -> Path:
    """A DeepLabV3 (ResNet-18, 64 px) trained a few steps on coco-mini, exported with INT8 and FP16."""
    tmp = tmp_path_factory.mktemp("trained")
    ckpt = make_checkpoint(tmp / "runs" / "deeplab" / "best_model.pth", "deeplab", "resnet18", 64, coco_mini,
                           steps=4)
    result = CliRunner().invoke(segdeploy, ["export", str(ckpt), "--out", str(tmp / "exported"), "--int8",
                                            "--fp16", "--verify-images", "4", "--calibration-images", "4",
                                            "--int8-images", "4", "--int8-min-agreement", "0",
                                            "--int8-max-drop", "100"])
    assert result.exit_code == 0, result.output
    assert "onnx int8 (cpu) vs onnx fp32" in result.output
    return ckpt


@pytest.mark.slow
def test_int8_report_holds_the_miou_change(trained: Path) -> None:
    out = trained.parents[2] / "exported"
    report = json.loads((out / "deeplab.int8.verify.json").read_text())
    assert report["passed"] is True  # the gate is opened by the fixture: test_int8_gate.py tests it
    assert report["thresholds"] == {"max_abs_diff": None, "min_agreement": 0.0, "max_miou_drop": 1.0}
    (r,) = report["results"]
    assert r["size"] == [64, 64] and r["images"] == 4
    assert r["miou_change"] == pytest.approx(r["miou_candidate"] - r["miou_reference"])
    assert 0 <= r["agreement"] <= 1 and r["max_abs_diff"] > 0  # INT8 is not bit-identical to FP32

    model = onnx.load(str(out / "deeplab.int8.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = {t.name: t for t in model.graph.initializer}
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and weights.get(n.input[0]) is not None and weights[n.input[0]].data_type == onnx.TensorProto.INT8
                   and len(weights[n.input[1]].dims) == 1 and weights[n.input[1]].dims[0] > 1]
    assert per_channel, "no per-channel INT8 weights"
    info = json.loads(CliRunner().invoke(segdeploy, ["info", str(out / "deeplab.int8.onnx"), "--json"]).output)
    assert ModelSpec.from_dict(info["spec"]) == Checkpoint.load(trained).spec
    assert info["provenance"]["precision"] == "int8"
    assert info["provenance"]["quantization"]["calibration_images"] == 4


@pytest.mark.slow
def test_fp16_keeps_float32_io(trained: Path) -> None:
    out = trained.parents[2] / "exported"
    model = onnx.load(str(out / "deeplab.fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {t.data_type for t in model.graph.initializer if t.dims and np.prod(t.dims) > 64} == {
        onnx.TensorProto.FLOAT16}
    report = json.loads((out / "deeplab.fp16.verify.json").read_text())
    if report["results"]:  # a provider here ran it: FP16 must agree with FP32 almost everywhere
        assert report["results"][0]["agreement"] > 0.99
    else:
        assert report["notes"][0].startswith("unverified: no provider here runs it")


@pytest.mark.slow
def test_onnx_and_checkpoint_evaluate_alike(trained: Path, coco_mini: Path) -> None:
    onnx_path = trained.parents[2] / "exported" / "deeplab.onnx"
    runner = CliRunner()
    ours = runner.invoke(segdeploy, ["evaluate", str(onnx_path), "--data", str(coco_mini), "--split", "validation",
                                     "--json"])
    theirs = runner.invoke(segtrain, ["evaluate", str(trained), "--data", str(coco_mini), "--split", "validation",
                                      "--json", "--device", "cpu"])
    assert ours.exit_code == 0 and theirs.exit_code == 0, ours.output + theirs.output
    a, b = json.loads(ours.output), json.loads(theirs.output)
    assert a["pixels"] == b["pixels"] > 0
    assert a["miou"] == pytest.approx(b["miou"], abs=1e-3)
    assert a["miou"] > 0.01  # trained a little: not the all-zero case where any two models agree
    table = runner.invoke(segdeploy, ["evaluate", str(onnx_path), "--data", str(coco_mini), "--split", "validation"])
    assert "mIoU" in table.output and "sports ball" in table.output


@pytest.mark.slow
def test_inference_commands_do_not_import_torch(exported: dict, coco_mini: Path) -> None:
    path = exported["segnet"][1]
    code = ("import sys\nfrom segdeploy.cli import main\n"
            f"for args in (['info', {str(path)!r}], ['evaluate', {str(path)!r}, '--data', {str(coco_mini)!r},"
            " '--split', 'validation', '--json']):\n"
            "    main(args, standalone_mode=False)\n"
            "print('TORCH', sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "segnet / vgg16_bn" in run.stdout and '"miou"' in run.stdout
    assert run.stdout.strip().splitlines()[-1] == "TORCH []"


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def _export(args: list[str]) -> tuple[int, list[str]]:
    result = CliRunner().invoke(segdeploy, ["export", *args])
    return result.exit_code, result.output.strip().splitlines()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def test_bad_checkpoints(tmp_path: Path, sample_root: Path, make_checkpoint) -> None:
    out = tmp_path / "out"
    (tmp_path / "junk.pth").write_bytes(b"\x00not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pth")
    torch.save({"format": "segtrain-checkpoint", "version": 1, "model": {}}, tmp_path / "nospec.pth")
    torch.save({"format": "segtrain-checkpoint", "version": 1, "hook": Path("x")}, tmp_path / "evil.pth")
    torch.save({"format": "segtrain-checkpoint", "version": 1, "hook": _RunsCode()}, tmp_path / "system.pth")
    whole = make_checkpoint(tmp_path / "whole.pth", "deeplab", "resnet18", 64).read_bytes()
    (tmp_path / "half.pth").write_bytes(whole[: len(whole) // 2])
    cases = {"missing.pth": "checkpoint not found", "junk.pth": "not a readable checkpoint",
             "plain.pth": "not a segtrain checkpoint", "nospec.pth": "lacks model weights or model spec",
             "evil.pth": "refused, not a plain weights checkpoint (loading it would run code: pathlib.PosixPath)",
             "system.pth": "refused, not a plain weights checkpoint (loading it would run code: posix.system)",
             "half.pth": "not a readable checkpoint (corrupt or truncated"}
    for name, message in cases.items():
        code, lines = _export([str(tmp_path / name), "--out", str(out), "--data", str(sample_root)])
        assert code == 2 and len(lines) == 1, (name, lines)
        assert lines[0].startswith(f"Error: {tmp_path / name}: ") and message in lines[0], lines
    assert not out.exists() or not any(out.iterdir())


def test_unusable_output_folder_and_data(tmp_path: Path, sample_root: Path, make_checkpoint) -> None:
    ckpt = make_checkpoint(tmp_path / "runs" / "segnet" / "best_model.pth", "segnet", "vgg16_bn", 64, None)
    (tmp_path / "afile").write_text("x")
    code, lines = _export([str(ckpt), "--out", str(tmp_path / "afile" / "sub"), "--data", str(sample_root)])
    assert code == 2 and len(lines) == 1 and "cannot write exported models there" in lines[0]
    code, lines = _export([str(ckpt), "--out", str(tmp_path / "out")])
    assert code == 2 and lines == [f"Error: {ckpt}: records no dataset; verification needs --data DIR"]
    code, lines = _export([str(ckpt), "--out", str(tmp_path / "out"), "--data", str(tmp_path / "nodata")])
    assert code == 2 and len(lines) == 1 and "dataset folder not found" in lines[0] and "--data" in lines[0]
    assert not any((tmp_path / "out").iterdir())


def test_no_checkpoints_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, lines = _export([])
    assert code == 2 and lines == ["Error: no CHECKPOINT given and no runs/*/best_model.pth found"]


def test_default_exports_every_run_despite_a_broken_one(tmp_path: Path, sample_root: Path, make_checkpoint,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No argument: each runs/*/best_model.pth -> exported/<run>.onnx, verified on the checkpoint's own data;
    a broken checkpoint is named, the others are still exported, and the exit code says so."""
    monkeypatch.chdir(tmp_path)
    make_checkpoint(Path("runs/deeplab/best_model.pth"), "deeplab", "resnet18", 64, sample_root)
    Path("runs/broken").mkdir()
    Path("runs/broken/best_model.pth").write_bytes(b"truncated")
    Path("runs/deeplab/last.pth").write_bytes(b"ignored: only best_model.pth is exported")
    code, lines = _export(["--verify-images", "2", "--opset", "18"])
    assert code == 2
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: runs/broken/best_model.pth: not a readable checkpoint")
    assert sorted(p.name for p in Path("exported").iterdir()) == ["deeplab.onnx", "deeplab.verify.json"]
    assert json.loads(Path("exported/deeplab.verify.json").read_text())["data"].startswith(str(sample_root))
    assert {o.domain: o.version for o in onnx.load("exported/deeplab.onnx").opset_import}[""] == 18
    for written in Path("exported").iterdir():  # the umask's mode, not the temporary file's 0600
        assert stat.S_IMODE(written.stat().st_mode) == NEW_FILE_MODE, written


@pytest.mark.slow
def test_real_resnet50_deeplab_exports(tmp_path: Path, coco_mini: Path, make_checkpoint) -> None:
    """The full-size DeepLabV3-ResNet-50 graph (dilated, output stride 8) exports and matches PyTorch."""
    ckpt, path = export_small(make_checkpoint, tmp_path, "deeplab", "resnet50", coco_mini)
    assert_parity(ckpt, path, coco_mini, [(96, 64)], batch=2)
    assert json.loads(path.with_suffix(".verify.json").read_text())["passed"] is True


def test_info_and_evaluate_bad_input(tmp_path: Path, sample_root: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff")
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    cases = {"missing.onnx": "file not found", "junk.onnx": "not a readable ONNX model",
             "plain.onnx": "no segtrain model spec in its metadata"}
    for name, message in cases.items():
        for args in (["info", str(tmp_path / name)],
                     ["evaluate", str(tmp_path / name), "--data", str(sample_root), "--split", "test"]):
            result = CliRunner().invoke(segdeploy, args)
            lines = result.output.strip().splitlines()
            assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
            assert lines[0].startswith(f"Error: {tmp_path / name}: ") and message in lines[0]


@pytest.mark.slow
def test_segnet_parity_is_checked_with_matched_pool_routing(exported: dict, coco_mini: Path) -> None:
    """The routing-matched max |diff| exists only for SegNet, and the hook really steers PyTorch's unpooling."""
    from segdeploy.export.routing import RoutedComparer, _take_at, routing_pools

    reports = {arch: json.loads(path.with_suffix(".verify.json").read_text()) for arch, (_, path) in exported.items()}
    assert all(r["matched_max_abs_diff"] is None for r in reports["deeplab"]["results"])
    for r in reports["segnet"]["results"]:
        assert r["matched_max_abs_diff"] <= min(r["max_abs_diff"], 1e-4)
    assert RoutedComparer.create(load_model(exported["deeplab"][0])[0], exported["deeplab"][1]) is None

    ckpt, path = exported["segnet"]
    model, loaded = load_model(ckpt)
    spec = loaded.spec
    split = open_split_for(spec, coco_mini, "validation")
    x = preprocess([split.load_image(0), split.load_image(1)], spec)
    comparer = RoutedComparer.create(model, path)
    comparer(x)
    assert comparer.max_diff < 1e-4
    logits, *indices = comparer.session.run(None, {"input": x})
    assert [i.shape[1] for i in indices] == [64, 128, 256, 512, 512]

    def steered(idx: list[np.ndarray]) -> np.ndarray:
        pools = routing_pools(model)
        handles = [p.register_forward_hook(_take_at(torch.from_numpy(i))) for p, i in zip(pools, idx, strict=True)]
        with torch.no_grad():
            out = model(torch.from_numpy(x)).numpy()
        for h in handles:
            h.remove()
        return out

    np.testing.assert_allclose(steered(indices), logits, rtol=1e-3, atol=1e-5)
    # The neighbouring column in every 2x2 window (widths are even): wrong routing must show.
    assert np.abs(steered([i ^ 1 for i in indices]) - logits).max() > 1e-3

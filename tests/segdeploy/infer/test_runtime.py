"""The runtimes behind open_model: which one --runtime picks, OpenVINO behind the OnnxModel interface, errors."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import build_colour_model, half_image, save

from segdeploy.cli import main
from segdeploy.export.config import ExportConfig
from segdeploy.infer import runtime
from segdeploy.infer.evaluate import evaluate_model
from segdeploy.infer.runtime import OnnxModel, open_model, resolve_runtime
from segtrain.common.errors import InputError
from segtrain.common.extras import MissingExtraError
from segtrain.contract import logits_to_mask, preprocess
from segtrain.evaluation import open_split_for

openvino = pytest.importorskip("openvino", reason="the openvino extra is not installed")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour model plus a slow branch of 3x3 convolutions: real arithmetic, known masks."""
    return build_colour_model(tmp_path_factory.mktemp("runtime") / "colour.onnx", slow_layers=3, slow_width=8)


@pytest.mark.parametrize(("runtime_", "provider", "gpu", "has_openvino", "expected"), [
    ("auto", "auto", False, True, ("openvino", "auto: OpenVINO on the CPU")),
    ("auto", "cpu", False, True, ("openvino", "auto: OpenVINO on the CPU")),
    ("auto", "auto", True, True, ("onnxruntime", "auto: onnxruntime has a GPU provider here")),
    ("auto", "cpu", True, True, ("openvino", "auto: OpenVINO on the CPU")),
    ("auto", "cuda", False, True, ("onnxruntime", "auto: --provider cuda is an onnxruntime provider")),
    ("auto", "auto", False, False, ("onnxruntime", "auto: OpenVINO is not installed")),
    ("onnxruntime", "cpu", False, True, ("onnxruntime", "--runtime onnxruntime")),
    ("openvino", "auto", True, True, ("openvino", "--runtime openvino")),
])
def test_auto_picks_openvino_on_the_cpu_when_installed(runtime_: str, provider: str, gpu: bool, has_openvino: bool,
                                                        expected: tuple[str, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "gpu_provider_available", lambda p: gpu and p in ("auto", "cuda", "tensorrt"))
    monkeypatch.setattr(runtime, "installed", lambda extra: has_openvino)
    assert tuple(resolve_runtime(runtime_, provider)) == expected


@pytest.mark.parametrize(("runtime_", "provider", "message"), [
    ("tflite", "auto", "unknown runtime 'tflite'; choose from auto, onnxruntime, openvino"),
    ("openvino", "cuda", "--runtime openvino runs on the CPU; --provider cuda is an onnxruntime provider"),
])
def test_impossible_runtime_choices_are_input_errors(runtime_: str, provider: str, message: str) -> None:
    with pytest.raises(InputError, match="^" + message.replace("(", r"\(")):
        resolve_runtime(runtime_, provider)


def test_openvino_model_has_the_onnx_model_interface_and_its_outputs(model: Path) -> None:
    ort, ov = OnnxModel(model, provider="cpu", threads=1), open_model(model, runtime="openvino", threads=1)
    assert type(ov).__name__ == "OpenVinoModel" and ov.runtime == "openvino" and ort.runtime == "onnxruntime"
    assert ov.runtime_reason == "--runtime openvino" and ov.providers == ["OpenVINO CPU"]
    assert (ov.spec, ov.provenance, ov.metadata, ov.path) == (ort.spec, ort.provenance, ort.metadata, ort.path)
    assert ov.session_seconds > 0 and ov.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert ov.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32  # never bf16 behind our back
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 32, 32), (3, 3, 40, 24), (2, 3, 32, 32)]:  # dynamic batch, height and width
        x = rng.standard_normal(shape, dtype=np.float32)
        got = ov.run(x)
        assert got.dtype == np.float32 and got.shape == (shape[0], 3, *shape[2:])
        np.testing.assert_allclose(got, ort.run(x), rtol=1e-4, atol=1e-5)


def test_one_openvino_model_serves_several_threads(model: Path) -> None:
    ov = open_model(model, runtime="openvino", threads=1)
    xs = [np.random.default_rng(i).standard_normal((1, 3, 24 + 8 * i, 32), dtype=np.float32) for i in range(4)]
    expected = [ov.run(x) for x in xs]
    got: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        got[i] = [ov.run(xs[i]) for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        for out in got[i]:
            np.testing.assert_array_equal(out, expected[i])


@pytest.mark.parametrize("runtime_", ["onnxruntime", "openvino"])
def test_batch_says_which_runtime_ran(runtime_: str, model: Path, tmp_path: Path,
                                                   sample_root: Path) -> None:
    save(half_image(40, 40, 0), tmp_path / "in" / "a.png")
    res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model",
                                    str(model), "--runtime", runtime_, "--threads", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    provider = {"openvino": "OpenVINO CPU", "onnxruntime": "CPUExecutionProvider"}[runtime_]
    assert summary["runtime"] == {"requested": runtime_, "used": runtime_, "reason": f"--runtime {runtime_}"}
    assert summary["provider"] == provider and f"on {provider} [--runtime {runtime_}]" in res.output


def spinning_of(model: OnnxModel) -> str:
    """A session's intra-op spinning setting: "0" when turned off, "default" when left to onnxruntime (spinning)."""
    try:
        return model.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set
        return "default"


@pytest.mark.parametrize("runtime_", ["onnxruntime", "auto"])
def test_batch_opens_onnxruntime_without_spinning_threads(runtime_: str, model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch pipeline's decode and write threads share the cores with the model (runtime.SPINNING_NOTE): its
    sessions, and those auto measures, let their threads sleep; a model opened for one call at a time spins."""
    monkeypatch.setenv("SEGTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    opened: list[OnnxModel] = []
    real_init = OnnxModel.__init__

    def spy(self: OnnxModel, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(OnnxModel, "__init__", spy)
    save(half_image(40, 40, 0), tmp_path / "in" / "a.png")
    res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model",
                                    str(model), "--runtime", runtime_, "--threads", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert [spinning_of(m) for m in opened] == ["0"]  # auto: the one it measured against OpenVINO
    assert spinning_of(OnnxModel(model, provider="cpu")) == "default"
    assert spinning_of(open_model(model, runtime="onnxruntime", spinning=False)) == "0"


def test_openvino_missing_is_one_line_naming_the_extra(model: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert resolve_runtime("auto").runtime == "onnxruntime"  # auto falls back
    with pytest.raises(MissingExtraError, match=r'^--runtime openvino needs the \'openvino\' extra.*pip install '
                                                r'"segtrain\[openvino\]"$'):
        open_model(model, runtime="openvino")
    save(half_image(8, 8, 0), tmp_path / "in" / "a.png")
    res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model",
                                    str(model), "--runtime", "openvino"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert 'pip install "segtrain[openvino]"' in res.output and not (tmp_path / "out").exists()


def test_bad_model_files_are_one_line_under_openvino(tmp_path: Path, model: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    broken = tmp_path / "broken.onnx"  # a valid spec in the metadata, a graph OpenVINO cannot convert
    import onnx

    proto = onnx.load(str(model))
    proto.graph.node[0].op_type = "NoSuchOp"
    onnx.save(proto, str(broken))
    save(half_image(8, 8, 0), tmp_path / "in" / "a.png")
    for path, message in [(tmp_path / "junk.onnx", "not a readable ONNX model"),
                          (broken, "OpenVINO cannot load it"), (tmp_path / "missing.onnx", "file not found")]:
        res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model",
                                        str(path), "--runtime", "openvino"])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: {message}"), res.output


# ---------------------------------------------------------------------------------------------
# Parity on real photos: coco-mini validation, a small trained model exported as FP32 and INT8


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, coco_mini: Path, make_checkpoint) -> Path:
    """DeepLabV3-ResNet18 at 64 px trained a few steps on coco-mini; FP32 + INT8 (gate open: parity is the point)."""
    from segdeploy.export.exporter import export_checkpoint

    tmp = tmp_path_factory.mktemp("parity")
    ckpt = make_checkpoint(tmp / "runs" / "deeplab" / "best_model.pth", "deeplab", "resnet18", 64, coco_mini, steps=4)
    config = ExportConfig(out=tmp / "exported", verify_images=2, int8=True, calibration_images=8,
                          int8_min_agreement=0, int8_max_drop=100)
    export_checkpoint(ckpt, config, echo=lambda _: None)
    return tmp / "exported" / "deeplab.onnx"


@pytest.mark.slow
def test_openvino_and_onnxruntime_fp32_masks_agree_on_coco_mini(exported: Path, coco_mini: Path) -> None:
    """Masks at each photo's own size, through the contract's pre- and post-processing: >= 99.9% equal pixels."""
    ort, ov = OnnxModel(exported, provider="cpu"), open_model(exported, runtime="openvino")
    split = open_split_for(ort.spec, coco_mini, "validation")
    same = total = 0
    for i in range(len(split)):
        image = split.load_image(i)
        x = preprocess(image, ort.spec)
        a, b = (logits_to_mask(m.run(x)[0], image.shape[:2]) for m in (ort, ov))
        same, total = same + int((a == b).sum()), total + a.size
    assert len(split) == 52 and same / total >= 0.999, f"agreement {same / total:.5f}"


@pytest.mark.slow
def test_int8_miou_under_both_runtimes(exported: Path, coco_mini: Path) -> None:
    """The same INT8 file under onnxruntime and OpenVINO: both mIoUs are reported and close to each other."""
    int8 = exported.with_suffix(".int8.onnx")
    scores = {name: evaluate_model(open_model(path, runtime=name), coco_mini, "validation")[0].miou
              for name, path in (("onnxruntime", int8), ("openvino", int8))}
    fp32 = evaluate_model(open_model(exported, runtime="onnxruntime"), coco_mini, "validation")[0].miou
    print(f"mIoU on coco-mini validation: FP32 {100 * fp32:.2f}%, INT8 onnxruntime {100 * scores['onnxruntime']:.2f}%,"
          f" INT8 OpenVINO {100 * scores['openvino']:.2f}%")
    assert fp32 > 0.01  # trained a little: not the all-background case where any two models agree
    # Two INT8 implementations (rounding, and onnxruntime's u8 x s8 products on CPUs without VNNI) differ a
    # little; here (AVX2, no VNNI) FP32 10.32%, onnxruntime INT8 9.79%, OpenVINO INT8 10.69%.
    assert abs(scores["openvino"] - scores["onnxruntime"]) <= 0.02
    assert all(abs(score - fp32) <= 0.02 for score in scores.values())
    res = CliRunner().invoke(main, ["evaluate", str(int8), "--data", str(coco_mini), "--split", "validation",
                                    "--runtime", "openvino"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"{int8} on validation (OpenVINO CPU, --runtime openvino):")
    assert f"{100 * scores['openvino']:.2f}" in res.output


SIGNAL_STACK_CHECK = """
import ctypes, faulthandler, os, signal, sys
import numpy as np
from segdeploy.infer.openvino_runtime import OpenVinoModel

class Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

def stack():
    s = Stack()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(s))
    return s.ss_sp, s.ss_flags, s.ss_size

faulthandler.enable()  # as pytest does: Python's own signal stack
before = stack()
kept = []
for _ in range(2):  # a model kept and one dropped, as --runtime auto keeps the faster engine's
    model = OpenVinoModel(sys.argv[1])
    model.run(np.zeros((1, 3, *model.spec.input_size), np.float32))
    kept.append(stack() == before)  # checked while the model lives: the plugin's stack dies with it
print("kept" if all(kept) else f"replaced: {before} -> {stack()}")
try:
    os.kill(os.getpid(), signal.SIGINT)
except KeyboardInterrupt:
    print("ctrl-c")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack as Linux has it")
def test_openvino_leaves_the_signal_stack_it_found(tmp_path: Path) -> None:
    """OpenVINO's CPU plugin swaps in a signal stack of its own; left there, a later signal (Ctrl-C, a child's exit)
    killed the process with SIGSEGV once the plugin freed it. A fresh process: nothing swapped it before."""
    import subprocess

    from colour_models import subprocess_env

    model = build_colour_model(tmp_path / "m.onnx")
    run = subprocess.run([sys.executable, "-c", SIGNAL_STACK_CHECK, str(model)], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["kept", "ctrl-c"], run.stdout


def test_openvino_pins_threads_only_when_it_has_every_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With fewer threads than cores, other processes share the machine (Ray actors, --shard workers): OpenVINO
    would pin each one to the same first cores."""
    from segdeploy.infer import openvino_runtime

    path = build_colour_model(tmp_path / "m.onnx")
    monkeypatch.setattr(openvino_runtime, "usable_cores", lambda: 4)
    shared = openvino_runtime.OpenVinoModel(path, threads=1)
    assert shared.compiled.get_property("ENABLE_CPU_PINNING") is False
    own = openvino_runtime.OpenVinoModel(path, threads=4)
    default = openvino_runtime.OpenVinoModel(path)
    ov_default = openvino.Core().get_property("CPU", "ENABLE_CPU_PINNING")
    assert own.compiled.get_property("ENABLE_CPU_PINNING") == default.compiled.get_property("ENABLE_CPU_PINNING") \
        == ov_default  # OpenVINO's own default where the process has the machine

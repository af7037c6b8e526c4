"""`segdeploy export --int8`: the INT8 model is written only when it holds up against FP32 (the INT8 gate)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import helper
from tiny_arch import make_tiny_checkpoint, tiny_registered

from segdeploy.cli import main
from segdeploy.export import variants
from segdeploy.export.config import ExportConfig
from segdeploy.export.verify import ParityReport, SizeResult, Thresholds

OPEN_GATE = ["--int8-min-agreement", "0", "--int8-max-drop", "100"]


@pytest.fixture(scope="module", autouse=True)
def _tiny() -> None:
    with tiny_registered():
        yield


@pytest.fixture(scope="module")
def ckpt(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("gate") / "runs" / "tiny" / "best_model.pth", sample_root)


def export(ckpt: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["export", str(ckpt), "--out", str(out), "--int8", "--calibration-images", "2",
                                       "--verify-images", "2", "--int8-images", "3", *extra])
    return result.exit_code, result.output


def negate_int8_logits(real):
    """quantize_int8 whose model ends in Neg: its arg-max is FP32's arg-min, so agreement collapses."""
    def quantize(fp32: Path, out: Path, batches, input_name: str, **overrides) -> int:
        used = real(fp32, out, batches, input_name, **overrides)
        model = onnx.load(str(out))
        name = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [f"{name}_pre" if o == name else o for o in node.output]
        model.graph.node.append(helper.make_node("Neg", [f"{name}_pre"], [name]))
        onnx.save(model, str(out))
        return used

    return quantize


def test_defaults_live_in_export_config_and_the_help_shows_them() -> None:
    assert ExportConfig().int8_gate == Thresholds(None, 0.99, 0.01)
    result = CliRunner().invoke(main, ["export", "--help"], terminal_width=200)
    flat = " ".join(result.output.split())
    assert "--int8-max-drop FLOAT RANGE INT8 gate: largest allowed mIoU drop against FP32, in points. [default: 1.0" \
        in flat
    assert "[default: 99.0" in flat.split("--int8-min-agreement", 1)[1]


def test_int8_that_passes_the_gate_is_written_with_its_verdict(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    code, output = export(ckpt, out, *OPEN_GATE)
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["tiny.int8.onnx", "tiny.int8.verify.json", "tiny.onnx",
                                                     "tiny.verify.json"]
    report = json.loads((out / "tiny.int8.verify.json").read_text())
    assert report["passed"] is True and report["failures"] == []
    assert report["thresholds"] == {"max_abs_diff": None, "min_agreement": 0.0, "max_miou_drop": 1.0}
    (r,) = report["results"]
    assert r["images"] == 3 and 0 <= r["agreement"] <= 1
    assert "PASSED (agreement >= 0%, mIoU drop <= 100 points)" in output


def test_verification_says_what_its_miou_is_measured_on(ckpt: Path, sample_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", str(ckpt), "--out", str(out), "--verify-images", "2"])
    assert result.exit_code == 0, result.output
    of = len(json.loads((sample_root / "validation" / "labels.json").read_text())["images"])
    scope = (f"mIoU ref/new: the first 2 of {of} validation images, fed at each row's size and scored at the "
             "photos' own sizes; it compares the two models, it is not the model's accuracy")
    training = ("for comparison, the checkpoint's validation mIoU in training: 10.00% (its whole validation split, "
                "scored at the input size 32x32)")
    notes = json.loads((out / "tiny.verify.json").read_text())["notes"]
    assert any(n.startswith(scope) for n in notes) and training in notes
    flat = " ".join(result.output.split())
    assert f"note: {scope}" in flat and f"note: {training}" in flat


def test_int8_below_the_gate_is_not_written_and_the_export_exits_1(ckpt: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "exported"
    code, _ = export(ckpt, out, *OPEN_GATE)
    assert code == 0 and (out / "tiny.int8.onnx").is_file()  # an earlier, passing INT8 export
    monkeypatch.setattr(variants, "quantize_int8", negate_int8_logits(variants.quantize_int8))
    code, output = export(ckpt, out, "--overwrite")  # without it, both files are up to date and kept
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert f"{out / 'tiny.int8.onnx'} not written: INT8 failed the accuracy gate (arg-max agreement" in errors[0]
    assert (f"< 99.0000% at 32x32; report: {out / 'tiny.int8.failed.verify.json'}); "
            f"the FP32 model {out / 'tiny.onnx'} is in place") in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["tiny.int8.failed.verify.json", "tiny.onnx", "tiny.verify.json"]
    report = json.loads((out / "tiny.int8.failed.verify.json").read_text())
    assert report["passed"] is False and report["thresholds"]["min_agreement"] == 0.99
    assert report["results"][0]["agreement"] < 0.5  # measured, and stated, even though refused
    assert "tiny.int8.onnx of an earlier export was removed" in report["notes"]

    monkeypatch.undo()
    code, output = export(ckpt, out, *OPEN_GATE)  # passing again: the failed report goes
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["tiny.int8.onnx", "tiny.int8.verify.json", "tiny.onnx",
                                                     "tiny.verify.json"]


def test_without_verification_the_gate_is_not_applied_and_says_so(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    code, output = export(ckpt, out, "--no-verify")
    assert code == 0, output
    report = json.loads((out / "tiny.int8.verify.json").read_text())
    assert report["passed"] is None and report["results"] == []
    assert report["notes"] == ["unverified: --no-verify",
                               "the INT8 gate was not applied (it needs the validation images)"]


@pytest.mark.parametrize("flag", ["--int8-max-drop", "--int8-min-agreement"])
def test_gate_bars_must_be_numbers(flag: str, ckpt: Path, tmp_path: Path) -> None:
    code, output = export(ckpt, tmp_path / "exported", flag, "nan")
    assert code == 2 and f"Invalid value for '{flag}': 'nan' is not a finite number" in output
    assert not (tmp_path / "exported").exists()


def _result(agreement: float, change: float) -> SizeResult:
    return SizeResult(size=(64, 64), images=4, batch_size=2, max_abs_diff=0.5, mean_abs_diff=0.1,
                      agreement=agreement, miou_reference=0.40, miou_candidate=0.40 + change)


@pytest.mark.parametrize(("agreement", "change", "failures"), [
    (0.995, -0.009, []),
    (0.995, -0.0101, ["mIoU change -1.01 points < -1 points at 64x64"]),
    (0.98, 0.02, ["arg-max agreement 98.0000% < 99.0000% at 64x64"]),
    (0.995, math.nan, ["mIoU change undefined < -1 points at 64x64"]),
])
def test_gate_bars(agreement: float, change: float, failures: list[str]) -> None:
    report = ParityReport("onnx fp32", "onnx int8", "data", ExportConfig().int8_gate, [_result(agreement, change)])
    assert report.failures() == failures
    assert report.passed is (not failures)
    assert report.summary().splitlines()[-1] == (
        "  PASSED (agreement >= 99%, mIoU drop <= 1 points)" if not failures else "  FAILED: " + "; ".join(failures))

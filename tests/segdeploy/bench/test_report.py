"""The bench report type: recorded reports read and write back unchanged, the derived figures are recomputed
the same, and a report that does not fit is one line naming the file and the JSON path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from segdeploy.bench.report import BenchReport, ReportError
from segtrain.common.json_record import encode

RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
RECORDED = ["deeplab_r18_256.json", "deeplab_r50_512.json", "segnet_vgg16_512.json", "runtimes/deeplab_r50_512.json"]


def without_legacy_targets(doc: dict) -> dict:
    """Reports before issue 14 carried each model's `targets`; benchmarks/targets.py computes them now."""
    doc = copy.deepcopy(doc)
    for model in doc["models"]:
        model.pop("targets", None)
    return doc


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_reports_read_and_write_back_unchanged(name: str, tmp_path: Path) -> None:
    original = json.loads((RESULTS / name).read_text())
    report = BenchReport.read(RESULTS / name)
    report.write(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == without_legacy_targets(original)
    model = report.models[0]
    assert model.timed()["ort-fp32"].results[0].latency_ms.p50 > 0 and report.machine.usable_cores >= 1


@pytest.mark.parametrize("name", RECORDED[:3])
def test_derived_figures_are_recomputed_as_recorded(name: str) -> None:
    report = BenchReport.read(RESULTS / name)
    recorded = encode(report)
    for model in report.models:
        model.ratios = []
        for entry in model.timed().values():
            for row in entry.results:
                row.gflops_per_second = row.sgemm_fraction = None
        model.add_derived()
    assert encode(report) == recorded


def test_int8_accuracy_keeps_its_parity_report() -> None:
    report = BenchReport.read(RESULTS / "deeplab_r18_256.json")
    acc = report.models[0].int8_accuracy
    result = acc.parity.results[0]
    assert acc.status == "ok" and acc.parity.candidate == "onnx int8" and acc.openvino.parity.candidate == \
        "openvino int8"
    assert result.miou_change == pytest.approx(result.miou_candidate - result.miou_reference)


@pytest.mark.parametrize(("change", "where"), [
    (lambda d: d["models"][0]["backends"][1]["results"][0]["latency_ms"].update(p50="fast"),
     "models[0].backends[1].results[0].latency_ms.p50: expected a number"),
    (lambda d: d["models"][0]["end_to_end"]["runs"][0].pop("ratio"), "models[0].end_to_end.runs[0].ratio: missing"),
    (lambda d: d["models"][0]["int8_accuracy"]["results"][0].update(agreement=None),
     "models[0].int8_accuracy.results[0].agreement: expected a number, found null"),
    (lambda d: d["machine"].update(isa="avx2"), "machine.isa: expected a list"),
    (lambda d: d.update(schema="segdeploy-bench/9"), "schema 'segdeploy-bench/9' is not 'segdeploy-bench/1'"),
])
def test_a_report_that_does_not_fit_is_one_line_naming_the_path(tmp_path: Path, change, where: str) -> None:
    doc = json.loads((RESULTS / "deeplab_r18_256.json").read_text())
    change(doc)
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ReportError) as err:
        BenchReport.read(tmp_path / "bad.json")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'bad.json'}: ") and where in message and "\n" not in message


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "bench.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"bench\.json: cannot read a bench report \("):
        BenchReport.read(tmp_path / "bench.json")

"""benchmarks/run_suite.py: `--only` reruns part of the suite and keeps the other models' recorded results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_suite(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when run as a script: targets.py beside it
    spec = importlib.util.spec_from_file_location("run_suite", REPO / "benchmarks" / "run_suite.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_suite", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def recorded(name: str, created: str) -> dict:
    """A real recorded bench report (benchmarks/results/deeplab_r18_256.json), marked by `created`."""
    doc = json.loads((REPO / "benchmarks" / "results" / "deeplab_r18_256.json").read_text())
    return {**doc, "created": created, "command": f"bench {name}"}


def suite_file(names: list[str]) -> dict:
    return {"schema": "segdeploy-bench-suite/1", "command": "python benchmarks/run_suite.py",
            "runs": {n: recorded(n, f"old {n}") for n in names}, "checkpoints": {n: f"old {n}" for n in names}}


def test_only_replaces_its_models_and_keeps_the_rest_in_suite_order(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from segdeploy.bench.report import BenchReport

    suite = load_suite(monkeypatch)
    names = [m.name for m in suite.STANDARD]
    (tmp_path / "results.json").write_text(json.dumps(suite_file(names)))
    loaded = suite.earlier_results(tmp_path, suite.STANDARD)
    new = BenchReport.from_dict(recorded(names[0], "new"))
    docs, notes, command, reruns = suite.merge_runs({names[0]: new}, {names[0]: "new"},
                                                    "python benchmarks/run_suite.py --only x", loaded, suite.STANDARD)
    assert list(docs) == names and docs[names[0]] is new and docs[names[1]].created == f"old {names[1]}"
    assert notes[names[0]] == "new" and notes[names[2]] == f"old {names[2]}"
    assert command == "python benchmarks/run_suite.py" and reruns == ["python benchmarks/run_suite.py --only x"]
    again = suite.SuiteResults(**{**loaded.__dict__, "reruns": reruns})  # the same rerun again: listed once
    assert suite.merge_runs({names[0]: new}, {names[0]: "new"}, "python benchmarks/run_suite.py --only x", again,
                            suite.STANDARD)[3] == ["python benchmarks/run_suite.py --only x"]
    # a full run, or results of another suite (the quick one), start afresh
    assert suite.merge_runs({"a": new}, {"a": ""}, "c", None, suite.STANDARD) == ({"a": new}, {"a": ""}, "c", [])
    assert suite.earlier_results(tmp_path, suite.QUICK) is None
    (tmp_path / "results.json").write_text("{broken")
    assert suite.earlier_results(tmp_path, suite.STANDARD) is None


def test_recorded_results_read_back_as_they_were_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's results.json read through the types and written again is the same file, but for the
    `targets` lists bench reports before issue 14 carried (benchmarks/targets.py computes them now)."""
    from segtrain.common.json_record import decode

    suite = load_suite(monkeypatch)
    original = json.loads((REPO / "benchmarks" / "results" / "results.json").read_text())
    loaded = decode(suite.SuiteResults, original)
    suite.write_results(loaded.runs, loaded.checkpoints, loaded.command, tmp_path, loaded.reruns)
    for run in original["runs"].values():
        for model in run["models"]:
            model.pop("targets", None)
    assert json.loads((tmp_path / "results.json").read_text()) == original
    page = (tmp_path / "results.md").read_text()
    assert page.count("target met") + page.count("target **missed**") >= 10
    machine = loaded.runs["deeplab_r18_256"].machine.cpu
    assert f"| deeplab_r18_256 | {machine}, 20" in page  # each target row says where it was measured


def test_main_with_only_passes_the_merged_results_to_the_writer(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from segdeploy.bench.report import BenchReport

    suite = load_suite(monkeypatch)
    names = [m.name for m in suite.STANDARD]
    out, data = tmp_path / "out", tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "labels.json").write_text("{}")
    out.mkdir()
    (out / "results.json").write_text(json.dumps(suite_file(names)))
    monkeypatch.setattr(suite, "checkpoint_for", lambda model, work, data, light: tmp_path / "ckpt.pth")
    monkeypatch.setattr(suite, "training_note", lambda model, ckpt: "new")
    monkeypatch.setattr(suite, "bench", lambda model, ckpt, args, out: BenchReport.from_dict(recorded(model.name,
                                                                                                      "new")))
    written = []
    monkeypatch.setattr(suite, "write_results", lambda *a: written.append(a))
    suite.main(["--data", str(data), "--work", str(tmp_path / "work"), "--out", str(out), "--only", names[1]])
    docs, notes, command, where, reruns = written[0]
    assert where == out and command == "python benchmarks/run_suite.py"
    assert docs[names[1]].created == "new" and docs[names[0]].created == f"old {names[0]}" and list(docs) == names
    assert reruns == [f"python benchmarks/run_suite.py --data {data} --work {tmp_path / 'work'} --out {out} "
                      f"--only {names[1]}"]


def test_bench_times_end_to_end_on_each_installed_engine_and_on_auto(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24: the suite's end-to-end figure is held for both engines, not only for the one auto picks."""
    import argparse

    from segdeploy.bench.report import BenchReport

    suite = load_suite(monkeypatch)
    commands = []
    monkeypatch.setattr(suite, "run", lambda cmd, log=None: commands.append(cmd))
    monkeypatch.setattr(BenchReport, "read", classmethod(lambda cls, path: BenchReport.from_dict(recorded("m", "x"))))
    args = argparse.Namespace(data=tmp_path / "data", work=tmp_path / "work", threads=None)
    by_name = {m.name: m for m in suite.STANDARD}
    real = importlib.util.find_spec
    for installed in (True, False):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, on=installed: (real(name, *a) if on else None) if name == "openvino"
                            else real(name, *a))
        suite.bench(by_name["deeplab_r18_256"], tmp_path / "c.pth", args, tmp_path)
        suite.bench(by_name["segnet_vgg16_512"], tmp_path / "c.pth", args, tmp_path)
        e2e, no_photos = commands[-2:]
        asked = e2e[e2e.index("--runtime") + 1]
        has_ov = installed and real("openvino") is not None
        assert asked == ("auto,onnxruntime,openvino" if has_ov else "auto,onnxruntime")
        assert "--runtime" not in no_photos and "--photos" not in no_photos

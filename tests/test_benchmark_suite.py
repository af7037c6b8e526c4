"""benchmarks/run_suite.py: `--only` reruns part of the suite and keeps the other models' recorded results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_suite(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when run as a script: targets.py beside it
    spec = importlib.util.spec_from_file_location("run_suite", REPO / "benchmarks" / "run_suite.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_suite", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_only_replaces_its_models_and_keeps_the_rest_in_suite_order(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    suite = load_suite(monkeypatch)
    names = [m.name for m in suite.STANDARD]
    earlier = {"schema": "segdeploy-bench-suite/1", "command": "python benchmarks/run_suite.py",
               "runs": {n: {"old": n} for n in names}, "checkpoints": {n: f"old {n}" for n in names}}
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    loaded = suite.earlier_results(tmp_path, suite.STANDARD)
    docs, notes, command, reruns = suite.merge_runs({names[0]: {"new": 1}}, {names[0]: "new"},
                                                    "python benchmarks/run_suite.py --only x", loaded, suite.STANDARD)
    assert list(docs) == names and docs[names[0]] == {"new": 1} and docs[names[1]] == {"old": names[1]}
    assert notes[names[0]] == "new" and notes[names[2]] == f"old {names[2]}"
    assert command == "python benchmarks/run_suite.py" and reruns == ["python benchmarks/run_suite.py --only x"]
    # a full run, or results of another suite (the quick one), start afresh
    assert suite.merge_runs({"a": {}}, {"a": ""}, "c", None, suite.STANDARD) == ({"a": {}}, {"a": ""}, "c", [])
    assert suite.earlier_results(tmp_path, suite.QUICK) is None
    (tmp_path / "results.json").write_text("{broken")
    assert suite.earlier_results(tmp_path, suite.STANDARD) is None


def test_main_with_only_passes_the_merged_results_to_the_writer(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    suite = load_suite(monkeypatch)
    names = [m.name for m in suite.STANDARD]
    out, data = tmp_path / "out", tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "labels.json").write_text("{}")
    out.mkdir()
    (out / "results.json").write_text(json.dumps({
        "schema": "segdeploy-bench-suite/1", "command": "python benchmarks/run_suite.py",
        "runs": {n: {"old": n} for n in names}, "checkpoints": {n: f"old {n}" for n in names}}))
    monkeypatch.setattr(suite, "checkpoint_for", lambda model, work, data, light: tmp_path / "ckpt.pth")
    monkeypatch.setattr(suite, "training_note", lambda model, ckpt: "new")
    monkeypatch.setattr(suite, "bench", lambda model, ckpt, args, out: {"new": model.name})
    written = []
    monkeypatch.setattr(suite, "write_results", lambda *a: written.append(a))
    suite.main(["--data", str(data), "--work", str(tmp_path / "work"), "--out", str(out), "--only", names[1]])
    docs, notes, command, where, reruns = written[0]
    assert where == out and command == "python benchmarks/run_suite.py"
    assert docs[names[1]] == {"new": names[1]} and docs[names[0]] == {"old": names[0]} and list(docs) == names
    assert reruns == [f"python benchmarks/run_suite.py --data {data} --work {tmp_path / 'work'} --out {out} "
                      f"--only {names[1]}"]

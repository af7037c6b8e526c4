"""benchmarks/train_speed.py in a small configuration: it runs (a), (b) and (c) and writes its JSON record."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segtrain.data.synthetic import make_sample_dataset

REPO = Path(__file__).resolve().parents[2]


def load_bench(monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("train_speed", REPO / "benchmarks" / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_speed", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# The benchmark runs in its own process, as a user runs it: its DataLoader workers and the SIGCHLD handler
# torch installs for them stay out of the test process (there, a later child's exit ran that handler on the
# signal stack OpenVINO had swapped in and freed: SIGSEGV; see openvino_runtime.signal_stack_kept).
RUN_TINY = """
import runpy, sys
import pytest
from tiny_arch import register_tiny
register_tiny(pytest.MonkeyPatch())
sys.argv = ["train_speed.py", *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_runs_small_and_writes_its_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiny_arch import POOL_ARCH

    bench = load_bench(monkeypatch)
    data = make_sample_dataset(tmp_path / "data", seed=2, sizes={"train": 3, "validation": 2, "test": 1})
    out = tmp_path / "speed.json"
    args = ["--data", str(data), "--model", POOL_ARCH, "--encoder", "conv", "--image-size", "32", "--batch-size", "2",
            "--workers", "1", "--device", "cpu", "--warmup", "1", "--steps", "2", "--repeat", "2", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "helpers"), str(REPO),
                                                         os.environ.get("PYTHONPATH", "")])}
    code = RUN_TINY.format(script=str(REPO / "benchmarks" / "train_speed.py"))
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    report = bench.TrainSpeed.decode(doc)  # the record's own shape check
    assert report.schema == "segtrain-train-speed/1" and report.command.endswith(" ".join(args))
    assert [m.name for m in report.ceiling] == ["fp32, nchw", "fp32, channels_last"]  # the CPU's candidates
    assert report.batch_size == 2 and report.steps == 2 and report.workers == 1 and not report.compile
    for m in (*report.ceiling, report.loader, report.segtrain):
        assert m.images_per_s > 0 and m.warmup_s > 0
    assert 0 <= report.segtrain.data_wait <= 1
    best = max(m.images_per_s for m in report.ceiling)
    assert report.segtrain_over_ceiling == pytest.approx(report.segtrain.images_per_s / best)
    assert report.segtrain_over_loader == pytest.approx(report.segtrain.images_per_s / report.loader.images_per_s)


def test_repeated_dataset_lists_the_training_photos_n_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segtrain.data.coco import CocoSplit

    bench = load_bench(monkeypatch)
    data = make_sample_dataset(tmp_path / "data", seed=2, sizes={"train": 3, "validation": 2, "test": 1})
    root = bench.repeated_dataset(data, 3, tmp_path / "rep")
    train, original = CocoSplit.open(root, "train"), CocoSplit.open(data, "train")
    assert len(train) == 9 and len(CocoSplit.open(root, "validation")) == 2
    for copy in range(3):
        i = copy * 3
        assert (train.load_mask(i) == original.load_mask(0)).all()
        assert (train.load_image(i) == original.load_image(0)).all()

"""`--runtime auto` measured: the faster engine wins whichever it is, the answer is cached per case, a bad cache
is ignored with a note, pinned and one-engine cases measure nothing, and the measurement stays within its budget."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import build_colour_model, half_image, save

from segdeploy.cli import main
from segdeploy.infer import runtime, runtime_choice
from segdeploy.infer.predictor import Predictor
from segdeploy.infer.runtime_choice import CACHE_FILE, ENGINES, Engine, Measured, open_chosen
from segtrain.contract import ModelSpec


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_model(tmp_path_factory.mktemp("choice") / "colour.onnx", slow_layers=2, slow_width=8)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder for the test; both engines count as installed, no GPU."""
    monkeypatch.setenv("SEGTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "installed", lambda extra: True)
    monkeypatch.setattr(runtime, "gpu_provider_available", lambda provider: False)
    return tmp_path / "cache" / CACHE_FILE


class FakeModel:
    """An engine whose every run takes `seconds`; counts its runs."""

    def __init__(self, name: str, path: Path, seconds: float, log: dict) -> None:
        self.runtime, self.path, self.seconds, self.log = name, path, seconds, log
        self.spec = ModelSpec(arch="tiny", encoder="x", classes=("a", "b"), coco_ids=(0, 1), input_size=(8, 8))
        self.runtime_reason = f"--runtime {name}"
        log["opened"].append(name)

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.log["runs"][self.runtime] += 1
        time.sleep(self.seconds)
        return np.zeros((len(batch), 2, 8, 8), np.float32)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch):
    """fakes(onnxruntime_seconds, openvino_seconds) -> the log of opens and runs; the engines become fakes."""
    def install(ort: float, ov: float, versions: tuple[str, str] = ("1", "2")) -> dict:
        log = {"opened": [], "runs": {"onnxruntime": 0, "openvino": 0}}
        for (name, seconds), version in zip((("onnxruntime", ort), ("openvino", ov)), versions, strict=True):
            monkeypatch.setitem(ENGINES, name, Engine(
                lambda path, threads, spinning, name=name, seconds=seconds: FakeModel(name, Path(path), seconds, log),
                lambda version=version: version))
        return log
    return install


@pytest.mark.parametrize(("ort", "ov", "faster"), [(0.002, 0.012, "onnxruntime"), (0.012, 0.002, "openvino")])
def test_the_slower_engine_is_never_chosen(ort: float, ov: float, faster: str, model: Path, cache: Path,
                                           fakes) -> None:
    log = fakes(ort, ov)
    notes: list[str] = []
    chosen = open_chosen(model, batch_size=2, threads=1, note=notes.append)
    assert chosen.runtime == faster
    assert log["runs"]["onnxruntime"] == log["runs"]["openvino"] >= 1 + runtime_choice.MIN_ROUNDS  # warm-up + rounds
    entry = Measured.decode(json.loads(cache.read_text())["entries"][0])
    slower = "openvino" if faster == "onnxruntime" else "onnxruntime"
    rates = entry.images_per_second
    assert entry.chosen == faster and rates[faster] > 2 * rates[slower]  # 2 images per 2 / 12 ms, with sleep's slack
    assert rates[faster] <= 2 / min(ort, ov)
    assert (entry.batch_size, entry.threads, entry.input_size) == (2, 1, (32, 32))  # the model's own input size
    assert notes == []  # the choice is the reason runs report; notes are for the cache's problems
    assert chosen.runtime_reason.startswith(f"auto: {faster} {rates[faster]:.2f} vs {slower} {rates[slower]:.2f} "
                                            "images/s (batch 2, 1 threads; measured in ")


def test_a_second_run_uses_the_cache_and_opens_one_engine(model: Path, cache: Path, fakes) -> None:
    fakes(0.008, 0.001)
    first = open_chosen(model, threads=1, note=lambda _: None)
    log = fakes(0.001, 0.008)  # now onnxruntime would win a measurement: the cache must answer instead
    notes: list[str] = []
    again = open_chosen(model, threads=1, note=notes.append)
    assert first.runtime == again.runtime == "openvino"
    assert log == {"opened": ["openvino"], "runs": {"onnxruntime": 0, "openvino": 0}}
    assert again.runtime_reason.endswith("cached measurement)") and notes == []


@pytest.mark.parametrize("change", ["threads", "batch", "model", "versions", "cpu", "spinning"])
def test_another_case_measures_again(change: str, model: Path, cache: Path, fakes, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fakes(0.001, 0.004)
    open_chosen(model, threads=1, batch_size=1, note=lambda _: None)
    other = tmp_path / "other.onnx"
    build_colour_model(other, slow_layers=3, slow_width=8)  # another file: another sha256
    log = fakes(0.001, 0.004, versions=("1", "3") if change == "versions" else ("1", "2"))
    if change == "cpu":
        monkeypatch.setattr(runtime_choice, "cpu_name", lambda: "Another CPU")
    open_chosen(other if change == "model" else model, threads=2 if change == "threads" else 1,
                batch_size=4 if change == "batch" else 1, note=lambda _: None, spinning=change != "spinning")
    assert log["runs"]["onnxruntime"] >= 1 + runtime_choice.MIN_ROUNDS
    assert len(json.loads(cache.read_text())["entries"]) == 2  # both cases remembered


@pytest.mark.parametrize("content", ["{not json", '{"schema": "segdeploy-runtime-choices/2", "entries": [{"x": 1}]}',
                                     '{"schema": "something-else/9", "entries": []}', "\udcff",
                                     '{"schema": "segdeploy-runtime-choices/1", "entries": []}'])
def test_a_corrupt_cache_is_ignored_with_a_note_and_replaced(content: str, model: Path, cache: Path,
                                                              fakes) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content.encode("utf-8", "surrogateescape"))
    log = fakes(0.001, 0.004)
    notes: list[str] = []
    assert open_chosen(model, threads=1, note=notes.append).runtime == "onnxruntime"
    assert log["runs"]["openvino"] >= 1 + runtime_choice.MIN_ROUNDS  # measured, not read
    assert notes[0].startswith(f"note: ignoring the runtime cache {cache} (") and notes[0].endswith("measuring again")
    assert [e["chosen"] for e in json.loads(cache.read_text())["entries"]] == ["onnxruntime"]


def test_a_fifo_in_place_of_the_cache_is_never_opened(model: Path, cache: Path, fakes) -> None:
    import os

    cache.parent.mkdir(parents=True)
    os.mkfifo(cache)  # reading it would block until a writer came
    fakes(0.001, 0.004)
    notes: list[str] = []
    assert open_chosen(model, threads=1, note=notes.append).runtime == "onnxruntime"
    assert notes[0].startswith(f"note: ignoring the runtime cache {cache} (not a regular file")
    assert cache.is_file()  # replaced by the new cache (written to a temporary name, renamed into place)


def test_an_unwritable_cache_still_chooses_with_a_note(model: Path, fakes, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SEGTRAIN_CACHE_DIR", str(tmp_path / "a-file"))  # a cache folder that cannot exist
    monkeypatch.setattr(runtime, "installed", lambda extra: True)
    monkeypatch.setattr(runtime, "gpu_provider_available", lambda provider: False)
    fakes(0.004, 0.001)
    notes: list[str] = []
    assert open_chosen(model, threads=1, note=notes.append).runtime == "openvino"
    assert any(n.startswith(f"note: cannot write the runtime cache {tmp_path / 'a-file' / CACHE_FILE}")
               for n in notes), notes


@pytest.mark.parametrize(("runtime_", "provider", "gpu", "has_openvino", "used", "reason"), [
    ("onnxruntime", "auto", False, True, "onnxruntime", "--runtime onnxruntime"),
    ("openvino", "cpu", False, True, "openvino", "--runtime openvino"),
    ("auto", "auto", False, False, "onnxruntime", "auto: OpenVINO is not installed"),
    ("auto", "auto", True, True, "onnxruntime", "auto: onnxruntime has a GPU provider here"),
])
def test_pinned_or_one_engine_measures_nothing(runtime_: str, provider: str, gpu: bool, has_openvino: bool,
                                               used: str, reason: str, model: Path, cache: Path, fakes,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "installed", lambda extra: has_openvino)
    monkeypatch.setattr(runtime, "gpu_provider_available", lambda p: gpu)
    monkeypatch.setattr(runtime, "resolve_providers", lambda p: ["CPUExecutionProvider"])  # no real GPU here
    log = fakes(0.001, 0.001)
    chosen = open_chosen(model, runtime=runtime_, provider=provider, threads=1)
    assert (chosen.runtime, chosen.runtime_reason) == (used, reason)
    assert log["opened"] == [] and not cache.exists()  # the real engine opened; nothing timed, nothing cached


def test_the_measurement_stops_at_its_budget(model: Path, cache: Path, fakes,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_choice, "BASE_SECONDS", 0.3)
    fakes(0.05, 0.06)  # ten rounds would take 1.1 s
    open_chosen(model, threads=1, note=lambda _: None)
    entry = Measured.decode(json.loads(cache.read_text())["entries"][0])
    assert runtime_choice.MIN_ROUNDS <= entry.timed_runs < runtime_choice.MAX_ROUNDS
    assert entry.seconds < 0.3 + 2 * 0.11 + 0.2  # the budget, at most one round more, and slack


def test_a_heavy_model_gets_one_round_when_warming_up_spent_the_base(model: Path, cache: Path, fakes,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_choice, "BASE_SECONDS", 0.1)
    monkeypatch.setattr(runtime_choice, "REWARM_BELOW_SECONDS", 0.01)  # runs this long are not re-warmed
    log = fakes(0.04, 0.12)  # the two warm-up runs alone take 0.16 s
    open_chosen(model, threads=1, note=lambda _: None)
    entry = Measured.decode(json.loads(cache.read_text())["entries"][0])
    assert entry.timed_runs == 1 and log["runs"] == {"onnxruntime": 2, "openvino": 2}
    assert entry.chosen == "onnxruntime"


def test_a_long_job_gets_two_percent_of_its_time() -> None:
    times = {"onnxruntime": [0.02, 0.02], "openvino": [0.01, 0.01]}  # 5 ms per image at batch 2 on the faster
    assert runtime_choice._budget(times, 2, None) == runtime_choice.BASE_SECONDS
    assert runtime_choice._budget(times, 2, 1000) == runtime_choice.BASE_SECONDS  # 2% of 5 s: less than the base
    assert runtime_choice._budget(times, 2, 100_000) == pytest.approx(0.02 * 100_000 * 0.005)  # 2% of 500 s


# ---------------------------------------------------------------------------------------------
# The real engines, through the Predictor and `segdeploy batch`


def test_predictor_and_batch_measure_the_real_engines_once(model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    monkeypatch.setenv("SEGTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    notes: list[str] = []
    predictor = Predictor(model, threads=1, batch_size=1, note=notes.append, spinning=False)  # as batch opens it
    entry = Measured.decode(json.loads((tmp_path / "cache" / CACHE_FILE).read_text())["entries"][0])
    rates = entry.images_per_second
    assert predictor.model.runtime == entry.chosen == max(rates, key=rates.__getitem__)
    assert set(rates) == {"onnxruntime", "openvino"} and notes == []
    assert entry.seconds < runtime_choice.BASE_SECONDS + 2  # a tiny model: far under the budget
    save(half_image(40, 40, 0), tmp_path / "in" / "a.png")
    res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model",
                                    str(model), "--threads", "1", "--batch-size", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["runtime"]["used"] == entry.chosen and summary["runtime"]["requested"] == "auto"
    assert summary["runtime"]["reason"] == entry.reason(cached=True)  # the same case: read from the cache
    assert f"[{entry.reason(cached=True)}]" in res.output


@pytest.mark.parametrize("broken", ["openvino", "onnxruntime"])
def test_an_engine_that_cannot_run_the_batch_loses_uncached(broken: str, model: Path, cache: Path,
                                                            fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    fakes(0.001, 0.001)

    def refuse(self, batch):
        raise RuntimeError("incompatible dims\nmore detail")

    faster = "openvino" if broken == "onnxruntime" else "onnxruntime"
    real_run = FakeModel.run
    monkeypatch.setattr(FakeModel, "run", lambda self, b: refuse(self, b) if self.runtime == broken
                        else real_run(self, b))
    chosen = open_chosen(model, threads=1, batch_size=2, note=lambda _: None)
    assert chosen.runtime == faster
    assert chosen.runtime_reason == (f"auto: {faster}, not measured ({broken} failed on a batch of 2: "
                                     "incompatible dims)")
    assert not cache.exists()


def test_cache_off_measures_every_time(model: Path, cache: Path, fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGTRAIN_CACHE_DIR", "off")  # as for the mask cache: no cache folder at all
    for _ in range(2):
        log = fakes(0.001, 0.003)
        assert open_chosen(model, threads=1, note=lambda _: None).runtime == "onnxruntime"
        assert log["runs"]["openvino"] >= 1 + runtime_choice.MIN_ROUNDS
    assert not cache.parent.exists()


def test_the_first_run_after_a_switch_of_engine_is_not_timed(model: Path, cache: Path, fakes,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's pool threads spin on after its run, so OpenVINO's next run is slow: timed back to back, a
    faster OpenVINO lost (DeepLabV3-R18-256 INT8, batch 1: 16.9 against its 31.4 images/s in the bench rounds)."""
    log = fakes(0.010, 0.004)
    last = {"engine": None}
    real_run = FakeModel.run

    def run(self, batch):
        if self.runtime == "openvino" and last["engine"] == "onnxruntime":
            time.sleep(0.030)  # sharing the cores with the other engine's spinning threads
        last["engine"] = self.runtime
        return real_run(self, batch)

    monkeypatch.setattr(FakeModel, "run", run)
    chosen = open_chosen(model, threads=1, batch_size=1, note=lambda _: None)
    assert chosen.runtime == "openvino"
    rates = Measured.decode(json.loads(cache.read_text())["entries"][0]).images_per_second
    assert rates["openvino"] > 1.5 * rates["onnxruntime"]
    assert log["runs"]["openvino"] > 2 * runtime_choice.MIN_ROUNDS  # the untimed runs before the timed ones

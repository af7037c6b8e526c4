"""Runs are never lost: a second fit refuses or takes the next free folder; --resume writes beside its last.pth;
checkpoints name their dataset absolutely, so evaluate works from any folder."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_arch import POOL_ARCH, tiny_registered

from segtrain.cli import main
from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.runs import RunFolderError, choose_run_folder

TINY = ["--epochs", "1", "--encoder", "conv", "--encoder-weights", "none", "--image-size", "32", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--progress", "off"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("runs-data") / "data", seed=3,
                               sizes={"train": 4, "validation": 2, "test": 2})


@pytest.fixture(autouse=True)
def _tiny():
    with tiny_registered():
        yield


def fit(*args: str):
    return CliRunner().invoke(main, ["fit", POOL_ARCH, *TINY, *args])


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_folder_rule(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert choose_run_folder("deeplab", runs_dir=runs).path == runs / "deeplab"
    (runs / "deeplab").mkdir(parents=True)
    assert choose_run_folder("deeplab", runs_dir=runs).path == runs / "deeplab"  # an empty folder holds no run
    (runs / "deeplab" / "metrics.csv").write_text("x")
    (runs / "deeplab-2").mkdir()
    (runs / "deeplab-2" / "last.pth").write_text("x")
    chosen = choose_run_folder("deeplab", runs_dir=runs)
    assert chosen.path == runs / "deeplab-3" and f"{runs / 'deeplab'} holds an earlier run" in chosen.note
    assert choose_run_folder("deeplab", runs_dir=runs, exist_ok=True).path == runs / "deeplab"
    with pytest.raises(RunFolderError) as err:
        choose_run_folder("deeplab", out=runs / "deeplab")
    assert str(err.value) == (f"{runs / 'deeplab'}: already holds a run (metrics.csv); choose another --out, "
                              f"continue it with --resume {runs / 'deeplab' / 'last.pth'}, or pass --exist-ok "
                              "to write over it")
    assert choose_run_folder("deeplab", out=runs / "deeplab", exist_ok=True).path == runs / "deeplab"
    resumed = choose_run_folder("deeplab", resume=runs / "deeplab-2" / "last.pth")
    assert resumed.path == runs / "deeplab-2"
    with pytest.raises(RunFolderError, match="already holds a run"):
        choose_run_folder("deeplab", out=runs / "deeplab", resume=runs / "deeplab-2" / "last.pth")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunFolderError, match="exists and is not a folder"):
        choose_run_folder("deeplab", out=tmp_path / "afile")


def test_second_fit_with_the_same_out_refuses_and_keeps_the_run(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert fit("--data", str(data), "--out", str(out)).exit_code == 0
    before = snapshot(out)
    res = fit("--data", str(data), "--out", str(out), "--epochs", "2")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith(f"Error: {out}: already holds a run (best_model.pth, last.pth, metrics.csv)")
    assert "--exist-ok" in lines[0] and "--resume" in lines[0]
    assert snapshot(out) == before
    res = fit("--data", str(data), "--out", str(out), "--exist-ok", "--seed", "5")
    assert res.exit_code == 0 and res.output.splitlines()[0] == (
        f"writing to {out} (--exist-ok: replacing the run there)")
    assert snapshot(out)["last.pth"] != before["last.pth"]


def test_without_out_a_second_fit_takes_the_next_free_folder(data: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = fit("--data", str(data))
    assert first.exit_code == 0 and first.output.splitlines()[0] == f"writing to runs/{POOL_ARCH}"
    before = snapshot(tmp_path / "runs" / POOL_ARCH)
    second = fit("--data", str(data))
    assert second.exit_code == 0, second.output
    assert second.output.splitlines()[0] == (f"writing to runs/{POOL_ARCH}-2 (runs/{POOL_ARCH} holds an earlier run; "
                                             "--out chooses the folder)")
    assert (tmp_path / "runs" / f"{POOL_ARCH}-2" / "best_model.pth").is_file()
    assert snapshot(tmp_path / "runs" / POOL_ARCH) == before


def test_resume_writes_beside_the_last_pth_not_where_it_was_made(data: Path, tmp_path: Path) -> None:
    made = tmp_path / "made"
    assert fit("--data", str(data), "--out", str(made)).exit_code == 0
    before = snapshot(made)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(made / "last.pth", moved / "last.pth")
    res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--resume", str(moved / "last.pth"), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"continuing the run of {moved / 'last.pth'} in {moved}"
    assert snapshot(made) == before
    assert {"last.pth", "metrics.csv", "config.json", "loss.png"} <= set(snapshot(moved))


def test_evaluate_from_another_folder_and_a_dataset_that_moved(data: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    shutil.copytree(data, work / "data")
    monkeypatch.chdir(work)
    assert fit("--data", "data", "--out", "run").exit_code == 0  # a relative --data
    ckpt = work / "run" / "best_model.pth"
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["evaluate", str(ckpt), "--split", "test", "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    (work / "data").rename(work / "moved")
    res = CliRunner().invoke(main, ["evaluate", str(ckpt), "--split", "test", "--device", "cpu"])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"Error: {work / 'data'}: dataset folder not found (recorded in {ckpt} as the training data); pass --data DIR"]
    res = CliRunner().invoke(main, ["evaluate", str(ckpt), "--split", "test", "--json", "--data", str(work / "moved")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--resume", str(work / "run" / "last.pth"), "--epochs", "2"])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"Error: {work / 'data'}: dataset folder not found (recorded in {work / 'run' / 'last.pth'} as the training "
        "data); pass --data DIR"]


def test_a_refused_or_failed_start_creates_nothing(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = fit("--data", "nope")
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"Error: {tmp_path / 'nope'}: dataset folder not found (pass --data DIR)"]
    (tmp_path / "afile").write_text("x")
    res = fit("--data", str(data), "--out", "afile/run")
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        "Error: afile/run: cannot write the run there (Not a directory); choose another --out"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]

"""`segdeploy batch` when --out cannot take the outputs: refused before any work when it is read-only, stopped
cleanly (exit 1, the reason, a summary of what was finished) when it fills up, finished by a rerun."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import half_image, half_truth, read_png, run_batch_subprocess, save

import segdeploy.infer.batch.outputs as outputs
from segdeploy.cli import main
from segdeploy.infer.batch.outputs import output_paths
from segdeploy.infer.predictor import Predictor

N_IMAGES = 8


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    for i in range(N_IMAGES):
        save(half_image(20, 20 + 2 * i, 1), tmp_path / "in" / f"im{i}.png")
    return tmp_path / "in"


def invoke(*args: str | Path) -> object:
    return CliRunner().invoke(main, ["batch", *(str(a) for a in args), "--no-progress", "--workers", "1",
                                     "--batch-size", "1"])


def full_after(monkeypatch: pytest.MonkeyPatch, images: int, summary_too: bool = False) -> list[Path]:
    """The write layer fails with ENOSPC once `images` masks are written (summary.json too when asked);
    returns the list of model calls' batches seen, to show the run stopped early."""
    real = outputs.atomic_write_bytes
    written: list[Path] = []

    def write(path, fill, tag=""):
        full = len(written) >= images and (summary_too or Path(path).suffix != ".json")
        if full and Path(path).name != "legend.png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, fill, tag=tag)
        if str(path).endswith(".mask.png"):
            written.append(Path(path))

    monkeypatch.setattr(outputs, "atomic_write_bytes", write)
    calls: list[int] = []
    real_infer = Predictor.infer
    monkeypatch.setattr(Predictor, "infer",
                        lambda self, items, **kw: calls.append(len(items)) or real_infer(self, items, **kw))
    return calls


def test_a_full_disk_stops_the_run_with_a_summary_of_what_was_finished(model: Path, photos: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    calls = full_after(monkeypatch, images=3)
    res = invoke(photos, "--out", out, "--model", model)
    assert res.exit_code == 1, res.output
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "No space left on device" in last and "could not be read" not in res.output
    assert f"summary of what was finished: {out / 'summary.json'}" in last and "run the same command again" in last
    assert sum(calls) < N_IMAGES  # it stopped: the model did not go on over every image
    summary = json.loads((out / "summary.json").read_text())
    finished = sorted(r["input"] for r in summary["images"])
    assert len(finished) == 3 and summary["failures"] == [] and "No space left on device" in summary["stopped"]
    assert not [p for p in out.rglob(".*") if p.name.endswith(".tmp")]  # no temporary file left
    monkeypatch.undo()  # space is freed
    again = invoke(photos, "--out", out, "--model", model)
    assert again.exit_code == 0, again.output
    assert f"{N_IMAGES - 3} images segmented, 3 already done, 0 failed" in again.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["images"]) == N_IMAGES and "stopped" not in summary
    for i in range(N_IMAGES):
        mask = read_png(output_paths(out, Path(f"im{i}.png")).mask)
        np.testing.assert_array_equal(mask, half_truth(20, 20 + 2 * i, 1))


def test_when_not_even_the_summary_fits_the_error_says_so(model: Path, photos: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    full_after(monkeypatch, images=2, summary_too=True)
    res = invoke(photos, "--out", tmp_path / "out", "--model", model)
    assert res.exit_code == 1 and "Traceback" not in res.output
    last = res.stderr.strip().splitlines()[-1]
    assert "the run stopped after 2 of 8 image(s)" in last
    assert "no summary written (summary.json: No space left on device too)" in last
    assert not (tmp_path / "out" / "summary.json").exists()


def test_one_images_unwritable_name_is_a_named_skip_not_a_stop(model: Path, tmp_path: Path) -> None:
    save(half_image(20, 20, 1), tmp_path / "in" / "ok.png")
    long_name = "x" * 246 + ".png"  # a legal name, but name + ".mask.png" is longer than 255 bytes
    save(half_image(20, 20, 1), tmp_path / "in" / long_name)
    res = invoke(tmp_path / "in", "--out", tmp_path / "out", "--model", model)
    assert res.exit_code == 3, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failures"] == [{"input": long_name, "reason": "cannot write its outputs (File name too long)"}]
    assert [r["input"] for r in summary["images"]] == ["ok.png"] and "1 input(s) skipped:" in res.stderr


def test_an_unwritable_out_is_refused_before_any_work(model: Path, photos: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("x")
    res = invoke(photos, "--out", tmp_path / "a-file" / "out", "--model", model)
    assert res.exit_code == 2 and res.stderr.strip() == \
        f"Error: --out {tmp_path / 'a-file' / 'out'}: cannot be made: {tmp_path / 'a-file'} is not a folder"
    opened: list[Path] = []
    monkeypatch.setattr(Predictor, "__init__", lambda self, *a, **k: opened.append(a[0]))  # nothing may get this far
    # Tests may run as root, whom permissions do not stop: os.access answers as for a read-only folder.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    res = invoke(photos, "--out", tmp_path / "new" / "out", "--model", model)
    assert res.exit_code == 2 and res.stderr.strip() == \
        f"Error: --out {tmp_path / 'new' / 'out'}: cannot write there ({tmp_path}): permission denied"
    assert opened == [] and not (tmp_path / "new").exists()


def _tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_real_small_tmpfs_fills_up_then_a_rerun_finishes(model: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "400k"):
        pytest.skip("mounting a tmpfs needs root and the mount capability")
    try:
        rng = np.random.default_rng(0)
        for i in range(12):  # noise: every overlay JPEG is about 70 KB
            save(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), tmp_path / "in" / f"im{i:02d}.png")
        args = (tmp_path / "in", "--out", disk / "out", "--model", model, "--no-progress")
        res = run_batch_subprocess(*args, timeout=120)
        assert res.returncode == 1 and "No space left on device" in res.stderr and "Traceback" not in res.stderr
        assert res.stderr.strip().splitlines()[-1].startswith("Error: ")
        done = len(list((disk / "out").glob("*.mask.png")))
        assert 0 < done < 12
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)  # space is freed
        res = run_batch_subprocess(*args, timeout=120)
        assert res.returncode == 0, res.stderr
        assert f"{12 - done} images segmented, {done} already done" in res.stdout
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        res = run_batch_subprocess(*args[:2], disk / "other", *args[3:], timeout=120)
        assert res.returncode == 2 and res.stderr.strip().endswith(f"({disk}): read-only file system")
        subprocess.run(["mount", "-o", "remount,rw,size=1m", str(disk)], check=True)
        shutil.rmtree(disk / "out")
        with open(disk / "filler", "wb") as f:  # full before the run starts: refused before any work
            with contextlib.suppress(OSError):
                f.write(bytes(2 << 20))
        res = run_batch_subprocess(*args[:2], disk / "other", *args[3:], timeout=120)
        assert res.returncode == 2 and res.stderr.strip() == \
            f"Error: --out {disk / 'other'}: cannot write there (No space left on device)"
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)

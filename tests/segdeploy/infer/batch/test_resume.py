"""Resuming: the record a finished mask carries and when it counts as complete; the temporary files a killed run
left; and a real interrupted `segdeploy batch` (a subprocess) rerun: nothing lost, nothing redone."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from colour_models import (
    batch_command,
    build_colour_model,
    half_image,
    half_truth,
    output_files,
    read_png,
    run_batch_subprocess,
    save,
    subprocess_env,
)

from segdeploy.cli import EXIT_INTERRUPTED
from segdeploy.infer.batch import resume
from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.outputs import DEFAULT_SAVE, encode_mask, output_paths, write_atomic
from segdeploy.infer.batch.plan import Job
from segdeploy.infer.batch.resume import RECORD_KEY, Fingerprint, ResumeRecord, completed, source_stamp
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.batch.summary import ImageRecord
from segtrain.contract import default_palette

N_IMAGES = 30
# A record and a fingerprint as a run writes them into a mask.
RECORD = ImageRecord("sub/a.jpg", {"mask": "sub/a.jpg.mask.png"}, (2, 3), 0,
                     {"decode": 0.1, "infer": 0.2, "write": 0.05, "total": 0.35}, {"background": 0.5, "red": 0.5},
                     scores={"0": 0.9, "1": 0.8})
FINGERPRINT = Fingerprint("abc", 0.5, ("mask", "overlay", "confidence"), False, "auto", 0.25)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # About 0.1 s per image on one thread: the colour model plus real convolutions that add exactly 0.
    return build_colour_model(tmp_path_factory.mktemp("slow") / "slow.onnx", input_size=(128, 128),
                              slow_layers=12, slow_width=64)


def _images(root: Path) -> dict[str, tuple[int, int, int]]:
    """Even-sided images larger than the model input, so their masks are known exactly."""
    sizes = {}
    for i in range(N_IMAGES):
        h, w, axis = 130 + 2 * (i % 4), 140 + 2 * (i % 3), i % 2
        rel = f"{'sub/' if i % 3 == 0 else ''}im{i:02d}.png"
        save(half_image(h, w, axis), root / rel)
        sizes[rel] = (h, w, axis)
    return sizes


def _done(out_dir: Path) -> set[str]:
    """Images whose mask exists (written last, so their overlay exists too)."""
    return {p.relative_to(out_dir).as_posix().removesuffix(".mask.png") for p in out_dir.rglob("*.mask.png")}


def _interrupt(cmd: list[str], out_dir: Path, sig: signal.Signals, after: int) -> int:
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    try:
        while len(_done(out_dir)) < after:
            assert proc.poll() is None, f"the run ended before it could be interrupted:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.02)
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupted_run_rerun_finishes_the_rest_without_rewriting(slow_model: Path, tmp_path: Path,
                                                                   sig: signal.Signals) -> None:
    images = _images(tmp_path / "in")
    out = tmp_path / "out"
    args = [tmp_path / "in", "--out", out, "--model", slow_model, "--batch-size", "1", "--workers", "1",
            "--threads", "1", "--no-progress"]
    rc = _interrupt(batch_command(*args), out, sig, after=5)
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    else:  # Ctrl-C and kill: started writes finish, nothing half-written is left behind
        assert rc == EXIT_INTERRUPTED
        assert not list(out.rglob("*.tmp"))
    finished = _done(out)
    assert 5 <= len(finished) < N_IMAGES
    before = {p: t for p, t in output_files(out).items() if not p.name.endswith(".tmp")}

    rerun = run_batch_subprocess(*args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = output_files(out)
    assert not [p for p in after if p.name.endswith(".tmp")]
    for rel in finished:  # outputs finished before the interruption are not rewritten
        for path in output_paths(out, Path(rel), DEFAULT_SAVE).files.values():
            assert after[path] == before[path], f"{path} was rewritten"
    for rel, (h, w, axis) in images.items():  # and every image is now complete and decodable
        paths = output_paths(out, Path(rel), DEFAULT_SAVE)
        np.testing.assert_array_equal(read_png(paths.mask), half_truth(h, w, axis), err_msg=rel)
        assert read_png(paths.files["overlay"]).shape == (h, w, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["resumed"] == len(finished)
    assert summary["totals"]["processed"] == N_IMAGES - len(finished)
    assert len(summary["images"]) == N_IMAGES and summary["failures"] == []
    # Byte identity: the killed-and-resumed folder holds exactly the files of one uninterrupted run.
    whole = tmp_path / "whole"
    run_batch(BatchConfig(sources=tmp_path / "in", out_dir=whole, model=slow_model, progress=False),
              log=lambda m: None)
    files = {p.relative_to(whole).as_posix() for p in whole.rglob("*") if p.is_file()}
    assert files == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for rel in sorted(files - {"summary.json"}):
        assert (whole / rel).read_bytes() == (out / rel).read_bytes(), rel


# --------------------------------------------------------------------------------------------
# The record a finished mask carries


def _mask(path: Path, size: tuple[int, int], text: dict[str, str] | None) -> Path:
    write_atomic(path, encode_mask(np.zeros(size, np.uint8), default_palette(2), text))
    return path


def test_the_record_round_trips_through_the_mask(tmp_path: Path) -> None:
    stored = ResumeRecord(RECORD, FINGERPRINT.of({"bytes": 5, "mtime_ns": 7}))
    assert ResumeRecord.read(_mask(tmp_path / "m.png", (2, 3), stored.png_text())) == \
        ResumeRecord(replace(RECORD, seconds={}), stored.fingerprint)  # the run's timings stay in summary.json
    doc = json.loads(stored.png_text()[RECORD_KEY])
    assert list(doc) == ["input", "outputs", "size", "tiles", "class_share", "scores", "fingerprint"]
    assert doc["fingerprint"] == {"model_sha256": "abc", "alpha": 0.5, "save": ["mask", "overlay", "confidence"],
                                  "legend": False, "tile": "auto", "tile_overlap": 0.25,
                                  "source": {"bytes": 5, "mtime_ns": 7}}


def test_a_mask_of_an_earlier_version_still_resumes(tmp_path: Path) -> None:
    """Masks written before the record had its type: the fingerprint sat before "scores"."""
    old = {"input": "sub/a.jpg", "outputs": {"mask": "sub/a.jpg.mask.png"}, "size": [2, 3], "tiles": 0,
           "seconds": RECORD.seconds, "class_share": RECORD.class_share,
           "fingerprint": FINGERPRINT.of({"bytes": 5, "mtime_ns": 7}), "scores": RECORD.scores}
    stored = ResumeRecord.read(_mask(tmp_path / "m.png", (2, 3), {RECORD_KEY: json.dumps(old)}))
    assert stored == ResumeRecord(replace(RECORD, seconds={}), old["fingerprint"])


@pytest.mark.parametrize(("size", "text"), [
    ((3, 2), ResumeRecord(RECORD, {}).png_text()),  # another size than the mask's
    ((2, 3), None),  # no record
    ((2, 3), {RECORD_KEY: "{not json"}),
    ((2, 3), {RECORD_KEY: "[" * 100_000 + "]" * 100_000}),
    ((2, 3), {RECORD_KEY: json.dumps({**RECORD.to_dict(), "class_share": "half"})}),  # malformed
    ((2, 3), {RECORD_KEY: json.dumps(RECORD.to_dict())}),  # no fingerprint
])
def test_a_record_that_cannot_be_used_is_none(tmp_path: Path, size: tuple[int, int], text: dict | None) -> None:
    assert ResumeRecord.read(_mask(tmp_path / "m.png", size, text)) is None


def test_junk_is_no_record(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert ResumeRecord.read(tmp_path / "junk.png") is None
    assert ResumeRecord.read(tmp_path / "missing.png") is None


def test_complete_needs_every_chosen_file_and_the_same_fingerprint(tmp_path: Path) -> None:
    save(np.zeros((2, 3, 3), np.uint8), tmp_path / "in" / "sub" / "a.jpg")
    out = tmp_path / "out"

    def job(*outputs: str) -> Job:
        return Job("sub/a.jpg", tmp_path / "in" / "sub" / "a.jpg", tmp_path / "in",
                   output_paths(out, Path("sub/a.jpg"), outputs))

    chosen = job("mask", "overlay", "confidence")
    stamp = source_stamp(chosen.source)
    _mask(chosen.outputs.mask, (2, 3), ResumeRecord(RECORD, FINGERPRINT.of(stamp)).png_text())
    assert completed(chosen, FINGERPRINT) is None  # overlay and confidence missing
    write_atomic(chosen.outputs.files["overlay"], b"o")
    assert completed(chosen, FINGERPRINT) is None
    write_atomic(chosen.outputs.files["confidence"], b"c")
    assert completed(chosen, FINGERPRINT) == replace(RECORD, seconds={})
    assert completed(job("mask"), FINGERPRINT) == replace(RECORD, seconds={})
    assert completed(job("mask", "color"), FINGERPRINT) is None
    for other in ({"model_sha256": "other"}, {"alpha": 0.7}, {"save": ("mask", "overlay")}, {"legend": True},
                  {"tile": "off"}, {"tile_overlap": 0.5}):
        assert completed(chosen, Fingerprint(**{**FINGERPRINT.__dict__, **other})) is None, other
    save(np.zeros((2, 3, 3), np.uint8), chosen.source, quality=50)  # the photo replaced
    assert completed(chosen, FINGERPRINT) is None
    chosen.source.unlink()
    assert completed(chosen, FINGERPRINT) is None


def test_sweep_removes_only_temporaries_of_our_outputs(tmp_path: Path) -> None:
    ours = [tmp_path / ".a.jpg.mask.png.k3j_x9a1.tmp", tmp_path / "sub" / ".b.png.overlay.jpg.zz12ab34.tmp",
            tmp_path / ".summary.json.q1w2e3r4.tmp", tmp_path / "sub" / ".c.png.confidence.png.abcd1234.tmp",
            tmp_path / "sub" / ".legend.png.zz12ab34.tmp", tmp_path / ".predictions.shard-1-of-3.json.q1w2e3r4.tmp"]
    theirs = [tmp_path / ".notes.txt.abcdefgh.tmp", tmp_path / "a.jpg.mask.png", tmp_path / "keep.tmp"]
    for p in ours + theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert sorted(resume.sweep_temp_files(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)
    assert resume.sweep_temp_files(tmp_path / "missing") == []

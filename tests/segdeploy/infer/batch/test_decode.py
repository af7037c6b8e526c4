"""The decode stage's memory budget: each image counted by its pixels and outputs before it is decoded, peak
memory following the budget; JPEGs decoded smaller when no output needs the photo itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from colour_models import batch_command, half_image, half_truth, read_png, save, subprocess_env

import segdeploy.infer.batch.decode as decode
from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.decode import BYTES_PER_PIXEL
from segdeploy.infer.batch.outputs import output_paths
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.memory import DECODE_BYTES_PER_PIXEL, model_call_bytes, prediction_bytes
from segdeploy.infer.pipeline import MemoryBudget
from segdeploy.infer.predictor import Predictor


def _run(model: Path, source: Path, out: Path, monkeypatch: pytest.MonkeyPatch, **settings) -> list[int]:
    """run_batch with a spy on the budget: the bytes each image reserved."""
    reserved: list[int] = []
    real = MemoryBudget.reserve

    def spy(self, ticket: int, nbytes: int) -> int:
        taken = real(self, ticket, nbytes)
        reserved.append((nbytes, taken, self.capacity))
        return taken

    monkeypatch.setattr(MemoryBudget, "reserve", spy)
    run_batch(BatchConfig(sources=source, out_dir=out, model=model, workers=2, progress=False, **settings),
              log=lambda m: None)
    return reserved


def test_batch_counts_each_image_by_its_pixels_and_outputs(model: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(6):
        save(half_image(400, 300 + 10 * i, 1), tmp_path / "in" / f"im{i}.png")
    reserved = _run(model, tmp_path / "in", tmp_path / "out", monkeypatch, memory_budget=1)
    per_pixel = DECODE_BYTES_PER_PIXEL["png"] + BYTES_PER_PIXEL["mask"] + BYTES_PER_PIXEL["overlay"]
    spec = Predictor(model).spec
    logits = prediction_bytes(spec, None)  # the colour model stretches photos into its input
    assert sorted(n for n, _, _ in reserved) == [400 * (300 + 10 * i) * per_pixel + logits for i in range(6)]
    room = 2**20 - model_call_bytes(spec, 4)  # the budget less one model call
    assert all(taken == capacity == room for _, taken, capacity in reserved)  # each alone: over the room
    for i in range(6):
        mask = read_png(output_paths(tmp_path / "out", Path(f"im{i}.png")).mask)
        np.testing.assert_array_equal(mask, half_truth(400, 300 + 10 * i, 1))


def test_jpegs_are_decoded_smaller_only_when_no_output_needs_the_photo(model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    save(half_image(600, 800, 1), tmp_path / "in" / "photo.jpg", quality=95)
    asked: list = []
    real_load = decode.load_image
    monkeypatch.setattr(decode, "load_image", lambda path, **kw: asked.append(kw["min_size"]) or real_load(path, **kw))
    reduced = _run(model, tmp_path / "in", tmp_path / "reduced", monkeypatch, save=("mask",), tile="off")
    full = _run(model, tmp_path / "in", tmp_path / "full", monkeypatch, save=("mask", "overlay"), tile="off")
    auto = _run(model, tmp_path / "in", tmp_path / "auto", monkeypatch, save=("mask", "color"))  # as trained
    tiled = _run(model, tmp_path / "in", tmp_path / "tiled", monkeypatch, save=("mask", "color"), tile=64)
    # the model's input size; the overlay needs the photo; stretched as trained; tiles need it too
    assert asked == [(32, 32), None, (32, 32), None]
    # 1/8 scale is still at least 32 x 32: 100 x 75 pixels decoded instead of 800 x 600
    logits = prediction_bytes(Predictor(model).spec, None)
    assert reduced[0][0] == 800 * 600 * BYTES_PER_PIXEL["mask"] + 100 * 75 * DECODE_BYTES_PER_PIXEL["jpeg"] + logits
    assert full[0][0] > reduced[0][0] and auto[0][0] < tiled[0][0]
    small, whole = (read_png(output_paths(tmp_path / d, Path("photo.jpg")).mask) for d in ("reduced", "full"))
    assert small.shape == whole.shape == (600, 800)  # the mask is made at the photo's size all the same
    assert (small == whole).mean() > 0.99 and (small == half_truth(600, 800, 1)).mean() > 0.99


@pytest.mark.slow
def test_peak_memory_follows_the_budget(model: Path, tmp_path: Path) -> None:
    """Twelve 12-megapixel images (tiny PNGs of one colour, 252 MB each in flight): with a 200 MB budget one is
    in flight at a time, with no budget to speak of most of them at once. Peak RSS of a fresh process, with two
    malloc arenas (glibc keeps freed memory in one arena per thread, which blurs the comparison)."""
    for i in range(12):
        save(np.full((3000, 4000, 3), 60 + i, np.uint8), tmp_path / "in" / f"big{i}.png")

    def peak_mb(budget: int) -> float:
        cmd = batch_command(tmp_path / "in", "--out", tmp_path / f"out{budget}", "--model", model, "--no-progress",
                            "--memory-budget", budget, "--workers", "4", "--batch-size", "4", "--tile", "off")
        probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
                 "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        res = subprocess.run([sys.executable, "-c", probe, *map(str, cmd)], env={**subprocess_env(),
                                                                                 "MALLOC_ARENA_MAX": "2"},
                             capture_output=True, text=True, timeout=600)
        code, kib = res.stdout.split()
        assert code == "0", res.stderr
        return int(kib) / 1024

    bounded, unbounded = peak_mb(200), peak_mb(100_000)
    print(f"peak RSS: {bounded:.0f} MB with a 200 MB budget, {unbounded:.0f} MB without")
    assert unbounded - bounded > 400, (bounded, unbounded)

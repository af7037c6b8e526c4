"""The memory budget of the batch pipeline: images in flight are bounded by their pixels, not only by their number;
a large image waits for the others, one larger than the budget runs alone, nothing deadlocks; JPEGs are decoded
smaller when no output needs the photo itself."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import batch_command, half_image, half_truth, read_png, save, subprocess_env

import segdeploy.infer.batch.decode as decode
from segdeploy.cli import main
from segdeploy.infer.batch.config import BatchConfig, default_memory_budget
from segdeploy.infer.batch.decode import BYTES_PER_PIXEL
from segdeploy.infer.batch.outputs import output_paths
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.pipeline import Failure, MemoryBudget, run_pipeline


class Ledger:
    """What the fake stages hold: bytes reserved and not yet finished, and the most ever held at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held, self.peak, self.alone, self.groups = 0, 0, [], []

    def take(self, cost: int, capacity: int) -> None:
        with self.lock:
            if cost > capacity:
                self.alone.append(self.held == 0)
            self.held += min(cost, capacity)
            self.peak = max(self.peak, self.held)

    def give(self, cost: int, capacity: int) -> None:
        with self.lock:
            self.held -= min(cost, capacity)


def run_fake(costs: list[int], capacity: int, batch_size: int, workers: int, seed: int = 0) -> tuple[list, Ledger]:
    """run_pipeline over items that cost `costs` bytes, with random stage times; fails the test on a deadlock."""
    ledger, budget, rng = Ledger(), MemoryBudget(capacity), random.Random(seed)
    delays = [(rng.random() / 500, rng.random() / 500) for _ in costs]

    def load(i: int, reserve) -> tuple[int, int] | Failure:
        if costs[i] < 0:
            return Failure(str(i), "unreadable")  # fails before its header: never reserves
        reserve(costs[i])
        ledger.take(costs[i], capacity)
        time.sleep(delays[i][0])
        return i

    def infer(group: list[int]) -> list[int]:
        ledger.groups.append(len(group))
        return group

    def finish(i: int) -> int:
        time.sleep(delays[i][1])
        ledger.give(costs[i], capacity)
        return i

    out: list = []
    worker = threading.Thread(target=lambda: out.extend(run_pipeline(range(len(costs)), load, infer, finish,
                                                                     batch_size, workers, budget)), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the pipeline deadlocked"
    return out, ledger


@pytest.mark.parametrize("seed", range(4))
def test_bytes_in_flight_never_exceed_the_budget_and_order_is_kept(seed: int) -> None:
    rng = random.Random(seed)
    costs = [rng.choice([1, 2, 3, 5, 8, 9, 10, 25, -1]) for _ in range(60)]  # 25 > the budget, -1 unreadable
    out, ledger = run_fake(costs, capacity=10, batch_size=4, workers=3, seed=seed)
    assert [r for r in out if isinstance(r, int)] == [i for i, c in enumerate(costs) if c >= 0]  # in input order
    assert sorted(int(r.input) for r in out if isinstance(r, Failure)) == [i for i, c in enumerate(costs) if c < 0]
    assert ledger.peak <= 10 and ledger.held == 0
    assert ledger.alone and all(ledger.alone)  # every image larger than the budget ran with nothing else in flight


def test_a_partial_group_goes_to_the_model_when_the_next_image_waits_for_room() -> None:
    # Room for two images, groups of four: without sending partial groups on, the third image would wait
    # for room that the first two hold while they wait for the third.
    out, ledger = run_fake([5] * 9, capacity=10, batch_size=4, workers=2)
    assert out == list(range(9)) and max(ledger.groups) <= 2 and ledger.peak <= 10


def test_stopping_while_an_image_waits_for_room_ends_every_thread() -> None:
    """The model fails (as Ctrl-C would stop it) while the next image waits for room: no thread is left waiting."""
    budget = MemoryBudget(10)

    def load(i: int, reserve) -> int:
        reserve(2 if i == 0 else 8)
        return i

    def infer(group: list[int]) -> list[int]:
        deadline = time.monotonic() + 10
        while group == [1] and budget._starving != 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # image 2 waits for the room image 1 holds
        if group == [1]:
            raise RuntimeError("the model failed")
        return group

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the model failed"):
        list(run_pipeline(range(5), load, infer, lambda i: i, 1, 1, budget))
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    while any(t.name.startswith(("decode", "finish")) for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("decode", "finish"))]


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
    per_pixel = BYTES_PER_PIXEL["photo"] + BYTES_PER_PIXEL["mask"] + BYTES_PER_PIXEL["overlay"]
    assert sorted(n for n, _, _ in reserved) == [400 * (300 + 10 * i) * per_pixel for i in range(6)]
    assert all(taken == capacity == 2**20 for _, taken, capacity in reserved)  # each alone: over a 1 MB budget
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
    auto = _run(model, tmp_path / "in", tmp_path / "auto", monkeypatch, save=("mask", "color"))
    assert asked == [(32, 32), None, None]  # the model's input size; the overlay needs the photo; tiles too
    # 1/8 scale is still at least 32 x 32: 100 x 75 pixels decoded instead of 800 x 600
    assert reduced[0][0] == 800 * 600 * BYTES_PER_PIXEL["mask"] + 100 * 75 * BYTES_PER_PIXEL["photo"]
    assert full[0][0] > reduced[0][0] and auto
    small, whole = (read_png(output_paths(tmp_path / d, Path("photo.jpg")).mask) for d in ("reduced", "full"))
    assert small.shape == whole.shape == (600, 800)  # the mask is made at the photo's size all the same
    assert (small == whole).mean() > 0.99 and (small == half_truth(600, 800, 1)).mean() > 0.99


def test_the_budget_default_lives_in_batch_config_and_the_flag_is_checked(model: Path, tmp_path: Path) -> None:
    assert BatchConfig(sources="x", out_dir=tmp_path, model=model).memory_budget == default_memory_budget() >= 256
    res = CliRunner().invoke(main, ["batch", "x", "--out", str(tmp_path), "--memory-budget", "0"])
    assert res.exit_code == 2 and "'--memory-budget': 0 is not in the range" in res.stderr


@pytest.mark.slow
def test_peak_memory_follows_the_budget(model: Path, tmp_path: Path) -> None:
    """Eight 12-megapixel images (tiny PNGs of one colour, 204 MB each in flight): with a 200 MB budget one is
    in flight at a time, with no budget to speak of most of them at once. Peak RSS of a fresh process, with two
    malloc arenas (glibc keeps freed memory in one arena per thread, which blurs the comparison)."""
    for i in range(8):
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

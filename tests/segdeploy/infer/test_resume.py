"""Interrupt `segdeploy batch` part-way (a real subprocess), rerun it, and check nothing is lost or redone."""

from __future__ import annotations

import json
import signal
import subprocess
import time
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
from segdeploy.infer.batch.outputs import DEFAULT_SAVE, output_paths

N_IMAGES = 30
pytestmark = pytest.mark.slow


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

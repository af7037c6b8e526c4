"""Fuzz: polygon and RLE values decode to a mask or an AnnotationError, never a signal (run in a child process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELPERS = HERE.parent / "helpers"
CODE = Path(__import__("segtrain").__file__).resolve().parents[1]  # the checkout whose code is under test


def test_geometry_never_crashes_pycocotools(tmp_path: Path) -> None:
    progress = tmp_path / "example.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CODE), str(HELPERS)])}
    run = subprocess.run([sys.executable, str(HERE / "geometry_child.py"), str(progress)], env=env,
                         capture_output=True, text=True, timeout=900)
    last = progress.read_text(encoding="utf-8") if progress.exists() else "(none)"
    assert run.returncode == 0, (f"exit {run.returncode} (a negative code is a signal); last example (h, w, "
                                 f"segmentation, bbox): {last[:2000]}\n{run.stderr[-3000:]}")
    assert run.stdout.strip().endswith("ok")

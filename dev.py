#!/usr/bin/env python3
"""Set up a local virtual environment and run the offline demo or the tests.

    python3 dev.py demo    # synthetic data -> train SegNet and DeepLabV3 briefly -> ONNX -> batch predictions
    python3 dev.py test    # the test suite (what CI runs)

The environment lives in .venv/ and is reused: it is reinstalled only when pyproject.toml changes.
Needs nothing but Python 3.10+.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
DEMO = ROOT / "demo"
CONSTRAINTS = ROOT / "constraints-dev.txt"  # one known-good set of the cloud/ray/dev packages (no pip backtracking)


def run(*args: str | Path, **kwargs) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT, **kwargs)


def ensure_venv() -> None:
    """Create .venv and install the project with every extra (train, openvino, cloud, ray, dev), once per
    pyproject.toml."""
    if sys.version_info < (3, 10):  # noqa: UP036  (this file runs on any python3 to say so)
        sys.exit(f"Python 3.10 or newer is needed, this is {sys.version.split()[0]}")
    stamp = VENV / ".segtrain-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + CONSTRAINTS.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == want and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", ".[train,openvino,cloud,ray,dev]", "-c", CONSTRAINTS)
    stamp.write_text(want)


def tool(name: str) -> Path:
    return BIN / (f"{name}.exe" if os.name == "nt" else name)


def demo() -> None:
    """Everything offline on the embedded synthetic dataset, small enough for a laptop CPU."""
    data, runs, exported = DEMO / "data", DEMO / "runs", DEMO / "exported"
    run(tool("segtrain"), "sample-data", data)
    run(tool("segtrain"), "data", data)
    common = ["--data", data, "--image-size", "64", "--batch-size", "8", "--lr", "1e-3",
              "--encoder-weights", "none", "--device", "auto", "--seed", "0", "--exist-ok"]  # a rerun redoes the demo
    run(tool("segtrain"), "fit", "segnet", "--epochs", "4", "--out", runs / "segnet", *common)
    run(tool("segtrain"), "fit", "deeplab", "--encoder", "resnet18", "--epochs", "6",
        "--out", runs / "deeplab", *common)
    run(tool("segtrain"), "evaluate", runs / "segnet" / "best_model.pth", "--data", data, "--split", "test")
    run(tool("segdeploy"), "export", runs / "segnet" / "best_model.pth", runs / "deeplab" / "best_model.pth",
        "--out", exported, "--data", data, "--overwrite")
    run(tool("segdeploy"), "info", exported / "segnet.onnx")
    run(tool("segdeploy"), "evaluate", exported / "deeplab.onnx", "--data", data, "--split", "test")
    run(tool("segdeploy"), "batch", data / "test" / "data", "--out", DEMO / "preds",
        "--model", exported / "segnet.onnx")
    print(f"\ndemo finished: training runs in {runs}, ONNX models in {exported}, predictions in {DEMO / 'preds'}")


def test(extra: list[str]) -> None:
    run(PYTHON, "-m", "ruff", "check", ".")
    run(PYTHON, "-m", "pytest", *extra)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        sys.exit(__doc__)
    ensure_venv()
    try:
        demo() if sys.argv[1] == "demo" else test(sys.argv[2:])
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)


if __name__ == "__main__":
    main()

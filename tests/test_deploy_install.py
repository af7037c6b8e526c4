"""The deploy-only install: `pip install segtrain` without extras is torch-free, small, and runs inference.

A fresh virtual environment gets the project with its base dependencies only (pip takes the wheels
from its cache or the configured wheel folders, as it did for the dev environment). In it
`segdeploy batch`, `info` and `bench` on an .onnx file work, PyTorch cannot be imported, and the
commands that need training or export say in one line which extra to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
from colour_models import build_colour_model, expected_mask, half_image, read_png, save

REPO = Path(__file__).resolve().parents[1]
SIZE_LIMIT = 2**30  # the target: under 1 GB on disk


def tree_bytes(root: Path) -> int:
    """What `du` counts, roughly: the size of every regular file under `root` (links not followed)."""
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def deploy_env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A venv with `pip install <project>` (no extras), from a copy of the sources (no build/ left in the repo)."""
    tmp = tmp_path_factory.mktemp("deploy")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("segtrain", "segdeploy"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(root)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    install = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", str(src)],
                             capture_output=True, text=True, env=env, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    return {"root": root, "bin": root / "bin", "env": {**env, "PYTHONUNBUFFERED": "1"}, "tmp": tmp}


def run(env: dict, tool: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(env["bin"] / tool), *map(str, args)], capture_output=True, text=True,
                          env=env["env"], cwd=cwd or env["tmp"], timeout=300)


@pytest.mark.slow
def test_deploy_install_has_no_torch_and_is_small(deploy_env: dict) -> None:
    probe = run(deploy_env, "python", "-c", "import importlib.util as u; print([m for m in ('torch', 'torchvision', "
                "'albumentations', 'matplotlib', 'onnxscript', 'openvino', 'segmentation_models_pytorch', 'ray', "
                "'s3fs', 'upath') "
                "if u.find_spec(m)])")
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    torch = run(deploy_env, "python", "-c", "import torch")
    assert torch.returncode == 1 and "No module named 'torch'" in torch.stderr
    size = tree_bytes(deploy_env["root"])
    print(f"deploy-only venv: {size / 2**20:.0f} MiB")
    assert size < SIZE_LIMIT, f"{size / 2**20:.0f} MiB"


@pytest.mark.slow
def test_segdeploy_batch_runs_in_the_deploy_install(deploy_env: dict) -> None:
    tmp = deploy_env["tmp"]
    model = build_colour_model(tmp / "colour.onnx")
    images = {"a.png": half_image(40, 64, 0), "sub/b.jpg": half_image(90, 142, 1)}
    for name, image in images.items():
        save(image, tmp / "photos" / name, **({"quality": 100} if name.endswith(".jpg") else {}))
    result = run(deploy_env, "segdeploy", "batch", tmp / "photos", "--out", tmp / "preds", "--model", model,
                 "--threads", "1", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 images segmented" in result.stdout and "[auto: OpenVINO is not installed]" in result.stdout
    for name, image in images.items():
        mask = read_png(tmp / "preds" / f"{name}.mask.png")
        assert mask.shape == image.shape[:2]
        assert (mask == expected_mask(image)).mean() > 0.99
    summary = json.loads((tmp / "preds" / "summary.json").read_text())
    assert summary["runtime"]["used"] == "onnxruntime" and summary["provider"] == "CPUExecutionProvider"
    info = run(deploy_env, "segdeploy", "info", model, "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["spec"]["classes"] == ["background", "red", "green"]


@pytest.mark.slow
def test_bench_on_an_onnx_file_runs_without_torch(deploy_env: dict) -> None:
    tmp = deploy_env["tmp"]
    model = build_colour_model(tmp / "bench" / "colour.onnx")
    result = run(deploy_env, "segdeploy", "bench", model, "--batch-sizes", "1", "--runs", "2", "--warmup", "1",
                 "--threads", "1", "--sgemm-size", "64", "--no-accuracy", "--json", tmp / "bench" / "out.json")
    assert result.returncode == 0, result.stdout + result.stderr
    (doc,) = json.loads((tmp / "bench" / "out.json").read_text())["models"]
    statuses = {e["backend"]: e["status"] for e in doc["backends"]}
    assert statuses["ort-fp32"] == "ok" and statuses["torch"] == "skipped" and statuses["ov-fp32"] == "skipped"
    assert [r["library"] for r in doc["sgemm"]["libraries"]] == ["onnxruntime MatMul"]
    assert not (tmp / "bench" / "out.png").exists()  # no matplotlib: no default plot


@pytest.mark.slow
@pytest.mark.parametrize(("tool", "args", "extra"), [
    ("segtrain", ["fit", "deeplab", "--data", "data"], "train"),
    ("segtrain", ["evaluate", "model.pth"], "train"),
    ("segdeploy", ["export", "model.pth"], "train"),
    ("segdeploy", ["bench", "model.pth"], "train"),
    ("segdeploy", ["bench", "colour.onnx", "--plot", "p.png"], "train"),
    ("segdeploy", ["batch", "photos", "--out", "o", "--model", "colour.onnx", "--runtime", "openvino"], "openvino"),
    ("segdeploy", ["batch", "s3://bucket/photos/", "--out", "o", "--model", "colour.onnx"], "cloud"),
    ("segdeploy", ["batch", "photos", "--out", "s3://bucket/preds/", "--model", "colour.onnx"], "cloud"),
    ("segdeploy", ["batch", "photos", "--out", "o", "--model", "colour.onnx", "--engine", "ray"], "ray"),
])
def test_what_needs_an_extra_says_which_in_one_line(deploy_env: dict, tool: str, args: list[str],
                                                    extra: str) -> None:
    tmp = deploy_env["tmp"]
    (tmp / "model.pth").write_bytes(b"\0" * 16)
    build_colour_model(tmp / "colour.onnx")
    save(np.zeros((8, 8, 3), np.uint8), tmp / "photos" / "x.png")
    result = run(deploy_env, tool, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and f'pip install "segtrain[{extra}]"' in lines[0], lines
    assert lines[0].startswith("Error: ") and "Traceback" not in result.stderr

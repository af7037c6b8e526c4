"""`segtrain fit --compile`: torch.compile for training and validation, refused in one line where it cannot work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.loop import fit

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("tiny") / "data", seed=1,
                               sizes={"train": 4, "validation": 2, "test": 2})


def fit_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segtrain", "fit", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("aux_loss", [0.0, 0.5])  # with --aux-loss the compiled module is the model and its head
def test_compiled_run_trains_and_writes_plain_checkpoints(tiny, tmp_path, monkeypatch, aux_loss):
    from tiny_arch import register_tiny, tiny_config

    register_tiny(monkeypatch)
    lines: list[str] = []
    result = fit(tiny_config(tiny, tmp_path / "run", epochs=1, compile=True, aux_loss=aux_loss), log=lines.append)
    assert result.best_epoch == 1 and any("compiled" in line for line in lines)
    for name in ("best_model.pth", "last.pth"):
        raw = torch.load(tmp_path / "run" / name, weights_only=True)
        assert raw["config"]["compile"] is True
        assert raw["model"] and not [k for k in raw["model"] if "_orig_mod" in k], name
    assert bool(aux_loss) == ("aux_head" in torch.load(tmp_path / "run" / "last.pth", weights_only=True))
    from segtrain.models import load_model

    load_model(tmp_path / "run" / "best_model.pth")  # strict load into a plain model


@pytest.mark.slow
def test_compile_without_a_working_compiler_is_one_line_and_writes_nothing(tiny, tmp_path):
    out = tmp_path / "run"
    # No C++ compiler for Inductor, and a fresh kernel cache so nothing built earlier is reused.
    env = {"CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    res = fit_cli(["deeplab", "--data", str(tiny), "--out", str(out), "--epochs", "1", "--image-size", "32",
                   "--encoder", "resnet18", "--encoder-weights", "none", "--workers", "0", "--device", "cpu",
                   "--compile"], env)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: --compile: torch.compile cannot build code for cpu")
    assert "C++ compiler" in errors[0] and "run without --compile" in errors[0] and "Traceback" not in res.stderr
    assert not out.exists()

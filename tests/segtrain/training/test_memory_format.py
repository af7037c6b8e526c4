"""Memory format: channels_last on CUDA (chosen in precision.py) changes a layout, never the numbers or the files.

No GPU here, so the channels_last path runs on CPU (CPU_MEMORY_FORMAT patched): a checkpoint written
from a channels_last model holds contiguous tensors, loads into a plain model anywhere, resumes in
either format, exports with parity, and trains to the same losses as NCHW.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import segtrain.training.precision as precision_mod
from segdeploy.export.exporter import ExportConfig, export_checkpoint
from segtrain.data.synthetic import make_sample_dataset
from segtrain.models import build_model, load_model
from segtrain.training.config import TrainConfig
from segtrain.training.loop import fit
from segtrain.training.precision import choose_precision, portable_state_dict


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("tiny") / "data", seed=1,
                               sizes={"train": 8, "validation": 4, "test": 2})


def cfg(data: Path, out: Path, epochs: int = 1) -> TrainConfig:
    return TrainConfig(model="deeplab", data=str(data), out=str(out), epochs=epochs, batch_size=4, image_size=64,
                       encoder="resnet18", encoder_weights="none", workers=0, seed=0, progress="off")


def losses(run: Path) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


@pytest.mark.filterwarnings("ignore::UserWarning")  # GradScaler on a machine without CUDA
def test_cuda_trains_channels_last_with_tf32_and_cpu_keeps_its_measured_format():
    cuda = choose_precision(torch.device("cuda"), None)
    assert cuda.memory_format == torch.channels_last and cuda.dtype == torch.float16 and "channels_last" in cuda.name
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert choose_precision(torch.device("cpu"), None).memory_format == precision_mod.CPU_MEMORY_FORMAT


def test_precision_moves_model_and_batch_into_its_format():
    p = choose_precision(torch.device("cpu"), None)
    p.memory_format = torch.channels_last
    conv = p.model(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    x = p.batch(torch.randn(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    state = portable_state_dict(conv)
    assert all(v.is_contiguous() for v in state.values())
    torch.testing.assert_close(state["weight"], conv.weight.detach())


@pytest.mark.slow
def test_channels_last_run_writes_portable_checkpoints_that_resume_and_export(tiny, tmp_path, monkeypatch):
    fit(cfg(tiny, tmp_path / "nchw", epochs=2), log=lambda s: None)
    monkeypatch.setattr(precision_mod, "CPU_MEMORY_FORMAT", torch.channels_last)
    logged: list[str] = []
    fit(cfg(tiny, tmp_path / "cl"), log=logged.append)
    assert any("channels_last" in line for line in logged)  # the run says which format it trains in
    raw = torch.load(tmp_path / "cl" / "last.pth", weights_only=True)
    four_d = [v for v in raw["model"].values() if v.dim() == 4]
    assert four_d and all(v.is_contiguous() for v in raw["model"].values())

    # Loads into a plain NCHW model and gives what the channels_last model gives.
    plain, ckpt = load_model(tmp_path / "cl" / "last.pth")
    assert all(p.is_contiguous() for p in plain.parameters())
    twin = build_model(ckpt.spec, encoder_weights="none").to(memory_format=torch.channels_last).eval()
    twin.load_state_dict(raw["model"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(twin(x.contiguous(memory_format=torch.channels_last)), plain(x),
                                   rtol=1e-4, atol=1e-5)

    # Resumed in NCHW (another machine) and in channels_last, it continues; the losses are NCHW's.
    monkeypatch.setattr(precision_mod, "CPU_MEMORY_FORMAT", torch.contiguous_format)
    fit(cfg(tiny, tmp_path / "cl", epochs=2), resume=tmp_path / "cl" / "last.pth", log=lambda s: None)
    assert losses(tmp_path / "cl") == pytest.approx(losses(tmp_path / "nchw"), rel=1e-3)

    export_checkpoint(tmp_path / "cl" / "best_model.pth", ExportConfig(out=tmp_path / "exported", verify_images=4),
                      echo=lambda _: None)  # verification (parity with PyTorch) raises when it fails
    assert (tmp_path / "exported" / "cl.onnx").is_file()


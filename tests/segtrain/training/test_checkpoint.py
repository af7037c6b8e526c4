"""The Checkpoint type: save/load round trip, what a best and a last checkpoint hold, the data-root rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segtrain.common.errors import InputError
from segtrain.contract import build_spec
from segtrain.data.coco import DataError
from segtrain.training.checkpoint import Checkpoint, CheckpointError, TrainingState


def small(config: dict | None = None, training: TrainingState | None = None) -> Checkpoint:
    spec = build_spec("deeplab", "resnet18", image_size=64)
    return Checkpoint(spec=spec, model={"w": torch.arange(6.0).reshape(2, 3)}, config=config or {}, epoch=2,
                      metrics={"miou": 0.5}, training=training)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    training = TrainingState(optimizer={"state": {}}, scaler={}, rng={"torch": torch.zeros(3)}, history=[{"a": 1}],
                             best_miou=0.5)
    saved = small({"data": "/x", "lr": 1e-4}, training)
    saved.save(tmp_path / "last.pth")
    loaded = Checkpoint.load(tmp_path / "last.pth")
    assert loaded.spec == saved.spec and loaded.epoch == 2 and loaded.miou == 0.5
    assert loaded.config == {"data": "/x", "lr": 1e-4} and loaded.path == tmp_path / "last.pth"
    torch.testing.assert_close(loaded.model["w"], saved.model["w"])
    assert loaded.resumable and loaded.training.history == [{"a": 1}] and loaded.training.missing() == []
    assert not small().resumable and small().training is None
    raw = torch.load(tmp_path / "last.pth", weights_only=True)  # plain values: loads without our code
    assert raw["format"] == "segtrain-checkpoint" and raw["version"] == 1 and raw["best_miou"] == 0.5


def test_sha256_is_the_file_hash(tmp_path: Path) -> None:
    import hashlib

    ckpt = small()
    with pytest.raises(ValueError):
        ckpt.sha256()
    ckpt.save(tmp_path / "a.pth")
    assert ckpt.sha256() == hashlib.sha256((tmp_path / "a.pth").read_bytes()).hexdigest()


def test_data_root_one_rule(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    ckpt = small({"data": str(data)})
    ckpt.save(tmp_path / "best_model.pth")
    assert ckpt.data_root() == data
    other = tmp_path / "other"
    other.mkdir()
    assert ckpt.data_root(other) == other  # --data wins
    with pytest.raises(DataError, match=r"missing: dataset folder not found \(given with --data\)"):
        ckpt.data_root(tmp_path / "missing")
    data.rmdir()
    with pytest.raises(DataError) as err:
        ckpt.data_root()
    assert f"recorded in {tmp_path / 'best_model.pth'}" in str(err.value) and "pass --data DIR" in str(err.value)
    with pytest.raises(DataError, match="records no dataset; evaluation needs --data DIR"):
        small().data_root(purpose="evaluation")
    assert isinstance(err.value, InputError)


def test_malformed_files_are_checkpoint_errors(tmp_path: Path) -> None:
    torch.save({"format": "segtrain-checkpoint", "version": 1, "model": {}, "spec": {"arch": "x"}}, tmp_path / "a.pth")
    torch.save({"format": "segtrain-checkpoint", "version": 7}, tmp_path / "b.pth")
    for name, message in (("a.pth", "invalid model spec"), ("b.pth", "version 7 is not supported")):
        with pytest.raises(CheckpointError, match=message):
            Checkpoint.load(tmp_path / name)

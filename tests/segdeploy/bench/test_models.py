"""What `segdeploy bench` runs on when no MODEL is given."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_default_models_prefer_checkpoints_then_fp32_exports(tmp_path: Path) -> None:
    from segdeploy.bench.config import BenchInputError
    from segdeploy.bench.models import default_models

    runs, exported = tmp_path / "runs", tmp_path / "exported"
    for name in ("a.onnx", "a.int8.onnx", "a.fp16.onnx", "b.onnx"):
        (exported / name).parent.mkdir(parents=True, exist_ok=True)
        (exported / name).write_bytes(b"")
    assert default_models(runs, exported) == [exported / "a.onnx", exported / "b.onnx"]
    (runs / "deeplab").mkdir(parents=True)
    (runs / "deeplab" / "best_model.pth").write_bytes(b"")
    assert default_models(runs, exported) == [runs / "deeplab" / "best_model.pth"]
    with pytest.raises(BenchInputError, match="no MODEL given"):
        default_models(tmp_path / "none", tmp_path / "none")

"""`segdeploy export` never replaces an exported model by accident: up to date is kept, another checkpoint's
file needs --overwrite, and the refusal comes before any work."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_arch import make_tiny_checkpoint, tiny_registered

from segdeploy.cli import main
from segdeploy.infer.runtime import read_model_metadata
from segtrain.common.files import file_sha256


@pytest.fixture(autouse=True)
def _tiny():
    with tiny_registered():
        yield


def export(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["export", *args, "--verify-images", "2", "--calibration-images", "2"])
    return result.exit_code, result.output.strip().splitlines()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_up_to_date_is_kept_another_checkpoint_is_refused_overwrite_replaces(tmp_path: Path,
                                                                             sample_root: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "runs" / "tiny" / "best_model.pth", sample_root)
    out = tmp_path / "exported"
    onnx_path = out / "tiny.onnx"
    code, lines = export(str(ckpt), "--out", str(out))
    assert code == 0 and onnx_path.is_file(), lines
    first, stamp = digest(onnx_path), onnx_path.stat().st_mtime_ns

    code, lines = export(str(ckpt), "--out", str(out))
    assert code == 0 and lines == [f"{onnx_path} is up to date (exported from {ckpt}, sha256 "
                                   f"{file_sha256(ckpt)[:12]}); kept (--overwrite exports it again)"]
    assert digest(onnx_path) == first and onnx_path.stat().st_mtime_ns == stamp

    old_sha = read_model_metadata(onnx_path).provenance.checkpoint_sha256
    make_tiny_checkpoint(ckpt, sample_root, seed=1)  # a new run in the same folder: other weights
    code, lines = export(str(ckpt), "--out", str(out))
    assert code == 2 and lines == [f"Error: {onnx_path}: exists and was exported from another checkpoint "
                                   f"(best_model.pth, sha256 {old_sha[:12]}); "
                                   "pass --overwrite to replace it, or choose another --out"]
    assert digest(onnx_path) == first

    code, lines = export(str(ckpt), "--out", str(out), "--overwrite")
    assert code == 0 and lines[-1].startswith(f"wrote {onnx_path}")
    assert read_model_metadata(onnx_path).provenance.checkpoint_sha256 == file_sha256(ckpt)


def test_variants_of_an_up_to_date_model_are_added_and_then_kept(tmp_path: Path, sample_root: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "runs" / "tiny" / "best_model.pth", sample_root)
    out = tmp_path / "exported"
    assert export(str(ckpt), "--out", str(out))[0] == 0
    fp32 = digest(out / "tiny.onnx")
    gate = ("--int8-min-agreement", "0", "--int8-max-drop", "100")  # a random tiny model: the gate is not the point
    code, lines = export(str(ckpt), "--out", str(out), "--int8", *gate)
    assert code == 0 and (out / "tiny.int8.onnx").is_file(), lines
    assert lines[0].startswith(f"{out / 'tiny.onnx'} is up to date") and digest(out / "tiny.onnx") == fp32
    int8 = digest(out / "tiny.int8.onnx")
    code, lines = export(str(ckpt), "--out", str(out), "--int8", *gate)
    assert code == 0 and len(lines) == 2 and all("is up to date" in line for line in lines), lines
    assert digest(out / "tiny.int8.onnx") == int8


def test_a_file_that_is_not_an_export_is_refused(tmp_path: Path, sample_root: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "runs" / "tiny" / "best_model.pth", sample_root)
    out = tmp_path / "exported"
    out.mkdir()
    (out / "tiny.onnx").write_bytes(b"precious, not ours")
    code, lines = export(str(ckpt), "--out", str(out))
    assert code == 2 and lines == [f"Error: {out / 'tiny.onnx'}: exists and is not an export of this checkpoint; "
                                   "pass --overwrite to replace it, or choose another --out"]
    assert (out / "tiny.onnx").read_bytes() == b"precious, not ours"

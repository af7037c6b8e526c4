"""A killed export leaves a model-sized temporary file; the next export into that folder removes it (and only it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

CODE = Path(__import__("segdeploy").__file__).resolve().parents[1]  # the checkout whose code is under test

# A process that stages a model and an INT8 working folder the way an export does, then dies by SIGKILL.
KILLED_EXPORT = """
import os, signal, sys
from pathlib import Path
from segdeploy.export.artifact import quantize_workdir, staging
out = Path(sys.argv[1])
with staging(out / "tiny.onnx") as tmp:
    tmp.write_bytes(b"half a model" * 1000)
    work = quantize_workdir(out / "tiny.int8.onnx")
    (Path(work.name) / "prepared.onnx").write_bytes(b"x")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_export(out: Path) -> set[str]:
    """Run KILLED_EXPORT against `out`; the names it left behind."""
    before = set(os.listdir(out))
    run = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(out)], env={**os.environ, "PYTHONPATH": str(CODE)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, run.stderr
    return set(os.listdir(out)) - before


def test_the_next_export_removes_what_a_killed_export_left(tmp_path: Path, sample_root: Path) -> None:
    from tiny_arch import make_tiny_checkpoint, tiny_registered

    from segdeploy.cli import main
    from segtrain.common.files import owner_tag

    out = tmp_path / "exported"
    out.mkdir()
    left = killed_export(out)
    staged = [n for n in left if n.startswith(".tiny.onnx.") and n.endswith(".tmp")]
    assert len(staged) == 1 and (out / staged[0]).stat().st_size == 12_000
    assert len([n for n in left if n.startswith(".quantize.") and (out / n).is_dir()]) == 1
    # What others are writing right now stays: this process's own temporary, and one from another machine.
    mine = out / f".other.onnx.{owner_tag()}.abcdefgh.tmp"
    elsewhere = out / ".other.onnx.sd-000000000000-1-12345678.abcdefgh.tmp"
    untagged_old = out / ".old.onnx.k3j2x9ab.tmp"  # written before names carried their writer
    unrelated = out / ".notes.txt.abcdefgh.tmp"
    for path in (mine, elsewhere, untagged_old, unrelated):
        path.write_bytes(b"x")
    (out / ".quantize.k3j2x9ab").mkdir()  # an INT8 working folder from before names carried their writer
    with tiny_registered():
        ckpt = make_tiny_checkpoint(tmp_path / "tiny.pth", sample_root)
        res = CliRunner().invoke(main, ["export", str(ckpt), "--out", str(out), "--no-verify"])
    assert res.exit_code == 0, res.output
    remaining = set(os.listdir(out))
    assert not (left & remaining), left & remaining
    assert not untagged_old.exists() and not (out / ".quantize.k3j2x9ab").exists()
    assert {mine.name, elsewhere.name, unrelated.name, "tiny.onnx"} <= remaining


def test_a_writer_elsewhere_is_taken_for_gone_after_a_day(tmp_path: Path) -> None:
    from segdeploy.export.artifact import prepare_out_dir

    elsewhere = tmp_path / ".m.onnx.sd-000000000000-1-12345678.abcdefgh.tmp"
    report = tmp_path / ".m.verify.json.sd-000000000000-1-12345678.abcdefgh.tmp"
    for path in (elsewhere, report):
        path.write_bytes(b"x")
    assert prepare_out_dir(tmp_path) == []
    old = time.time() - 25 * 3600
    os.utime(elsewhere, (old, old))
    assert prepare_out_dir(tmp_path) == [elsewhere] and report.exists()

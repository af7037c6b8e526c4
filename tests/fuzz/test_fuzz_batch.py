"""Fuzz: `segdeploy batch` over folders of hostile file names (any bytes but '/' and NUL, not UTF-8, very long)
and file kinds (broken images, FIFOs, symlink loops, dangling links, folders named like images), and with any
--save, --tile, --shard text: exit 0, 2 or 3, never a traceback or a hang; summary.json is strict UTF-8 JSON that
accounts for every input (done, or named with a reason); a rerun redoes nothing.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from colour_models import build_colour_model, half_image
from fuzzing import assert_ended_well, budget
from hypothesis import given
from hypothesis import strategies as st
from json_edit import strict_json
from PIL import Image

from segdeploy.cli import main
from segdeploy.infer.batch.shards import shard_of
from segtrain.data.images import IMAGE_SUFFIXES


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(half_image(12, 16, 1)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(half_image(16, 12, 0)).save(buf, "JPEG")
    return buf.getvalue()


PNG, JPEG = _png(), _jpeg()
GOOD_KINDS = ("png", "jpeg", "link")  # inputs that must be done
KINDS = (*GOOD_KINDS, "empty", "truncated", "text", "fifo", "dangling", "loop", "folder")
SUFFIXES = [s.encode() for s in IMAGE_SUFFIXES] + [b".JPG", b".Png", b".txt", b""]
NAME_BYTES = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_"))
NAMES = st.tuples(NAME_BYTES | st.sampled_from([b"\xff", b"caf\xe9", b"a\nb", b"-x", b" ", b"\x1b[31m", b"x" * 240]),
                  st.sampled_from(SUFFIXES)).map(lambda p: p[0] + p[1]).filter(lambda n: n not in (b".", b".."))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_model(tmp_path_factory.mktemp("fuzz-batch") / "colour.onnx")


def make(folder: Path, name: bytes, kind: str) -> None:
    path = os.path.join(os.fsencode(folder), name)
    if len(name) > 250:  # beyond a file name's 255 bytes once a suffix is added: a folder with a short image
        os.mkdir(path)
        path = os.path.join(path, b"in.png")
    contents = {"png": PNG, "jpeg": JPEG, "empty": b"", "truncated": PNG[: len(PNG) // 2], "text": b"hello"}
    if kind in contents:
        with open(path, "wb") as f:
            f.write(contents[kind])
    elif kind == "link":
        with open(os.path.join(os.fsencode(folder), b"target-of-links.bin"), "wb") as f:
            f.write(PNG)
        os.symlink(b"target-of-links.bin", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dangling":
        os.symlink(b"nowhere-at-all", path)
    elif kind == "loop":
        os.symlink(os.path.basename(path), path)
    else:  # a folder named like an image, with an image in it
        os.mkdir(path)
        with open(os.path.join(path, b"inner.png"), "wb") as f:
            f.write(PNG)


def invoke(args: list[str], fifos_in: Path, seconds: float = 60) -> Result:
    """CliRunner.invoke in a thread; a run blocked on a FIFO fails the test instead of hanging it."""
    out: list[Result] = []
    worker = threading.Thread(target=lambda: out.append(CliRunner().invoke(main, args)), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        for fifo in (p for p in fifos_in.rglob("*") if p.is_fifo()):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"segdeploy {' '.join(args)} blocked for {seconds} s")
    return out[0]


@given(entries=st.lists(st.tuples(NAMES, st.sampled_from(KINDS)), min_size=1, max_size=5,
                        unique_by=lambda e: e[0].lower()))
@budget(25)
def test_hostile_names_and_kinds(tmp_path_factory, model: Path, entries: list[tuple[bytes, str]]) -> None:
    work = tmp_path_factory.mktemp("fuzz-batch-run")
    inputs, out = work / "in", work / "out"
    inputs.mkdir()
    for name, kind in entries:
        make(inputs, name, kind)
    args = ["batch", str(inputs), "--out", str(out), "--model", str(model), "--no-progress", "--save", "mask,rle"]
    result = invoke(args, inputs)
    assert_ended_well(result)
    if result.exit_code == 2:  # nothing that looks like an image: a one-line usage error
        assert not any(kind in GOOD_KINDS or kind == "folder" for name, kind in entries
                       if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES), result.output
        return
    summary = strict_json(out / "summary.json")
    done, failed = [r["input"] for r in summary["images"]], [f["input"] for f in summary["failures"]]
    assert len(done) + len(failed) == summary["totals"]["images_found"] and not set(done) & set(failed)
    assert all(f["reason"] for f in summary["failures"]) and (result.exit_code == 3) == bool(failed)
    good = sum(kind in GOOD_KINDS or kind == "folder" for name, kind in entries
               if kind == "folder" or os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES)
    assert len(done) >= good  # every readable image was done (a folder's inner image included)
    for key in done + failed:
        shard_of(key, 3)  # every key hashes, as --shard and merge-summary need
    strict_json(out / "predictions.json")
    again = invoke(args, inputs)
    assert again.exit_code == result.exit_code and f"0 images segmented, {len(done)} already done" in again.output
    shutil.rmtree(work)


TEXT = st.text(max_size=12) | st.sampled_from(["", ",", "mask,,rle", "0/0", "1/1", "auto/0", "-1", "off", "auto",
                                                "1e9", "nan", "99999999999999999999", "0", "31", "32", "mask\n"])


@given(option=st.sampled_from(["--save", "--tile", "--shard"]), value=TEXT)
@budget(40)
def test_text_option_values(tmp_path_factory, model: Path, option: str, value: str) -> None:
    work = tmp_path_factory.getbasetemp() / "fuzz-batch-options"
    if not (work / "in").is_dir():
        (work / "in").mkdir(parents=True)
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(work / "in" / "a.png")
    shutil.rmtree(work / "out", ignore_errors=True)
    result = invoke(["batch", str(work / "in"), "--out", str(work / "out"), "--model", str(model), "--no-progress",
                     option, value], work / "in")
    assert_ended_well(result, allowed=(0, 2))  # a failure's last line is "Error: <one line>"
    if result.exit_code == 2:
        assert not (work / "out").exists()  # refused before any work

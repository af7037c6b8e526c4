"""Hostile paths at the command line: a FIFO, a file where a folder belongs, names with newlines: one line, exit 2."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from segtrain.cli import main


def invoke_with_deadline(args: list[str], fifo: Path, seconds: float = 60, cli=main) -> Result:
    """CliRunner.invoke in a thread; fails the test instead of hanging when the command blocks on `fifo`."""
    out: list[Result] = []
    worker = threading.Thread(target=lambda: out.append(CliRunner().invoke(cli, args)), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the stuck reader gets end-of-file and ends
        pytest.fail(f"{cli.name} {' '.join(args)} blocked for {seconds} s on a FIFO")
    return out[0]


def test_fit_refuses_a_fifo_as_config_file(tmp_path: Path) -> None:
    fifo = tmp_path / "settings.yaml"
    os.mkfifo(fifo)
    res = invoke_with_deadline(["fit", "deeplab", "--config", str(fifo), "--data", str(tmp_path)], fifo)
    assert res.exit_code == 2 and res.stderr.strip() == f"Error: {fifo}: not a regular file (a FIFO)"


@pytest.mark.parametrize(("cli", "args"), [("segtrain", ["evaluate", "{fifo}"]), ("segdeploy", ["info", "{fifo}"]),
                                           ("segdeploy", ["evaluate", "{fifo}", "--data", "{tmp}"])])
def test_a_fifo_as_checkpoint_or_model_is_not_a_regular_file(tmp_path: Path, cli: str, args: list[str]) -> None:
    from segdeploy.cli import main as segdeploy

    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    res = invoke_with_deadline([a.format(fifo=fifo, tmp=tmp_path) for a in args], fifo,
                               cli=segdeploy if cli == "segdeploy" else main)
    assert res.exit_code == 2 and res.stderr.strip() == f"Error: {fifo}: not a regular file"


@pytest.mark.parametrize("kind", ["file", "missing parent"])
def test_sample_data_where_no_folder_can_be(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    root = target if kind == "file" else target / "sub"
    res = CliRunner().invoke(main, ["sample-data", str(root)])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().startswith(f"Error: {root}: cannot write a dataset there (")
    assert len(res.stderr.strip().splitlines()) == 1


def test_names_with_newlines_stay_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "train" / "data").mkdir(parents=True)
    Image.new("RGB", (6, 4)).save(tmp_path / "train" / "data" / "a.png")
    labels = {"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 6},
                         {"id": 2, "file_name": "evil\nname.png", "height": 4, "width": 6}],
              "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "train" / "labels.json").write_text(json.dumps(labels))
    res = CliRunner().invoke(main, ["data", str(tmp_path)])
    assert res.exit_code == 0, res.output
    problem = [line for line in res.stdout.splitlines() if "evil" in line]
    assert len(problem) == 1 and problem[0].endswith("evil\\nname.png: image file missing, skipped")
    missing = tmp_path / "no\nsuch"
    res = CliRunner().invoke(main, ["data", str(missing)])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        f"Error: {tmp_path}/no\\nsuch: dataset folder not found"]


def test_a_file_or_fifo_where_a_folder_belongs_is_named_as_such(tmp_path: Path) -> None:
    """Not "folder not found": the path exists but is the wrong kind (one check, common.files.folder_problem)."""
    from segdeploy.cli import main as segdeploy

    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    cases = [
        (main, ["data", "{tmp}/photo.jpg"], "{tmp}/photo.jpg: not a folder (a file)"),
        (main, ["data", "{tmp}/pipe"], "{tmp}/pipe: not a folder (a FIFO)"),
        (main, ["data", "{tmp}/gone"], "{tmp}/gone: dataset folder not found (dangling symlink)"),
        (main, ["fit", "deeplab", "--data", "{tmp}/pipe"], "{tmp}/pipe: not a folder (a FIFO) (pass --data DIR)"),
        (segdeploy, ["bench", "m.onnx", "--photos", "{tmp}/photo.jpg"], "{tmp}/photo.jpg: not a folder (a file)"),
    ]
    for cli, args, line in cases:
        res = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
        assert res.exit_code == 2 and res.stderr.strip().splitlines() == [f"Error: {line.format(tmp=tmp_path)}"], \
            (args, res.output)

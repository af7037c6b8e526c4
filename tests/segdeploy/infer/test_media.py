"""What a text SOURCE is: one rule for `segdeploy batch` and the Predictor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segdeploy.infer.media import Kind, classify, stream_key


def test_each_kind_of_text_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    for name in ("a.JPG", "clip.MP4", "notes.txt"):
        (tmp_path / "photos" / name).write_bytes(b"x")
    cases = {"photos": Kind.FOLDER, "photos/a.JPG": Kind.IMAGE, "photos/clip.MP4": Kind.VIDEO,
             "photos/notes.txt": Kind.OTHER_FILE, "photos/*.jpg": Kind.GLOB, "nothing.png": Kind.MISSING,
             "0": Kind.STREAM, "12": Kind.STREAM, "rtsp://cam.local/live": Kind.STREAM,
             "http://host/videos/clip.mkv?token=1": Kind.STREAM, "https://host/photo.jpg": Kind.URL,
             "s3://bucket/photos/": Kind.URL, "memory://x": Kind.URL}
    assert {source: classify(source) for source in cases} == cases
    assert classify(Path("photos")) is Kind.FOLDER and classify(os.fsencode("photos/a.JPG")) is Kind.IMAGE
    (tmp_path / "0").mkdir()  # a folder named 0 wins over camera 0
    assert classify("0") is Kind.FOLDER


def test_stream_outputs_take_a_file_name() -> None:
    assert stream_key("0") == "camera0"
    assert stream_key("rtsp://user:pw@cam.local:554/live/main") == "cam.local_live_main.stream"
    assert stream_key("http://127.0.0.1:8000/clip.mkv") == "127.0.0.1_clip.mkv"

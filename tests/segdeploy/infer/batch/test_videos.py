"""`segdeploy batch` on videos: mask and overlay videos at the source's size and frame rate (or per-frame files),
the same summary, failure policy and resume rules as for photos, streams over HTTP; the videos are written here
with OpenCV."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from colour_models import (
    batch_cli,
    colour_spec,
    expected_mask,
    half_image,
    moving_frames,
    read_png,
    read_video_frames,
    save,
    save_video,
)

from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.outputs import frame_paths
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.video import VideoReader, VideoWriter
from segtrain.contract import colorize

PALETTE = colour_spec().palette


def masks_of(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The colour masks the model must give (it labels each pixel by its own colour; frames are 24x32 and the
    input 32x32, so stretching keeps every pixel's class)."""
    return [colorize(expected_mask(f), PALETTE) for f in frames]


def run(model: Path, source: Path | str, out: Path, **settings) -> object:
    return run_batch(BatchConfig(sources=source, out_dir=out, model=model, workers=2, progress=False, **settings),
                     log=lambda m: None)


def test_a_video_gives_a_mask_video_and_an_overlay_video_at_its_size_and_rate(model: Path, tmp_path: Path) -> None:
    frames = moving_frames(7)
    save_video(frames, tmp_path / "in" / "clip.mkv", fps=12.5)
    save(half_image(20, 30, 1), tmp_path / "in" / "photo.png")
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--save", "mask,overlay,confidence")
    assert res.exit_code == 0, res.output
    assert "1 image and 1 video (7 frames) segmented, 0 already done, 0 failed" in res.output
    out = tmp_path / "out"
    written = read_video_frames(out / "clip.mkv.mask.mkv")
    assert len(written) == 7
    for got, want in zip(written, masks_of(frames), strict=True):
        np.testing.assert_array_equal(got, want)  # lossless: every pixel is its class's palette colour
    overlay = VideoReader(out / "clip.mkv.overlay.mp4").info
    assert overlay.size == (24, 32) and overlay.fps == 12.5 and overlay.frames == 7
    assert VideoReader(out / "clip.mkv.confidence.mkv").info.frames == 7
    summary = json.loads((out / "summary.json").read_text())
    (video,) = [r for r in summary["images"] if r["input"] == "clip.mkv"]
    assert video["frames"] == 7 and video["fps"] == 12.5 and video["size"] == [24, 32] and video["tiles"] == 0
    assert video["outputs"] == {"mask": "clip.mkv.mask.mkv", "overlay": "clip.mkv.overlay.mp4",
                                "confidence": "clip.mkv.confidence.mkv", "record": "clip.mkv.record.json"}
    red = sum(int((expected_mask(f) == 1).sum()) for f in frames) / (7 * 24 * 32)
    assert video["class_share"]["red"] == pytest.approx(red, abs=1e-6)
    assert summary["totals"]["frames"] == 7 and summary["totals"]["processed"] == 2
    assert not [p for p in out.rglob(".*")]  # no temporary file left


def test_a_finished_video_is_resumed_and_a_changed_one_redone(model: Path, tmp_path: Path) -> None:
    save_video(moving_frames(4), tmp_path / "in" / "clip.mkv")
    run(model, tmp_path / "in", tmp_path / "out")
    mask_video = tmp_path / "out" / "clip.mkv.mask.mkv"
    before = mask_video.stat().st_mtime_ns
    again = run(model, tmp_path / "in", tmp_path / "out")
    assert again.totals.processed == 0 and again.totals.resumed == 1 and mask_video.stat().st_mtime_ns == before
    assert again.summary.images[0].frames == 4 and again.summary.images[0].resumed
    save_video(moving_frames(6), tmp_path / "in" / "clip.mkv")  # the user replaces the video
    redone = run(model, tmp_path / "in", tmp_path / "out")
    assert redone.totals.processed == 1 and len(read_video_frames(mask_video)) == 6


def test_save_frames_writes_each_frames_image_outputs_instead(model: Path, tmp_path: Path) -> None:
    frames = moving_frames(3)
    save_video(frames, tmp_path / "in" / "clip.mkv")
    result = run(model, tmp_path / "in" / "clip.mkv", tmp_path / "out", save=("frames", "overlay"))
    folder = tmp_path / "out" / "clip.mkv.frames"
    assert sorted(p.name for p in folder.iterdir()) == [f"00000{i}.{k}" for i in range(3)
                                                        for k in ("mask.png", "overlay.jpg")]
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(read_png(frame_paths(folder, i, ("overlay",)).mask), expected_mask(frame))
    assert not (tmp_path / "out" / "clip.mkv.mask.mkv").exists()
    assert result.summary.images[0].outputs == {"frames": "clip.mkv.frames", "record": "clip.mkv.record.json"}
    assert run(model, tmp_path / "in" / "clip.mkv", tmp_path / "out", save=("frames", "overlay")).totals.resumed == 1


def test_an_unreadable_video_is_a_named_failure_and_the_rest_is_done(model: Path, tmp_path: Path) -> None:
    save_video(moving_frames(3), tmp_path / "in" / "good.mkv")
    (tmp_path / "in" / "broken.mp4").write_bytes(b"\x00" * 100)
    save(half_image(20, 30, 1), tmp_path / "in" / "photo.png")
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model)
    assert res.exit_code == 3, res.output
    assert "broken.mp4: OpenCV cannot open this video" in res.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "good.mkv.mask.mkv" in names and "photo.png.mask.png" in names
    assert not [n for n in names if n.startswith(("broken", "."))]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failures"] == [{"input": "broken.mp4", "reason": "OpenCV cannot open this video"}]


def test_an_interrupted_video_leaves_no_half_video_and_a_rerun_finishes_it(model: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    save_video(moving_frames(6), tmp_path / "in" / "clip.mkv")
    real_write, written = VideoWriter.write, []

    def write(self: VideoWriter, rgb: np.ndarray) -> None:
        written.append(1)
        if len(written) == 5:
            raise KeyboardInterrupt
        real_write(self, rgb)

    monkeypatch.setattr(VideoWriter, "write", write)
    with pytest.raises(KeyboardInterrupt):
        run(model, tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["legend.png"]  # no temporary, no record
    monkeypatch.undo()
    again = run(model, tmp_path / "in", tmp_path / "out")
    assert again.totals.processed == 1 and len(read_video_frames(tmp_path / "out" / "clip.mkv.mask.mkv")) == 6


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 for `folder`, in a thread; yields its port."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_video_url_is_read_as_a_stream_and_ctrl_c_ends_it_keeping_what_was_recorded(
        model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = moving_frames(8)
    save_video(frames, tmp_path / "served" / "clip.mkv")
    with serving(tmp_path / "served") as port:
        url = f"http://127.0.0.1:{port}/clip.mkv"
        whole = run(model, url, tmp_path / "out")
        assert whole.summary.images[0].input == "127.0.0.1_clip.mkv" and whole.summary.images[0].frames == 8
        for got, want in zip(read_video_frames(tmp_path / "out" / "127.0.0.1_clip.mkv.mask.mkv"), masks_of(frames),
                             strict=True):
            np.testing.assert_array_equal(got, want)
        real_frames = VideoReader.frames

        def frames_then_ctrl_c(self: VideoReader) -> Iterator:
            for i, item in enumerate(real_frames(self)):
                if i == 3:
                    os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, while the stream runs
                yield item

        monkeypatch.setattr(VideoReader, "frames", frames_then_ctrl_c)
        stopped = run(model, url, tmp_path / "again")
    recorded = stopped.summary.images[0].frames
    assert 3 <= recorded < 8 and stopped.totals.failed == 0  # ended like the stream's end, then the summary
    assert len(read_video_frames(tmp_path / "again" / "127.0.0.1_clip.mkv.mask.mkv")) == recorded
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C interrupts again afterwards


def test_a_camera_that_cannot_be_opened_is_named(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = batch_cli("97", "--out", "out", "--model", model)
    assert res.exit_code == 3, res.output
    assert "skipped 97: OpenCV cannot open camera 97" in res.output

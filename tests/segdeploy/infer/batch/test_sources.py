"""`segdeploy batch SOURCE...`: folders, files and globs, each input keyed by its path relative to what was given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from colour_models import batch_cli, half_image, save

from segdeploy.infer.batch.sources import list_sources, resolve_sources


def _tree(root: Path) -> None:
    for rel in ("photos/a.jpg", "photos/sub/b.png", "photos/sub/c.JPG", "shoots/day1/d.jpg", "shoots/day2/e.png",
                "loose/f.png"):
        save(half_image(24, 32, 1), root / rel)
    (root / "photos" / "notes.txt").write_text("not an image")


def test_folders_files_and_globs_keep_paths_relative_to_what_was_given(model: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = batch_cli("photos", "loose/f.png", "shoots/*/*.jpg", "photos/sub/*.png", "--out", "out", "--model", model)
    assert res.exit_code == 0, res.output
    masks = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.mask.png"))
    # photos/ mirrored; the file at the top; the glob relative to its leading folder shoots/;
    # photos/sub/*.png names photos/sub/b.png, which the folder photos/ gave already: done once
    assert masks == ["a.jpg.mask.png", "day1/d.jpg.mask.png", "f.png.mask.png", "sub/b.png.mask.png",
                     "sub/c.JPG.mask.png"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sources"] == ["photos", "loose/f.png", "shoots/*/*.jpg", "photos/sub/*.png"]
    recursive = [f.key for f in resolve_sources(["shoots/**/*.png", "shoots/day*"])]
    assert recursive == ["day1/d.jpg", "day2/e.png"]


def test_bad_sources_are_one_line_errors(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path)
    save(half_image(24, 32, 1), tmp_path / "other" / "sub" / "b.png")
    monkeypatch.chdir(tmp_path)
    cases = [(["nowhere"], "nowhere: does not exist"),
             (["photos/*.gif"], "photos/*.gif: no file or folder matches this pattern"),
             (["photos/*.txt"], "photos/*.txt: matches 1 path(s) but no images"),
             (["photos/notes.txt"], "photos/notes.txt: not an image or video file"),
             (["https://example.com/a.jpg"], "https://example.com/a.jpg: a https:// URL that is not a video is not "
                                             "read"),
             (["memory://segdeploy-test-nothing/"], "memory://segdeploy-test-nothing/: no images or videos"),
             (["photos", "other"], "would both write the outputs of 'sub/b.png'"),
             (["photos", "loose", "--gt", "photos/notes.txt"], "--gt matches file names relative to one folder")]
    for sources, message in cases:
        res = batch_cli(*sources, "--out", "out", "--model", model)
        assert res.exit_code == 2, (sources, res.output)
        assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_outputs_of_an_earlier_run_among_the_photos_are_never_inputs(model: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(3):
        save(half_image(20, 24, i % 2), photos / f"im{i}.png")
    save(half_image(20, 24, 0), photos / "sub" / "deep.png")
    (photos / "plain.mask.png").write_bytes((photos / "im0.png").read_bytes())  # a photo so named: still an input
    first = batch_cli(photos, "--out", photos / "preds", "--model", model, "--save", "mask,overlay,color",
                      "--legend")
    assert first.exit_code == 0, first.output
    second = batch_cli(photos, "--out", tmp_path / "out2", "--model", model)
    assert second.exit_code == 0, second.output
    inputs = [r["input"] for r in json.loads((tmp_path / "out2" / "summary.json").read_text())["images"]]
    assert inputs == ["im0.png", "im1.png", "im2.png", "plain.mask.png", "sub/deep.png"]
    listing = list_sources([photos])
    assert listing.earlier_outputs == 3 * 5 + 2  # mask, overlay and color of 5 inputs, legend.png in preds and sub

"""`segdeploy batch` on folders other people made: FIFOs, symlink loops, dangling links, folders that cannot be
listed, file names that are not UTF-8. Each is named in the failures (exit 3) or refused in one line (exit 2);
never a hang, a traceback or an image silently dropped."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import batch_cli, half_image, half_truth, read_png, run_batch_subprocess, save
from json_edit import strict_json

from segdeploy.cli import main
from segdeploy.infer.batch.outputs import output_paths
from segdeploy.infer.batch.sources import BatchInputError, list_sources


def _hostile_folder(root: Path) -> None:
    save(half_image(20, 20, 1), root / "good.png")
    save(half_image(20, 20, 0), root / "sub" / "good2.png")
    os.mkfifo(root / "pipe.jpg")
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "dangling.png").symlink_to("gone.png")
    (root / "sub" / "up").symlink_to("..")  # a folder symlink back to the top: listed once, no endless walk
    (root / "notes.txt").write_text("not an image: not an input, not a failure")


def test_fifo_symlink_loop_and_dangling_link_are_named_never_a_hang(model: Path, tmp_path: Path) -> None:
    _hostile_folder(tmp_path / "in")
    # A subprocess with a deadline: a run blocked on the FIFO would fail the test instead of hanging it.
    res = run_batch_subprocess(tmp_path / "in", "--out", tmp_path / "out", "--model", model, "--no-progress",
                               timeout=60)
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    summary = strict_json(tmp_path / "out" / "summary.json")
    assert sorted(r["input"] for r in summary["images"]) == ["good.png", "sub/good2.png"]
    reasons = {f["input"]: f["reason"] for f in summary["failures"]}
    assert reasons == {"pipe.jpg": "not a regular file (a FIFO)",
                       "loop.jpg": "symlink loop (too many levels of symbolic links)",
                       "dangling.png": "dangling symlink (its target gone.png does not exist)"}
    for key, reason in reasons.items():
        assert f"{key}: {reason}" in res.stderr
    assert summary["totals"]["images_found"] == 5 and summary["totals"]["failed"] == 3
    np.testing.assert_array_equal(read_png(output_paths(tmp_path / "out", Path("good.png")).mask),
                                  half_truth(20, 20, 1))


def test_a_folder_that_cannot_be_listed_is_named_with_its_images_unprocessed(model: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, where chmod 000 stops nothing: the refusal is simulated at os.scandir, the one
    # call the listing makes per folder (test_an_unreadable_folder_for_real below uses chmod when not root).
    save(half_image(20, 20, 1), tmp_path / "in" / "a.png")
    save(half_image(20, 20, 1), tmp_path / "in" / "locked" / "b.png")
    save(half_image(20, 20, 1), tmp_path / "in" / "deep" / "locked" / "c.png")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model)
    assert res.exit_code == 3, res.output
    summary = strict_json(tmp_path / "out" / "summary.json")
    assert [r["input"] for r in summary["images"]] == ["a.png"]
    reason = "cannot list this folder (Permission denied); the images in it are not processed"
    assert summary["failures"] == [{"input": "deep/locked/", "reason": reason}, {"input": "locked/", "reason": reason}]
    assert f"locked/: {reason}" in res.stderr
    # The same folder met through a glob, and the SOURCE folder itself (a usage error: nothing to run on).
    listing = list_sources([str(tmp_path / "in" / "*" / "*.png")])
    assert [f.input for f in listing.failures] == ["locked/"] and listing.files == []
    res = batch_cli(tmp_path / "in" / "locked", "--out", tmp_path / "out2", "--model", model)
    assert res.exit_code == 2 and res.stderr.strip() == \
        f"Error: {tmp_path / 'in' / 'locked'}: cannot list this folder (Permission denied)"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_an_unreadable_folder_for_real(model: Path, tmp_path: Path) -> None:
    save(half_image(20, 20, 1), tmp_path / "in" / "a.png")
    save(half_image(20, 20, 1), tmp_path / "in" / "locked" / "b.png")
    (tmp_path / "in" / "locked").chmod(0)
    try:
        res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model)
    finally:
        (tmp_path / "in" / "locked").chmod(0o755)
    assert res.exit_code == 3 and "locked/: cannot list this folder (Permission denied)" in res.stderr


def test_symlinked_folders_are_followed_once(model: Path, tmp_path: Path) -> None:
    save(half_image(20, 20, 1), tmp_path / "photos" / "a.png")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "photos")
    (tmp_path / "in" / "again").symlink_to(tmp_path / "photos")
    listing = list_sources([tmp_path / "in"])
    assert [f.key for f in listing.files] in (["again/a.png"], ["linked/a.png"]) and listing.failures == []


def test_a_fifo_or_a_dangling_link_named_as_source_is_a_usage_error(model: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "dangling.jpg").symlink_to("gone.jpg")
    for source, reason in (("pipe.jpg", "not a regular file (a FIFO)"),
                           ("dangling.jpg", "dangling symlink (its target gone.jpg does not exist)")):
        res = batch_cli(tmp_path / source, "--out", tmp_path / "out", "--model", model)
        assert res.exit_code == 2 and res.stderr.strip() == f"Error: {tmp_path / source}: {reason}"


def test_a_file_name_that_is_not_utf8_works_end_to_end(model: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    save(half_image(20, 24, 1), inputs / "plain.png")
    raw = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes: not UTF-8
    save(half_image(22, 20, 0), inputs / raw)
    out = tmp_path / "out"
    res = batch_cli(inputs, "--out", out, "--model", model, "--save", "mask,overlay,rle")
    assert res.exit_code == 0, res.output
    summary = strict_json(out / "summary.json")
    shown = "caf\\xe9-\\xff.png"  # each byte that is not UTF-8 as the four characters \xNN
    record = next(r for r in summary["images"] if r["input"] == shown)
    assert record["outputs"]["mask"] == shown + ".mask.png" and record["size"] == [22, 20]
    np.testing.assert_array_equal(read_png(output_paths(out, Path(raw)).mask), half_truth(22, 20, 0))
    assert os.fsencode(output_paths(out, Path(raw)).mask.name) == b"caf\xe9-\xff.png.mask.png"  # the real name
    assert {e["image_id"] for e in strict_json(out / "predictions.json")} == {"plain.png", shown}
    again = batch_cli(inputs, "--out", out, "--model", model, "--save", "mask,overlay,rle")
    assert again.exit_code == 0 and "0 images segmented, 2 already done" in again.output
    # Shards hash the key as shown, so merge-summary, which reads only the summaries, agrees with batch.
    sharded = tmp_path / "sharded"
    for k in range(3):
        res = batch_cli(inputs, "--out", sharded, "--model", model, "--shard", f"{k}/3")
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["merge-summary", str(sharded)])
    assert res.exit_code == 0, res.output
    assert sorted(r["input"] for r in strict_json(sharded / "summary.json")["images"]) == [shown, "plain.png"]


def _glob_oracle(pattern: str) -> list[str]:
    """Keys the way glob.glob names the matches (a matched folder: every image under it, walked by os.walk)."""
    parts = Path(pattern).parts
    base = Path(*parts[:next(i for i, p in enumerate(parts) if glob.has_magic(p))] or ["."])
    keys = set()
    for match in map(Path, glob.glob(pattern, recursive=True)):
        files = [Path(d) / f for d, _, fs in os.walk(match) for f in fs] if match.is_dir() else [match]
        keys |= {f.relative_to(base).as_posix() for f in files if f.suffix.lower() in (".png", ".jpg")}
    return sorted(keys)


def test_names_with_leading_or_double_dots_are_images_too(tmp_path: Path) -> None:
    """`..jpg` has the suffix .jpg (pathlib's rule; os.path.splitext says it has none): never silently left out."""
    names = ["..jpg", "...png", "a..b.jpg", ".hidden.jpg", "..", "plain.jpg"]
    for name in names:
        if name != "..":
            save(half_image(8, 8, 1), tmp_path / "in" / f"x{name}")
            (tmp_path / "in" / f"x{name}").rename(tmp_path / "in" / name)  # Pillow saves by os.path.splitext
    assert [f.key for f in list_sources([tmp_path / "in"]).files] == sorted(set(names) - {".."})


def test_globs_match_as_glob_glob_does_and_skip_the_output_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in ("photos/a.png", "photos/b.JPG", "photos/.hidden.png", "photos/.cache/c.png", "photos/sub/d.png",
                "photos/sub/deep/e.jpg", "photos/day1/f.png", "shoots/x1.png", "photos/..png", "photos/sub/a..b.png"):
        save(half_image(8, 8, 1), tmp_path / rel.replace("..", "_."))
        (tmp_path / rel.replace("..", "_.")).rename(tmp_path / rel)  # Pillow saves by os.path.splitext
    (tmp_path / "photos" / "sub" / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    for pattern in ("photos/**/*.png", "photos/*/*.png", "photos/*", "photos/**", "*/**/*.jpg", "**/*.png",
                    "photos/.*", "photos/sub/**/e*", "photos/*/", "ph*/day?/*.png", "[ps]*/*.png"):
        assert [f.key for f in list_sources([pattern]).files] == _glob_oracle(pattern), pattern
    save(half_image(8, 8, 1), tmp_path / "photos" / "out" / "old.png")  # outputs of an earlier run inside
    listing = list_sources(["photos/**/*.png"], exclude=[tmp_path / "photos" / "out"])
    assert "out/old.png" not in [f.key for f in listing.files]
    with pytest.raises(BatchInputError, match=r"^nowhere/\*\*/\*.png: no file or folder matches this pattern$"):
        list_sources(["nowhere/**/*.png"])

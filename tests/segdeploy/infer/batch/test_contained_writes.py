"""Writes stay inside --out: a symlinked subfolder planted in --out never carries masks, overlays or legend.png
out of it (segtrain.common.contained). The run refuses in one line, and nothing appears outside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from colour_models import batch_cli, half_image, save

from segtrain.common.contained import EscapesOutputError, check_contained, contained_folder
from segtrain.common.files import atomic_write_text, ensure_writable_dir


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_batch_never_writes_through_a_symlinked_subfolder_of_out(model: Path, tmp_path: Path) -> None:
    save(half_image(20, 20, 1), tmp_path / "in" / "photos" / "a.png")
    save(half_image(20, 20, 0), tmp_path / "in" / "b.png")
    outside = tmp_path / "somewhere"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "photos").symlink_to(outside)
    result = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model)
    assert _files(outside) == []  # nothing written through the link
    assert result.exit_code == 2, result.output  # a bad --out, refused before any image is read
    (line,) = result.output.strip().splitlines()
    assert "leads outside the output folder" in line and "through the symlink" in line and "photos" in line


def test_a_symlink_inside_out_that_stays_inside_is_allowed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ensure_writable_dir(out)
    (out / "real").mkdir()
    (out / "alias").symlink_to(out / "real")
    atomic_write_text(out / "alias" / "x.txt", "inside")
    assert (out / "real" / "x.txt").read_text() == "inside"


def test_out_itself_may_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "big-disk").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "big-disk")
    ensure_writable_dir(tmp_path / "out")
    atomic_write_text(tmp_path / "out" / "sub" / "x.txt", "ok")
    assert (tmp_path / "big-disk" / "sub" / "x.txt").read_text() == "ok"


@pytest.mark.parametrize("depth", ["link/x.txt", "link/new/deeper/x.txt"])
def test_no_write_and_no_folder_is_made_through_a_link_out(tmp_path: Path, depth: str) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    ensure_writable_dir(out)
    (out / "link").symlink_to(outside)
    with pytest.raises(EscapesOutputError, match=r"through the symlink .*link -> "):
        atomic_write_text(out / depth, "escaped")
    with pytest.raises(EscapesOutputError):
        contained_folder(out / "link" / "made")
    assert _files(outside) == []


def test_relative_paths_and_a_changed_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outside").mkdir()
    ensure_writable_dir("out")
    os.symlink("../outside", "out/up")
    with pytest.raises(EscapesOutputError):
        check_contained("out/up")
    check_contained("out")  # the folder itself
    check_contained(tmp_path / "elsewhere")  # not under a claimed folder: not this mechanism's business


def test_an_output_folder_named_later_inside_another_one_is_the_users_choice(tmp_path: Path) -> None:
    ensure_writable_dir(tmp_path / "first")
    (tmp_path / "disk").mkdir()
    (tmp_path / "first" / "second").symlink_to(tmp_path / "disk")
    ensure_writable_dir(tmp_path / "first" / "second")  # named as --out: claimed, not refused
    atomic_write_text(tmp_path / "first" / "second" / "x.txt", "ok")
    assert (tmp_path / "disk" / "x.txt").read_text() == "ok"
    with pytest.raises(EscapesOutputError):  # but a link inside it that leads out is still refused
        (tmp_path / "disk" / "up").symlink_to(tmp_path)
        atomic_write_text(tmp_path / "first" / "second" / "up" / "y.txt", "escaped")

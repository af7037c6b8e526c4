"""Output naming, lossless mask files, completion records and temp-file sweeping of `segdeploy batch`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from colour_models import read_png
from PIL import Image

from segdeploy.infer.batch.ground_truth import undo_exif_orientation
from segdeploy.infer.batch.outputs import (
    DEFAULT_SAVE,
    SaveError,
    completed_record,
    encode_mask,
    encode_rgb,
    output_paths,
    read_mask,
    read_record,
    resolve_save,
    sweep_temp_files,
    write_atomic,
)
from segtrain.contract import default_palette


def test_outputs_keep_relative_path_and_full_name(tmp_path: Path) -> None:
    every = ("mask", "overlay", "color", "confidence")
    jpg, png = output_paths(tmp_path, Path("sub/a.jpg"), every), output_paths(tmp_path, Path("sub/a.png"), every)
    assert jpg.files == {"mask": tmp_path / "sub" / "a.jpg.mask.png", "overlay": tmp_path / "sub" / "a.jpg.overlay.jpg",
                         "color": tmp_path / "sub" / "a.jpg.color.png",
                         "confidence": tmp_path / "sub" / "a.jpg.confidence.png"}
    assert not set(jpg.files.values()) & set(png.files.values())
    assert jpg.as_dict(tmp_path) == {"mask": "sub/a.jpg.mask.png", "overlay": "sub/a.jpg.overlay.jpg",
                                     "color": "sub/a.jpg.color.png", "confidence": "sub/a.jpg.confidence.png"}


def test_default_outputs_are_the_mask_and_the_overlay_and_the_mask_is_always_written(tmp_path: Path) -> None:
    assert DEFAULT_SAVE == ("mask", "overlay")
    assert set(output_paths(tmp_path, Path("a.jpg"), DEFAULT_SAVE).files) == {"mask", "overlay"}
    assert resolve_save(["rle", "overlay"]) == ("mask", "overlay", "rle")
    assert resolve_save(["confidence"]) == ("mask", "confidence")
    assert set(output_paths(tmp_path, Path("a.jpg"), ("rle",)).files) == {"mask"}
    with pytest.raises(SaveError, match="unknown colour, probs; choose from mask, overlay, color, confidence, rle"):
        resolve_save(["colour", "mask", "probs"])


def test_mask_png_is_indexed_lossless_and_carries_palette(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, size=(37, 53), dtype=np.uint8)
    palette = default_palette(21)
    path = tmp_path / "m.png"
    path.write_bytes(encode_mask(mask, palette, {"size": [37, 53], "k": "v"}))
    with Image.open(path) as im:
        assert im.mode == "P" and im.size == (53, 37)
        assert np.asarray(im.getpalette()[: 3 * 21]).reshape(21, 3).tolist() == [list(c) for c in palette]
    np.testing.assert_array_equal(read_mask(path), mask)
    assert read_record(path) == {"size": [37, 53], "k": "v"}


def test_record_whose_size_disagrees_with_the_png_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    path.write_bytes(encode_mask(np.zeros((4, 6), np.uint8), default_palette(2), {"size": [6, 4]}))
    assert read_record(path) is None
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert read_record(tmp_path / "junk.png") is None


def test_rgb_encoding_round_trips_png_exactly_and_keeps_channel_order(tmp_path: Path) -> None:
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., 0], image[2, 3] = 200, (1, 2, 3)
    path = tmp_path / "c.png"
    path.write_bytes(encode_rgb(image, ".png"))
    np.testing.assert_array_equal(read_png(path), image)
    path = tmp_path / "o.jpg"
    path.write_bytes(encode_rgb(np.full((16, 16, 3), (220, 30, 30), np.uint8), ".jpg"))
    assert np.abs(read_png(path).astype(int) - (220, 30, 30)).max() <= 3


def test_completed_record_needs_every_chosen_file_and_the_same_fingerprint(tmp_path: Path) -> None:
    paths = output_paths(tmp_path, Path("a.jpg"), ("mask", "overlay", "confidence"))
    fingerprint = {"model_sha256": "abc", "alpha": 0.5, "save": ["mask", "overlay", "confidence"]}
    record = {"input": "a.jpg", "size": [2, 3], "fingerprint": fingerprint}
    write_atomic(paths.mask, encode_mask(np.zeros((2, 3), np.uint8), default_palette(2), record))
    assert completed_record(paths, fingerprint) is None  # overlay and confidence missing
    write_atomic(paths.files["overlay"], b"o")
    assert completed_record(paths, fingerprint) is None
    write_atomic(paths.files["confidence"], b"c")
    assert completed_record(paths, fingerprint) == record
    assert completed_record(output_paths(tmp_path, Path("a.jpg"), ("mask",)), fingerprint) == record
    assert completed_record(output_paths(tmp_path, Path("a.jpg"), ("mask", "color")), fingerprint) is None
    assert completed_record(paths, {**fingerprint, "model_sha256": "other"}) is None
    assert completed_record(paths, {**fingerprint, "alpha": 0.7}) is None
    assert completed_record(paths, {**fingerprint, "save": ["mask", "overlay"]}) is None


def test_sweep_removes_only_temporaries_of_our_outputs(tmp_path: Path) -> None:
    ours = [tmp_path / ".a.jpg.mask.png.k3j_x9a1.tmp", tmp_path / "sub" / ".b.png.overlay.jpg.zz12ab34.tmp",
            tmp_path / ".summary.json.q1w2e3r4.tmp", tmp_path / "sub" / ".c.png.confidence.png.abcd1234.tmp",
            tmp_path / "sub" / ".legend.png.zz12ab34.tmp", tmp_path / ".predictions.shard-1-of-3.json.q1w2e3r4.tmp"]
    theirs = [tmp_path / ".notes.txt.abcdefgh.tmp", tmp_path / "a.jpg.mask.png", tmp_path / "keep.tmp"]
    for p in ours + theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert sorted(sweep_temp_files(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)
    assert sweep_temp_files(tmp_path / "missing") == []


def test_write_atomic_leaves_no_temporary_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.mask.png"

    class Boom(Exception):
        pass

    def explode(f: object) -> None:
        raise Boom

    from segtrain.common.files import atomic_write_bytes

    with pytest.raises(Boom):
        atomic_write_bytes(target, explode)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("orientation", range(1, 9))
def test_undo_exif_orientation_inverts_pillows_exif_transpose(tmp_path: Path, orientation: int) -> None:
    from PIL import ImageOps

    raw = np.random.default_rng(orientation).integers(0, 5, size=(3, 5), dtype=np.uint8)
    im = Image.fromarray(raw)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif)
    with Image.open(path) as loaded:
        displayed = np.asarray(ImageOps.exif_transpose(loaded))
    np.testing.assert_array_equal(undo_exif_orientation(displayed, orientation), raw)

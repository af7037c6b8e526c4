"""The files `segdeploy batch` writes per image: names, --save, lossless mask files, encodings, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from colour_models import read_png
from PIL import Image

from segdeploy.infer.batch.outputs import (
    DEFAULT_SAVE,
    SaveError,
    encode_mask,
    encode_rgb,
    output_paths,
    read_mask,
    resolve_save,
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
    path.write_bytes(encode_mask(mask, palette, {"k": '{"v": 1}'}))
    with Image.open(path) as im:
        assert im.mode == "P" and im.size == (53, 37)
        assert np.asarray(im.getpalette()[: 3 * 21]).reshape(21, 3).tolist() == [list(c) for c in palette]
        assert im.info["k"] == '{"v": 1}'
    np.testing.assert_array_equal(read_mask(path), mask)


def test_rgb_encoding_round_trips_png_exactly_and_keeps_channel_order(tmp_path: Path) -> None:
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., 0], image[2, 3] = 200, (1, 2, 3)
    path = tmp_path / "c.png"
    path.write_bytes(encode_rgb(image, ".png"))
    np.testing.assert_array_equal(read_png(path), image)
    path = tmp_path / "o.jpg"
    path.write_bytes(encode_rgb(np.full((16, 16, 3), (220, 30, 30), np.uint8), ".jpg"))
    assert np.abs(read_png(path).astype(int) - (220, 30, 30)).max() <= 3


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

"""The image-read policy: only regular files, a documented pixel limit checked from the header, reduced JPEG decodes."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtrain.common.errors import InputError
from segtrain.data import images
from segtrain.data.images import ImageReadError, image_size, load_image


def png_header_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header declares width x height (its pixel data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [30_000, 15_000])  # beyond Pillow's own refusal (2x its limit), and between
def test_a_header_claiming_a_huge_image_is_a_named_skip(tmp_path: Path, side: int) -> None:
    path = png_header_claiming(tmp_path / "bomb.png", side, side)
    for read in (load_image, image_size):
        with pytest.raises(images.ImageTooLargeError) as err:
            read(path)
        assert str(err.value) == (f"{path}: {'15000x15000 is ' if side == 15_000 else ''}{side * side:,} pixels, "
                                  "more than the limit of 200,000,000 pixels (SEGTRAIN_MAX_IMAGE_PIXELS changes it), "
                                  "not decoded")


def test_the_pixel_limit_is_a_constant_and_an_environment_variable(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(path)
    assert images.max_image_pixels() == images.MAX_IMAGE_PIXELS == 200_000_000
    monkeypatch.setenv("SEGTRAIN_MAX_IMAGE_PIXELS", "1_199")
    with pytest.raises(images.ImageTooLargeError, match=r"40x30 is 1,200 pixels, more than the limit of 1,199 pixels"):
        load_image(path)
    monkeypatch.setenv("SEGTRAIN_MAX_IMAGE_PIXELS", "1200")
    assert load_image(path).shape == (30, 40, 3)
    monkeypatch.setenv("SEGTRAIN_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InputError, match="SEGTRAIN_MAX_IMAGE_PIXELS='lots': must be a whole number"):
        load_image(path)


def test_segtrain_data_skips_an_image_beyond_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from click.testing import CliRunner

    from segtrain.cli import main

    (tmp_path / "train" / "data").mkdir(parents=True)
    Image.new("RGB", (30, 20)).save(tmp_path / "train" / "data" / "a.png")
    Image.new("RGB", (300, 200)).save(tmp_path / "train" / "data" / "big.png")
    labels = {"images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30},
                         {"id": 2, "file_name": "big.png", "height": 200, "width": 300}],
              "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "train" / "labels.json").write_text(json.dumps(labels))
    monkeypatch.setenv("SEGTRAIN_MAX_IMAGE_PIXELS", "10000")
    res = CliRunner().invoke(main, ["data", str(tmp_path)])
    assert res.exit_code == 0 and "[train] 1 usable images of 2 listed" in res.output
    assert "big.png: labels.json says 300x200, more than the limit of 10,000 pixels, skipped" in res.output


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            load_image(fifo)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001  (the test reports whatever happened)
            outcome.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "wb"):
            pass
        pytest.fail("load_image blocked on a FIFO")
    assert isinstance(outcome[0], ImageReadError) and str(outcome[0]) == f"{fifo}: not a regular file"


def test_reduced_jpeg_decode_covers_the_requested_size_and_means_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    photo = np.kron(base, np.ones((64, 64, 1), np.uint8))  # 768 x 1024, smooth blocks
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(path, quality=95)
    full = load_image(path)
    for need, expected in (((64, 64), (96, 128)), ((100, 200), (192, 256)), ((500, 500), (768, 1024))):
        small = load_image(path, min_size=need)
        assert small.shape[:2] == expected  # 1/8, 1/4, then full size: never below what was asked for
    from segtrain.contract import resize_image

    reduced = resize_image(load_image(path, min_size=(48, 64)), (48, 64)).astype(float)
    assert np.abs(reduced - resize_image(full, (48, 64)).astype(float)).mean() < 2.0
    png = tmp_path / "photo.png"
    Image.fromarray(photo).save(png)
    assert load_image(png, min_size=(64, 64)).shape == photo.shape  # no reduced decode for PNG


def test_reduced_decode_follows_exif_orientation(tmp_path: Path) -> None:
    from colour_models import save_exif_rotated

    displayed = np.zeros((1024, 512, 3), np.uint8)  # portrait as displayed
    path = save_exif_rotated(displayed, tmp_path / "r.jpg")
    assert load_image(path, min_size=(256, 64)).shape[:2] == (256, 128)  # 1/4: the short side limits it
    assert load_image(path).shape[:2] == (1024, 512)

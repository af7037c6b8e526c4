"""Augmentation presets: masks stay aligned with their photos, scale-crop pads with the ignore index exactly where
the scaled photo is smaller than the input, validation is never augmented, and the preset is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from tiny_arch import tiny_config, tiny_registered

from segtrain.contract import IGNORE_INDEX, build_spec, preprocess
from segtrain.data.coco import CocoSplit
from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.augment import SCALE_RANGE, Augment
from segtrain.training.dataset import SegmentationDataset
from segtrain.training.loop import fit

PALETTE = np.array([(128, 128, 128), (220, 30, 30), (30, 200, 30), (30, 30, 220)], dtype=np.uint8)
SIZE = (64, 64)


def coded_photo() -> tuple[np.ndarray, np.ndarray]:
    """A 90x120 photo whose colour says its class: blocks of 4 classes, nothing symmetric."""
    mask = np.zeros((90, 120), dtype=np.uint8)
    mask[10:50, 5:40] = 1
    mask[30:85, 60:110] = 2
    mask[60:88, 10:45] = 3
    return PALETTE[mask], mask


def decode(image: np.ndarray) -> np.ndarray:
    """Each pixel's class: the nearest palette colour."""
    distance = ((image[:, :, None, :].astype(np.int32) - PALETTE[None, None].astype(np.int32)) ** 2).sum(-1)
    return distance.argmin(-1)


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 8 neighbours hold the same class (not the outer ring: its neighbours may have been cropped)."""
    padded = np.pad(mask.astype(np.int32), 1, constant_values=-1)
    h, w = mask.shape
    return np.all([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] == mask
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


@pytest.mark.parametrize("preset", ["basic", "scale-crop"])
def test_masks_stay_aligned_with_their_photo(preset: str) -> None:
    spec = build_spec("deeplab", "resnet18", image_size=SIZE)
    augment = Augment(preset, spec)
    # Photometric steps never touch the mask, so alignment is the geometric steps' (albumentations' DualTransform)
    augment.transform = A.Compose([t for t in augment.transform.transforms if isinstance(t, A.DualTransform)])
    assert len(augment.transform.transforms) >= 2
    photo, mask = coded_photo()
    flipped = 0
    for seed in range(40):
        image, out = augment(photo, mask, seed)
        assert image.shape == (*SIZE, 3) and image.dtype == np.uint8 and out.shape == SIZE
        assert set(np.unique(out).tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}
        inside = interior(out) & (out != IGNORE_INDEX)  # block edges blend colours (linear) where masks do not
        agreement = (decode(image)[inside] == out[inside]).mean()
        assert agreement > 0.99, (seed, agreement)
        left, right = out[:, : SIZE[1] // 2], out[:, SIZE[1] // 2:]
        flipped += int((left == 2).sum() > (right == 2).sum())  # class 2 lies right in the photo
    assert 5 < flipped < 35  # mirrored about half the time, and the masks went with the photos


def test_scale_crop_pads_with_the_ignore_index_where_the_photo_is_smaller() -> None:
    spec = build_spec("deeplab", "resnet18", image_size=SIZE)
    augment = Augment("scale-crop", spec)
    photo, mask = coded_photo()
    scales = []
    for seed in range(40):
        _, out = augment(photo, mask, seed)
        s = np.random.default_rng(seed).uniform(*SCALE_RANGE)
        scales.append(s)
        h, w = min(round(s * SIZE[0]), SIZE[0]), min(round(s * SIZE[1]), SIZE[1])
        assert (out == IGNORE_INDEX).sum() == SIZE[0] * SIZE[1] - h * w, seed
    assert min(scales) < 0.8 and max(scales) > 1.6


def test_validation_is_the_whole_photo_whatever_the_preset(sample_root: Path) -> None:
    split = CocoSplit.open(sample_root, "validation")
    spec = build_spec("deeplab", "resnet18", image_size=SIZE)
    ds = SegmentationDataset(split, spec, train=False, augment="scale-crop")
    x, _, _ = ds[0]
    np.testing.assert_array_equal(x.numpy(), preprocess(split.load_image(0), spec)[0])


def test_the_preset_is_recorded_in_config_and_checkpoint(tmp_path: Path) -> None:
    data = make_sample_dataset(tmp_path / "data", seed=2, sizes={"train": 4, "validation": 2})
    out = tmp_path / "run"
    with tiny_registered():
        fit(tiny_config(data, out, epochs=1, augment="scale-crop"), log=lambda _: None)
    assert json.loads((out / "config.json").read_text())["augment"] == "scale-crop"
    assert torch.load(out / "best_model.pth", weights_only=True)["config"]["augment"] == "scale-crop"

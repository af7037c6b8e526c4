"""The torch Dataset: alignment under augmentation, and eval inputs equal the ONNX contract."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from segtrain.contract import IGNORE_INDEX, build_spec, preprocess
from segtrain.data.coco import CocoSplit
from segtrain.training.dataset import SegmentationDataset


def square_split(tmp_path):
    """One 96x96 dark image with a bright square annotated as person."""
    image = np.full((96, 96, 3), 20, np.uint8)
    image[30:60, 20:50] = 250
    (tmp_path / "train" / "data").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "train" / "data" / "sq.png")
    labels = {"images": [{"id": 1, "file_name": "sq.png", "height": 96, "width": 96}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [20, 30, 30, 30],
                               "segmentation": [[20, 30, 50, 30, 50, 60, 20, 60]]}],
              "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "train" / "labels.json").write_text(json.dumps(labels))
    return CocoSplit.open(tmp_path, "train", categories=["person"])


def test_train_augmentation_keeps_square_under_its_mask(tmp_path):
    split = square_split(tmp_path)
    spec = build_spec("segnet", "vgg16", categories=[(1, "person")], image_size=64)
    ds = SegmentationDataset(split, spec, train=True)
    for _ in range(40):  # flips, rotations and noise at random: the mask must follow the square
        image, mask = ds.load(0)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        bright = image.mean(2) > 150
        inside = mask == 1
        assert set(np.unique(mask).tolist()) <= {0, 1, IGNORE_INDEX}
        # Away from the square's one-pixel rim, bright pixels and class-1 pixels coincide.
        core = np.logical_xor(bright, inside).sum()
        assert core <= 0.15 * inside.sum(), f"{core} misaligned pixels of {inside.sum()}"
        assert inside.sum() > 150


def test_eval_inputs_equal_the_torch_free_preprocess(sample_root):
    split = CocoSplit.open(sample_root, "validation")
    spec = build_spec("deeplab", "resnet18", image_size=(64, 96))
    ds = SegmentationDataset(split, spec, train=False)
    for i in range(3):
        x, y, name = ds[i]
        np.testing.assert_array_equal(x.numpy(), preprocess(split.load_image(i, min_size=spec.input_size), spec)[0])
        assert y.shape == (64, 96) and y.dtype.is_floating_point is False
        assert name == split.records[i].file_name


def test_unreadable_image_is_replaced_with_a_warning(tmp_path, recwarn):
    split = square_split(tmp_path)
    spec = build_spec("segnet", "vgg16", categories=[(1, "person")], image_size=32)
    ds = SegmentationDataset(split, spec)
    (tmp_path / "train" / "data" / "sq.png").write_bytes(b"garbage")
    import pytest

    from segtrain.data.images import ImageReadError

    with pytest.raises(ImageReadError, match="no image of the split can be decoded"):
        ds[0]
    assert any("sq.png" in str(w.message) for w in recwarn)

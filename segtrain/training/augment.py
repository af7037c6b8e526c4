"""Training augmentation presets (`--augment`): what a training sample looks like before normalisation.

basic       the photo stretched to the input size (the contract's rule), then a flip, brightness and
            contrast, a rotation of up to 15 degrees and a little Gaussian noise (segtrain's first recipe).
scale-crop  as torchvision's segmentation reference and MMSegmentation train: the photo is resized to
            s times the input size (s drawn from 0.5 to 2.0; the stretch geometry, so objects keep the
            scale validation sees them at on average), padded where it is smaller than the input (image
            black, mask the ignore index, so padding is never learned), cropped at random to the input
            size, flipped, and colour-jittered.

Validation is never augmented: the whole photo stretched to the input size (`evaluation`). Every preset
is a pure function of (photo, mask, seed), so a sample is the same whichever worker draws it. Masks use
nearest-neighbour everywhere and stay aligned with their photo (tests/segtrain/training/test_augment.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from segtrain.contract import ModelSpec, resize_image, resize_mask  # noqa: E402
from segtrain.training.config import AUGMENTS  # noqa: E402

SCALE_RANGE = (0.5, 2.0)


class Augment:
    """A preset for one model spec: `augment(photo, mask, seed)` -> uint8 image and mask at the input size."""

    def __init__(self, preset: str, spec: ModelSpec) -> None:
        if preset not in AUGMENTS:
            raise ValueError(f"unknown augmentation {preset!r}; choose from {', '.join(AUGMENTS)}")
        self.preset, self.size = preset, tuple(spec.input_size)
        # The largest size a photo is resized to: a JPEG need not be decoded larger (see CocoSplit.load_image).
        high = SCALE_RANGE[1] if preset == "scale-crop" else 1
        self.decode_size = (round(high * self.size[0]), round(high * self.size[1]))
        build = _scale_crop if preset == "scale-crop" else _basic
        self.transform = build(self.size, spec.ignore_index)

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self.resize(image, mask, seed)
        self.transform.set_random_seed(seed)
        out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"]

    def resize(self, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The photo at the input size (basic), or at a random multiple of it (scale-crop)."""
        size = self.size
        if self.preset == "scale-crop":
            s = np.random.default_rng(seed).uniform(*SCALE_RANGE)
            size = (max(1, round(s * size[0])), max(1, round(s * size[1])))
        return resize_image(image, size), resize_mask(mask, size)


def _basic(size: tuple[int, int], ignore_index: int) -> A.Compose:
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.Rotate(limit=15, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index, p=0.5),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
    ])


def _scale_crop(size: tuple[int, int], ignore_index: int) -> A.Compose:
    h, w = size
    return A.Compose([
        A.PadIfNeeded(min_height=h, min_width=w, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0,
                      fill_mask=ignore_index),
        A.RandomCrop(height=h, width=w),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
    ])

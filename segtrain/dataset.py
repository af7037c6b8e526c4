"""The torch Dataset over a CocoSplit, with Albumentations augmentation for training.

Both pipelines first resize with the contract's rule (`resize_image` / nearest `resize_mask`)
and end with the contract's `normalize`, so evaluation inputs are exactly what
`segtrain.contract.preprocess` gives ONNX inference. Augmentations run at the model's input size.
"""

from __future__ import annotations

import warnings

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from segtrain.coco import CocoSplit
from segtrain.contract import ModelSpec, normalize, resize_image, resize_mask
from segtrain.images import ImageReadError


def train_augmentation(ignore_index: int) -> A.Compose:
    """Photometric and geometric augmentation; masks use nearest-neighbour, padding is ignored."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.Rotate(limit=15, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index, p=0.5),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
    ])


class SegmentationDataset(Dataset):
    """(image float32 3xHxW, mask int64 HxW, file name) at the spec's input size."""

    def __init__(self, split: CocoSplit, spec: ModelSpec, train: bool = False) -> None:
        if tuple(split.classes) != tuple(spec.classes):
            raise ValueError(f"split classes {split.classes} differ from the model's {spec.classes}")
        self.split, self.spec, self.train = split, spec, train
        self.augment = train_augmentation(spec.ignore_index) if train else None

    def __len__(self) -> int:
        return len(self.split)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image and mask at the input size, augmented when training."""
        image = resize_image(self.split.load_image(i), self.spec.input_size)
        mask = resize_mask(self.split.load_mask(i), self.spec.input_size)
        if self.augment is not None:
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        # An image that fails to decode is replaced by the next one, with a warning, so one
        # bad file does not end a training run.
        for attempt in range(len(self)):
            j = (i + attempt) % len(self)
            try:
                image, mask = self.load(j)
                break
            except ImageReadError as e:
                warnings.warn(f"{e}; skipped", stacklevel=2)
        else:
            raise ImageReadError(f"{self.split.image_dir}: no image of the split can be decoded")
        x = torch.from_numpy(normalize(image, self.spec))
        y = torch.from_numpy(np.ascontiguousarray(mask)).long()
        return x, y, self.split.records[j].file_name

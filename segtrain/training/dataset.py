"""The torch Dataset over a CocoSplit, with Albumentations augmentation for training.

Both pipelines first resize with the contract's rule (`resize_image` / nearest `resize_mask`)
and end with the contract's `normalize`, so evaluation inputs are exactly what
`segtrain.contract.preprocess` gives ONNX inference. Augmentations run at the model's input size.
A JPEG much larger than the input is decoded at 1/2, 1/4 or 1/8 scale, never below the input size
(`CocoSplit.load_image(min_size=...)`, as evaluation and `segdeploy batch` read photos): the decode
is most of a worker's time on full-size photos, and the resize to the input size follows either way.

The training loader's sampler is `EpochSampler`: it hands the dataset (epoch, index) pairs, so
augmentation is seeded by the epoch even in persistent workers, which keep the copy of the dataset
they started with.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset, DistributedSampler, Sampler  # noqa: E402

from segtrain.contract import ModelSpec, normalize, resize_image, resize_mask  # noqa: E402
from segtrain.data.coco import CocoSplit  # noqa: E402
from segtrain.data.images import ImageReadError  # noqa: E402
from segtrain.evaluation import check_classes  # noqa: E402


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
    """(image float32 3xHxW, mask int64 HxW, file name) at the spec's input size.

    Augmentation is seeded per (seed, epoch, index), so a run is reproducible whichever
    data-loader worker draws a sample, and a resumed run sees the same samples as a straight one.
    The epoch comes with the index (`ds[epoch, i]`, from EpochSampler), or from `epoch` for `ds[i]`.
    """

    def __init__(self, split: CocoSplit, spec: ModelSpec, train: bool = False, seed: int = 0) -> None:
        check_classes(split, spec)
        self.split, self.spec, self.train, self.seed = split, spec, train, seed
        self.epoch = 0
        self.augment = train_augmentation(spec.ignore_index) if train else None

    def __len__(self) -> int:
        return len(self.split)

    def load(self, i: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image and mask at the input size, augmented (as in `epoch`, default `self.epoch`) when training."""
        size = self.spec.input_size
        image = resize_image(self.split.load_image(i, min_size=size), size)
        mask = resize_mask(self.split.load_mask(i), size)
        if self.augment is not None:
            epoch = self.epoch if epoch is None else epoch
            self.augment.set_random_seed((self.seed * 1_000_003 + epoch * 100_019 + i) % 2**32)
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
        epoch, i = key if isinstance(key, tuple) else (None, key)
        # An image that fails to decode is replaced by the next one, with a warning, so one
        # bad file does not end a training run.
        for attempt in range(len(self)):
            j = (i + attempt) % len(self)
            try:
                image, mask = self.load(j, epoch)
                break
            except ImageReadError as e:
                warnings.warn(f"{e}; skipped", stacklevel=2)
        else:
            raise ImageReadError(f"{self.split.image_dir}: no image of the split can be decoded")
        x = torch.from_numpy(normalize(image, self.spec))
        y = torch.from_numpy(np.ascontiguousarray(mask)).long()
        return x, y, self.split.records[j].file_name


class EpochSampler(Sampler[tuple[int, int]]):
    """(epoch, index) pairs: the indices of a DistributedSampler with the epoch it was last set to."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)

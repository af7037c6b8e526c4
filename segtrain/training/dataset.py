"""The torch Dataset over a CocoSplit, with an augmentation preset for training (segtrain.training.augment).

Evaluation resizes with the contract's rule (`resize_image` / nearest `resize_mask`), and both end with
the contract's `normalize`, so evaluation inputs are exactly what `segtrain.contract.preprocess` gives
ONNX inference. A JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8 scale, never below the
input size (or, for training, the largest size the augmentation resizes to: `Augment.decode_size`), as
evaluation and `segdeploy batch` read photos (`CocoSplit.load_image(min_size=...)`): the decode is most
of a worker's time on full-size photos, and the resize follows either way.

The training loader's sampler is `EpochSampler`: it hands the dataset (epoch, index) pairs, so
augmentation is seeded by the epoch even in persistent workers, which keep the copy of the dataset
they started with.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from segtrain.contract import ModelSpec, normalize, resize_image, resize_mask
from segtrain.data.coco import CocoSplit
from segtrain.data.images import ImageReadError
from segtrain.evaluation import check_classes
from segtrain.training.augment import Augment


class SegmentationDataset(Dataset):
    """(image float32 3xHxW, mask int64 HxW, file name) at the spec's input size.

    Augmentation is seeded per (seed, epoch, index), so a run is reproducible whichever
    data-loader worker draws a sample, and a resumed run sees the same samples as a straight one.
    The epoch comes with the index (`ds[epoch, i]`, from EpochSampler), or from `epoch` for `ds[i]`.
    """

    def __init__(self, split: CocoSplit, spec: ModelSpec, train: bool = False, seed: int = 0,
                 augment: str = "basic") -> None:
        check_classes(split, spec)
        self.split, self.spec, self.train, self.seed = split, spec, train, seed
        self.epoch = 0
        self.augment = Augment(augment, spec) if train else None

    def __len__(self) -> int:
        return len(self.split)

    def load(self, i: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image and mask at the input size, augmented (as in `epoch`, default `self.epoch`) when training."""
        size = self.spec.input_size
        if self.augment is None:
            image, mask = self.split.load_image(i, min_size=size), self.split.load_mask(i)
            return resize_image(image, size), resize_mask(mask, size)
        epoch = self.epoch if epoch is None else epoch
        image = self.split.load_image(i, min_size=self.augment.decode_size)
        return self.augment(image, self.split.load_mask(i), (self.seed * 1_000_003 + epoch * 100_019 + i) % 2**32)

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

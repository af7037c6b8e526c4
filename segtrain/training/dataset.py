"""The torch Dataset over a CocoSplit, with an augmentation preset for training (segtrain.training.augment).

Evaluation resizes with the contract's rule (`resize_image` / nearest `resize_mask`), and both end with
the contract's `normalize`, so evaluation inputs are exactly what `segtrain.contract.preprocess` gives
ONNX inference.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from segtrain.contract import ModelSpec, normalize, resize_image, resize_mask
from segtrain.data.coco import CocoSplit
from segtrain.data.images import ImageReadError
from segtrain.evaluation import check_classes
from segtrain.training.augment import Augment


class SegmentationDataset(Dataset):
    """(image float32 3xHxW, mask int64 HxW, file name) at the spec's input size.

    Augmentation is seeded per (seed, epoch, index), so a run is reproducible whichever
    data-loader worker draws a sample, and a resumed run sees the same samples as a straight one.
    Set `epoch` before each epoch's loader is created.
    """

    def __init__(self, split: CocoSplit, spec: ModelSpec, train: bool = False, seed: int = 0,
                 augment: str = "basic") -> None:
        check_classes(split, spec)
        self.split, self.spec, self.train, self.seed = split, spec, train, seed
        self.epoch = 0
        self.augment = Augment(augment, spec) if train else None

    def __len__(self) -> int:
        return len(self.split)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image and mask at the input size, augmented when training."""
        image, mask = self.split.load_image(i), self.split.load_mask(i)
        if self.augment is not None:
            return self.augment(image, mask, (self.seed * 1_000_003 + self.epoch * 100_019 + i) % 2**32)
        return resize_image(image, self.spec.input_size), resize_mask(mask, self.spec.input_size)

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

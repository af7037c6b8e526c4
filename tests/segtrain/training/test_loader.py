"""The training loader: persistent workers that still augment per epoch, prefetch, pinned memory on CUDA,
reduced JPEG decodes, and the share of step time spent waiting for data."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segtrain.contract import build_spec, preprocess
from segtrain.data.coco import CocoSplit
from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.config import TrainConfig
from segtrain.training.dataset import SegmentationDataset
from segtrain.training.distributed import DistContext
from segtrain.training.loop import PREFETCH_BATCHES, EpochSpeed, make_loaders, train_one_epoch
from segtrain.training.precision import choose_precision
from segtrain.training.progress import Progress


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("tiny") / "data", seed=1,
                               sizes={"train": 6, "validation": 2, "test": 2})


def loaders(data: Path, workers: int, device: str = "cpu"):
    cfg = TrainConfig(data=str(data), batch_size=2, image_size=32, workers=workers, seed=3)
    spec = build_spec("deeplab", "resnet18", image_size=32)
    train, val = CocoSplit.open(data, "train"), CocoSplit.open(data, "validation")
    return make_loaders(cfg, spec, train, val, DistContext(), torch.device(device))


def epoch_batches(loader, sampler, epoch: int) -> list[np.ndarray]:
    sampler.set_epoch(epoch)
    return [x.numpy() for x, _, _ in loader]


def test_loader_settings_follow_the_device(tiny):
    train, val, _ = loaders(tiny, workers=1)
    for loader in (train, val):
        assert loader.persistent_workers and loader.prefetch_factor == PREFETCH_BATCHES and not loader.pin_memory
    assert loaders(tiny, workers=1, device="cuda")[0].pin_memory
    assert not loaders(tiny, workers=0)[0].persistent_workers  # nothing to keep in one process


@pytest.mark.slow
def test_persistent_workers_augment_each_epoch_as_one_process_does(tiny):
    single, _, single_sampler = loaders(tiny, workers=0)
    pooled, _, pooled_sampler = loaders(tiny, workers=1)
    seen = []
    for epoch in (1, 2):
        a, b = epoch_batches(single, single_sampler, epoch), epoch_batches(pooled, pooled_sampler, epoch)
        assert len(a) == len(b) == 3
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        seen.append(a)
    # The same worker process drew epoch 2: its augmentation (and order) differ from epoch 1's.
    assert any(not np.array_equal(x, y) for x, y in zip(*seen, strict=True))


def test_photos_are_decoded_at_a_reduced_size_no_smaller_than_the_input(coco_mini, monkeypatch):
    split = CocoSplit.open(coco_mini, "validation")
    spec = build_spec("deeplab", "resnet18", image_size=128)
    asked = []
    load_image = CocoSplit.load_image

    def spy(self, i, min_size=None):
        image = load_image(self, i, min_size=min_size)
        asked.append((min_size, image.shape[:2], (self.records[i].height, self.records[i].width)))
        return image

    monkeypatch.setattr(CocoSplit, "load_image", spy)
    ds = SegmentationDataset(split, spec)
    for i in range(3):
        x, _, _ = ds[i]
        # what evaluation and segdeploy feed the model: the same reduced decode, then the contract
        np.testing.assert_array_equal(x.numpy(), preprocess(load_image(split, i, min_size=(128, 128)), spec)[0])
    for min_size, decoded, original in asked:
        assert min_size == (128, 128) and min(decoded) >= 128
        assert decoded[0] < original[0]  # coco-mini's ~640x480 photos decode at 1/2 or less for 128 px


def test_data_wait_is_the_share_of_step_time_blocked_on_the_loader():
    model = torch.nn.Conv2d(3, 2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    batches = [(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), ["a", "b"])] * 4

    def slow_loader():
        for batch in batches:
            time.sleep(0.1)
            yield batch

    _, speed = train_one_epoch(model, slow_loader(), torch.nn.CrossEntropyLoss(), optimizer,
                               choose_precision(torch.device("cpu"), None), DistContext(), 1,
                               Progress("off", 4, "t"), lambda step: 0.0)
    seconds = 8 / speed.images_per_s  # 8 images in the epoch
    # The loader slept 0.4 s: at least that was waited, and no more than the epoch took (on a loaded
    # machine the steps themselves may take longer than the sleeps, so no fixed share is asserted).
    assert 0.4 <= speed.data_wait * seconds <= seconds
    assert speed.line() == f"train {speed.images_per_s:.1f} img/s, data wait {100 * speed.data_wait:.0f}%" + (
        " (the loader limits training: more --workers, or faster storage)" if speed.data_wait > 0.1 else "")
    assert EpochSpeed(100.0, 0.02).line() == "train 100.0 img/s, data wait 2%"
    assert EpochSpeed(100.0, 0.5).line().endswith("data wait 50% (the loader limits training: more --workers, "
                                                   "or faster storage)")

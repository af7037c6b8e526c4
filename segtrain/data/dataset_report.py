"""`segtrain data DIR`: what a dataset holds per split, and what is wrong with it (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segtrain.common.files import folder_problem
from segtrain.contract import IGNORE_INDEX
from segtrain.data.coco import CocoSplit, DataError, resolve_split
from segtrain.data.images import ImageReadError

STANDARD_SPLITS = ("train", "validation", "test")


@dataclass
class SplitReport:
    name: str
    error: str | None = None
    images: int = 0
    usable: int = 0
    classes: tuple[str, ...] = ()
    instances: list[int] = field(default_factory=list)
    images_with: list[int] = field(default_factory=list)
    pixels: list[int] = field(default_factory=list)
    ignored_pixels: int = 0
    negatives: int = 0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if self.error:
            return [f"[{self.name}] UNUSABLE: {self.error}"]
        total = sum(self.pixels) + self.ignored_pixels
        out = [f"[{self.name}] {self.usable} usable images of {self.images} listed, "
               f"{self.negatives} without any target", f"  {'class':<14}{'instances':>10}{'images':>8}{'pixels':>9}"]
        for k, name in enumerate(self.classes):
            inst = "" if k == 0 else str(self.instances[k])
            imgs = "" if k == 0 else str(self.images_with[k])
            share = 100 * self.pixels[k] / total if total else 0.0
            out.append(f"  {name:<14}{inst:>10}{imgs:>8}{share:>8.3f}%")
        share = 100 * self.ignored_pixels / total if total else 0.0
        out.append(f"  {'ignore (255)':<14}{'':>10}{'':>8}{share:>8.3f}%")
        out += [f"  problem: {p}" for p in self.problems]
        return out


def report_split(split: CocoSplit) -> SplitReport:
    """Decode every image and mask of `split` and count what it holds."""
    k = len(split.classes)
    rep = SplitReport(split.name, images=split.listed, classes=tuple(split.classes), instances=[0] * k,
                      images_with=[0] * k, pixels=[0] * k, problems=list(split.problems))
    for i, rec in enumerate(split.records):
        try:
            split.load_image(i)
        except ImageReadError as e:
            rep.problems.append(f"{e}, skipped")
            continue
        mask, problems = split.render(i)
        rep.problems += [f"{rec.path}: {p}" for p in problems]
        counts = np.bincount(mask.ravel(), minlength=256)
        rep.usable += 1
        rep.ignored_pixels += int(counts[IGNORE_INDEX])
        present = set()
        for ann in rec.anns:
            rep.instances[ann.class_index] += 1
            present.add(ann.class_index)
        for c in present:
            rep.images_with[c] += 1
        rep.negatives += not present
        for c in range(k):
            rep.pixels[c] += int(counts[c])
    if rep.usable == 0:
        rep.error = f"{split.ann_file}: no image of the split could be decoded"
    return rep


def dataset_report(root: str | Path, categories: Sequence[str | int] | None = None,
                   splits: Sequence[str] = STANDARD_SPLITS) -> list[SplitReport]:
    """One report per split present under `root`; raises DataError when there is none."""
    if (problem := folder_problem(root, "dataset folder")) is not None:
        raise DataError(f"{root}: {problem}")
    reports = []
    for name in splits:
        try:
            image_dir, ann_file = resolve_split(root, name)
        except DataError:
            continue
        try:
            split = CocoSplit(image_dir, ann_file, categories, name=name, cache_dir="off")
            reports.append(report_split(split))
        except DataError as e:
            reports.append(SplitReport(name, error=str(e)))
    if not reports:
        raise DataError(f"{root}: no split found (expected train/, validation/ or test/ with labels.json and data/)")
    return reports

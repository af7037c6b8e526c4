"""The settings of one `segdeploy batch` run: the CLI fills BatchConfig from its options and reads its defaults here."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.infer.batch.outputs import DEFAULT_SAVE, resolve_save
from segdeploy.infer.batch.shards import Shard
from segdeploy.infer.batch.sources import BatchInputError
from segdeploy.infer.pipeline import default_workers
from segdeploy.infer.predictor import DEFAULT_BATCH_SIZE
from segdeploy.infer.tiling import DEFAULT_TILE_OVERLAP, TILE_AUTO, Tiling
from segtrain.common.system import available_memory

MIN_MEMORY_BUDGET_MB = 256
FALLBACK_MEMORY_BUDGET_MB = 2048  # where the available memory cannot be read
MAX_MEMORY_BUDGET_MB = 1 << 24
# The settings summary.json records (its "settings"): those that shape the outputs and the speed.
RECORDED_SETTINGS = ("batch_size", "runtime", "threads", "workers", "alpha", "overwrite", "save", "legend", "tile",
                     "tile_overlap")


def default_memory_budget() -> int:
    """MB: a quarter of the memory available at start (a container's limit included), at least
    MIN_MEMORY_BUDGET_MB; FALLBACK_MEMORY_BUDGET_MB where it cannot be read."""
    available = available_memory()
    if available is None:
        return FALLBACK_MEMORY_BUDGET_MB
    return max(MIN_MEMORY_BUDGET_MB, available // 4 // 2**20)


@dataclass(frozen=True)
class BatchConfig:
    """Settings of one batch run; the CLI fills it from its options (and reads its defaults here)."""

    sources: tuple[Path | str, ...]  # folders, image files, glob patterns (a single one may be given bare)
    out_dir: Path
    model: Path
    batch_size: int = DEFAULT_BATCH_SIZE
    provider: str = "auto"
    runtime: str = "auto"  # segdeploy.infer.runtime.RUNTIME_CHOICES
    threads: int | None = None
    workers: int = field(default_factory=default_workers)
    alpha: float = 0.5
    overwrite: bool = False
    gt: Path | None = None
    progress: bool | None = None  # None: a progress bar only when stderr is a terminal
    shard: Shard | None = None  # do only this share of the inputs
    save: tuple[str, ...] = DEFAULT_SAVE  # outputs (outputs.SAVE_CHOICES); the mask is always written
    legend: bool = False  # draw a legend of the classes present onto each overlay
    tile: str | int = TILE_AUTO  # auto, off or a window size in pixels (segdeploy.infer.tiling)
    tile_overlap: float = DEFAULT_TILE_OVERLAP
    memory_budget: int = field(default_factory=default_memory_budget)  # MB that the images in flight may hold

    def __post_init__(self) -> None:
        sources = (self.sources,) if isinstance(self.sources, (str, os.PathLike)) else tuple(self.sources)
        if not sources:
            raise BatchInputError("no SOURCE given: name folders, image files or quoted glob patterns")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise BatchInputError(f"--alpha {self.alpha}: the overlay opacity must be from 0 to 1")
        if not (isinstance(self.memory_budget, int) and 1 <= self.memory_budget <= MAX_MEMORY_BUDGET_MB):
            raise BatchInputError(f"--memory-budget {self.memory_budget}: expected MB from 1 to {MAX_MEMORY_BUDGET_MB}")
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "save", resolve_save(self.save))
        tiling = Tiling(self.tile, self.tile_overlap)  # checks them before any work
        object.__setattr__(self, "tile", tiling.tile)
        object.__setattr__(self, "tile_overlap", tiling.overlap)

    def recorded(self) -> dict[str, object]:
        """RECORDED_SETTINGS and their values, as summary.json lists them."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name in RECORDED_SETTINGS for value in [getattr(self, name)]}

"""The settings of one `segdeploy batch` run, through segtrain.common.settings: each field's default (the CLI reads
it here), its conversion and its rule."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from segdeploy.infer.batch.outputs import DEFAULT_SAVE, SAVE_CHOICES, resolve_save
from segdeploy.infer.batch.shards import Shard
from segdeploy.infer.pipeline import default_workers
from segdeploy.infer.predictor import DEFAULT_BATCH_SIZE
from segdeploy.infer.runtime import PROVIDER_CHOICES, RUNTIME_CHOICES
from segdeploy.infer.storage import is_remote, location
from segdeploy.infer.tiling import (
    DEFAULT_TILE_OVERLAP,
    MAX_TILE_OVERLAP,
    TILE_AUTO,
    TILE_OFF,
    TILE_SIZE_RANGE,
    TileError,
    parse_tile,
)
from segtrain.common.limits import MAX_ACTORS
from segtrain.common.settings import (
    ALPHA,
    COMMAND_LINE,
    RUN_BATCH_SIZE,
    THREADS,
    WORKERS,
    Checked,
    SettingError,
    between,
    one_of,
    setting,
)
from segtrain.common.system import available_memory
from segtrain.evaluation import TTA_MODES

ENGINES = ("local", "ray")  # who runs the images: this process, or Ray Data actors (segdeploy.infer.ray_batch)
MEMORY_SHARE = 4  # the default memory budget: a quarter of the memory available at start
MIN_MEMORY_BUDGET_MB = 256
FALLBACK_MEMORY_BUDGET_MB = 2048  # where the available memory cannot be read
MAX_MEMORY_BUDGET_MB = 1 << 24
# The settings summary.json records (its "settings"): those that shape the outputs and the speed.
RECORDED_SETTINGS = ("batch_size", "runtime", "threads", "workers", "alpha", "overwrite", "save", "legend", "tile",
                     "tile_overlap", "tta", "engine", "actors")


def default_memory_budget() -> int:
    """MB: 1/MEMORY_SHARE of the memory available at start (a container's limit included), at least
    MIN_MEMORY_BUDGET_MB; FALLBACK_MEMORY_BUDGET_MB where it cannot be read."""
    available = available_memory()
    if available is None:
        return FALLBACK_MEMORY_BUDGET_MB
    return max(MIN_MEMORY_BUDGET_MB, available // MEMORY_SHARE // 2**20)


def _sources(value: tuple) -> str | None:
    if not value:
        return "must name at least one folder, image or video file, quoted glob pattern, video URL or camera"
    bad = [s for s in value if not isinstance(s, (str, os.PathLike)) or not str(s)]
    return f"must be paths or glob patterns, got {bad[0]!r}" if bad else None


def _out_dir(value: object) -> str | None:
    if is_remote(value) or (isinstance(value, (str, os.PathLike)) and str(value)):
        return None
    return f"must be a folder or an object-store URL, got {value!r}"


def _save(value: tuple[str, ...]) -> str | None:
    unknown = [v for v in value if v not in SAVE_CHOICES]
    return f"must name outputs from {', '.join(SAVE_CHOICES)}, got {', '.join(unknown)}" if unknown else None


def _tile(value: object) -> str | None:
    try:
        parse_tile(value)
    except TileError:
        lo, hi = TILE_SIZE_RANGE
        return f"must be {TILE_AUTO}, {TILE_OFF} or a tile size in pixels from {lo} to {hi}, got {value!r}"
    return None


def _shard(value: object) -> str | None:
    return None if isinstance(value, Shard) else f"must be a Shard (segdeploy.infer.batch.shards), got {value!r}"


@dataclass(frozen=True)
class BatchConfig(Checked):
    """What to run over (`sources`: folders, image and video files, glob patterns, video URLs, camera indices; one
    may be given bare), where the outputs go, with which model, and how (the flags of `segdeploy batch`, by the
    same names)."""

    sources: tuple[str | Path, ...] = setting(rule=_sources)
    out_dir: Path | str = setting(rule=_out_dir)  # a local folder (Path) or an object-store URL (storage.location)
    model: Path = setting()
    batch_size: int = setting(DEFAULT_BATCH_SIZE, rule=RUN_BATCH_SIZE)
    provider: str = setting("auto", rule=one_of(PROVIDER_CHOICES))
    runtime: str = setting("auto", rule=one_of(RUNTIME_CHOICES))
    threads: int | None = setting(None, rule=THREADS)  # None: the runtime's own choice
    workers: int = setting(factory=default_workers, rule=WORKERS)
    alpha: float = setting(0.5, rule=ALPHA)
    overwrite: bool = setting(False)
    gt: Path | None = setting(None)
    image_ids: Path | None = setting(None)  # a COCO file whose image ids predictions.json takes (--gt gives them too)
    progress: bool | None = setting(None)  # None: a progress bar only when stderr is a terminal
    shard: Shard | None = setting(None, rule=_shard)  # do only this share of the inputs
    save: tuple[str, ...] = setting(DEFAULT_SAVE, rule=_save)  # the mask is always written (resolve_save)
    legend: bool = setting(False)
    tile: str | int = setting(TILE_AUTO, rule=_tile)
    tile_overlap: float = setting(DEFAULT_TILE_OVERLAP, rule=between(0, MAX_TILE_OVERLAP))
    tta: str = setting("off", rule=one_of(TTA_MODES))  # segtrain.evaluation.with_tta
    memory_budget: int = setting(factory=default_memory_budget, rule=between(1, MAX_MEMORY_BUDGET_MB))  # MB
    engine: str = setting(ENGINES[0], rule=one_of(ENGINES))  # local: this process; ray: Ray Data actors
    ray_address: str | None = setting(None)  # None: a running Ray instance, RAY_ADDRESS, or a new local one
    actors: int | None = setting(None, rule=between(1, MAX_ACTORS))  # None: as many as the cluster's CPUs hold

    NAMED_BY = COMMAND_LINE

    def __post_init__(self) -> None:
        if isinstance(self.sources, (str, os.PathLike)):
            object.__setattr__(self, "sources", (self.sources,))
        super().__post_init__()
        if self.engine != "ray" and (self.actors is not None or self.ray_address is not None):
            flag = "--actors" if self.actors is not None else "--ray-address"
            raise SettingError(f"{flag} applies to --engine ray (this run's engine is {self.engine}); "
                               "add --engine ray, or leave it out")
        for name, value in dict(sources=tuple(self.sources), save=resolve_save(self.save),
                                tile=parse_tile(self.tile), out_dir=location(self.out_dir)).items():
            object.__setattr__(self, name, value)

    def recorded(self) -> dict[str, object]:
        """RECORDED_SETTINGS and their values, as summary.json lists them."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name in RECORDED_SETTINGS for value in [getattr(self, name)]}

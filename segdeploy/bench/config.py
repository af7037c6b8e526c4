"""Settings of `segdeploy bench` (defaults and ranges live here; the command line reads them from here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segdeploy.bench.roofline import SGEMM_SIZE
from segdeploy.export.config import ExportConfig
from segdeploy.export.trace import MAX_BATCH_SIZE
from segdeploy.infer.runtime import GRAPH_OPTIMIZATION_LEVELS, PROVIDER_CHOICES, RUNTIME_CHOICES
from segtrain.common.errors import InputError, RunError
from segtrain.common.files import folder_problem
from segtrain.common.limits import MAX_INPUT_SIDE
from segtrain.common.settings import (
    RUN_BATCH_SIZE,
    THREADS,
    WORKERS,
    Checked,
    Each,
    at_least,
    between,
    default,
    one_of,
    setting,
)
from segtrain.common.system import usable_cores

BACKENDS = ("torch", "ort-fp32", "ort-int8", "ort-fp16", "ov-fp32", "ov-int8")
PRECISION = {"torch": "fp32", "ort-fp32": "fp32", "ort-int8": "int8", "ort-fp16": "fp16", "ov-fp32": "fp32",
             "ov-int8": "int8"}
RUNTIME_OF = {"ort": "onnxruntime", "ov": "openvino"}  # backend prefix -> the runtime behind it
SCHEDULES = ("auto", "interleaved", "sequential")
MAX_SGEMM_SIZE = 16384  # three float32 matrices of this side take 3 GiB
Echo = Callable[[str], None]


def backend_for(runtime: str, precision: str) -> str:
    """The bench backend that times `precision` with `runtime` ("openvino", "int8" -> "ov-int8")."""
    prefix = next(p for p, r in RUNTIME_OF.items() if r == runtime)
    return f"{prefix}-{precision}"


class BenchInputError(InputError):
    """Bad arguments or inputs (model files, sizes, data)."""


class BenchRunError(RunError):
    """A backend failed while running (for example a model with fixed input sizes)."""


@dataclass
class BenchConfig(Checked):
    """Settings of one bench run (segtrain.common.settings: each value converted and checked by its rule)."""

    models: list[Path] = setting(factory=list)  # none: default_models()
    image_sizes: tuple[int, ...] | None = setting(None, rule=Each(between(1, MAX_INPUT_SIDE)))  # None: the model's
    batch_sizes: tuple[int, ...] = setting((1, 4, 8), rule=Each(between(1, MAX_BATCH_SIZE)))
    runs: int = setting(10, rule=at_least(1))
    warmup: int = setting(2, rule=at_least(1))
    threads: int = setting(factory=usable_cores, rule=THREADS)
    backends: tuple[str, ...] = setting(BACKENDS, rule=Each(one_of(BACKENDS)))
    provider: str = setting("auto", rule=one_of(PROVIDER_CHOICES))
    onnx_dir: Path | None = setting(None)  # where checkpoints are exported (reused when up to date); None: temporary
    data: Path | None = setting(None)  # dataset root: INT8 calibration, accuracy, sample images
    calibration_images: int = setting(default(ExportConfig, "calibration_images"), rule=at_least(1))
    accuracy: bool = setting(True)
    accuracy_images: int | None = setting(None, rule=at_least(1))  # None: the whole validation split
    photos: Path | None = setting(None)  # a folder of photos: enables the end-to-end `segdeploy batch` figure
    e2e_batch_size: int = setting(4, rule=RUN_BATCH_SIZE)
    # the end-to-end runs' --runtime, one run per value and precision (e.g. auto,onnxruntime,openvino)
    runtime: tuple[str, ...] = setting(("auto",), rule=Each(one_of(RUNTIME_CHOICES)))
    e2e_workers: int | None = setting(None, rule=WORKERS)  # None: segdeploy batch's default
    graph_optimization: str = setting("all", rule=one_of(GRAPH_OPTIMIZATION_LEVELS))
    iobinding: bool = setting(False)
    channels_last: bool = setting(False)
    sgemm_size: int = setting(SGEMM_SIZE, rule=between(16, MAX_SGEMM_SIZE))
    schedule: str = setting("auto", rule=one_of(SCHEDULES))  # interleaved, sequential, auto: interleaved while
    # memory allows

    def to_dict(self) -> dict:
        """The settings as the report records them (paths as text)."""
        return {k: str(v) if isinstance(v, Path) else [str(p) for p in v] if k == "models" else v
                for k, v in dataclasses.asdict(self).items()}

    def check_folders(self) -> None:
        """BenchInputError when --photos or --data is not a usable folder (before any long work)."""
        if self.photos is not None:
            from segdeploy.infer.batch.sources import find_images

            if (problem := folder_problem(self.photos, "photo folder")) is not None:
                raise BenchInputError(f"{self.photos}: {problem}")
            if not find_images(Path(self.photos)):
                raise BenchInputError(f"{self.photos}: no images found for the end-to-end run")
        if self.data is not None and (problem := folder_problem(self.data, "dataset folder")) is not None:
            raise BenchInputError(f"{self.data}: {problem}")

"""Settings of `segdeploy bench`: every default lives here, and the command line reads it from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.export.options import DEFAULT_CALIBRATION_IMAGES
from segdeploy.infer.runtime import RUNTIME_CHOICES
from segtrain.common.errors import InputError, RunError
from segtrain.common.files import folder_problem
from segtrain.common.system import usable_cores

BACKENDS = ("torch", "ort-fp32", "ort-int8", "ort-fp16", "ov-fp32", "ov-int8")
PRECISION = {"torch": "fp32", "ort-fp32": "fp32", "ort-int8": "int8", "ort-fp16": "fp16", "ov-fp32": "fp32",
             "ov-int8": "int8"}
RUNTIME_OF = {"ort": "onnxruntime", "ov": "openvino"}  # backend prefix -> the runtime behind it


def backend_for(runtime: str, precision: str) -> str:
    """The bench backend that times `precision` with `runtime` ("openvino", "int8" -> "ov-int8")."""
    prefix = next(p for p, r in RUNTIME_OF.items() if r == runtime)
    return f"{prefix}-{precision}"
SCHEDULES = ("auto", "interleaved", "sequential")
Echo = Callable[[str], None]


class BenchInputError(InputError):
    """Bad arguments or inputs (model files, sizes, data); one line, exit code 2."""


class BenchRunError(RunError):
    """A backend failed while running (for example a model with fixed input sizes); exit code 1."""


@dataclass
class BenchConfig:
    """Settings of one bench run; the CLI fills it from its options."""

    models: list[Path]
    image_sizes: tuple[int, ...] | None = None  # None: each model's own input size
    batch_sizes: tuple[int, ...] = (1, 4, 8)
    runs: int = 10
    warmup: int = 2
    threads: int = field(default_factory=usable_cores)
    backends: tuple[str, ...] = BACKENDS
    provider: str = "auto"
    onnx_dir: Path | None = None  # where checkpoints are exported (reused when up to date); None: temporary
    data: Path | None = None  # dataset root: INT8 calibration, accuracy, sample images
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    accuracy: bool = True
    accuracy_images: int | None = None  # None: the whole validation split
    photos: Path | None = None  # a folder of photos: enables the end-to-end `segdeploy batch` figure
    e2e_batch_size: int = 4
    runtime: str = "auto"  # the end-to-end run's --runtime (segdeploy.infer.runtime.RUNTIME_CHOICES)
    e2e_workers: int | None = None  # decode and write threads of the pipeline; None: segdeploy batch's default
    graph_optimization: str = "all"
    iobinding: bool = False
    channels_last: bool = False
    sgemm_size: int = 2048
    schedule: str = "auto"  # interleaved | sequential | auto (interleaved while memory allows)

    def validate(self) -> None:
        if not self.models:
            raise BenchInputError("no model to benchmark")
        for name, value in (("runs", self.runs), ("warmup", self.warmup), ("threads", self.threads),
                            ("calibration images", self.calibration_images),
                            ("end-to-end batch size", self.e2e_batch_size),
                            ("end-to-end workers", self.e2e_workers or 1)):
            if value < 1:
                raise BenchInputError(f"{name} must be at least 1, got {value}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise BenchInputError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.image_sizes is not None and (not self.image_sizes or min(self.image_sizes) < 1):
            raise BenchInputError(f"image sizes must be positive integers, got {list(self.image_sizes)}")
        if self.runtime not in RUNTIME_CHOICES:
            raise BenchInputError(f"unknown runtime {self.runtime!r}; choose from {', '.join(RUNTIME_CHOICES)}")
        if self.schedule not in SCHEDULES:
            raise BenchInputError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise BenchInputError(f"unknown backend(s) {', '.join(unknown) or '(none)'}; choose from "
                                  f"{', '.join(BACKENDS)}")
        if self.photos is not None:
            from segdeploy.infer.batch.sources import find_images

            if (problem := folder_problem(self.photos, "photo folder")) is not None:
                raise BenchInputError(f"{self.photos}: {problem}")
            if not find_images(Path(self.photos)):
                raise BenchInputError(f"{self.photos}: no images found for the end-to-end run")
        if self.data is not None and (problem := folder_problem(self.data, "dataset folder")) is not None:
            raise BenchInputError(f"{self.data}: {problem}")

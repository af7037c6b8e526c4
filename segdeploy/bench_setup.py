"""What `segdeploy bench` runs on: its settings, and the models behind each MODEL argument.

A MODEL is a checkpoint (benched as its eager PyTorch model plus its ONNX FP32 and INT8 exports,
made with `segdeploy.export` into --onnx-dir or a temporary folder, and reused when they carry the
same checkpoint's sha256) or an .onnx file (benched with its .int8/.fp16 siblings). Everything a
run needs is checked here, before any long work: files, specs, image sizes against the
architecture's input divisor, calibration and validation data, photo folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.runtime import ModelLoadError, default_threads
from segtrain.contract import ModelSpec

BACKENDS = ("torch", "ort-fp32", "ort-int8", "ort-fp16")
PRECISION = {"torch": "fp32", "ort-fp32": "fp32", "ort-int8": "int8", "ort-fp16": "fp16"}
SCHEDULES = ("auto", "interleaved", "sequential")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
Echo = Callable[[str], None]


class BenchInputError(Exception):
    """Bad arguments or inputs (model files, sizes, data); one line, exit code 2."""


class BenchRunError(Exception):
    """A backend failed while running (for example a model with fixed input sizes); exit code 1."""


@dataclass
class BenchConfig:
    """Settings of one bench run; the CLI fills it from its options."""

    models: list[Path]
    image_sizes: tuple[int, ...] | None = None  # None: each model's own input size
    batch_sizes: tuple[int, ...] = (1, 4, 8)
    runs: int = 10
    warmup: int = 2
    threads: int = field(default_factory=default_threads)
    backends: tuple[str, ...] = BACKENDS
    provider: str = "auto"
    onnx_dir: Path | None = None  # where checkpoints are exported (reused when up to date); None: temporary
    data: Path | None = None  # dataset root: INT8 calibration, accuracy, sample images
    calibration_images: int = 32
    accuracy: bool = True
    accuracy_images: int | None = None  # None: the whole validation split
    photos: Path | None = None  # a folder of photos: enables the end-to-end `segdeploy batch` figure
    e2e_batch_size: int = 4
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
        if self.schedule not in SCHEDULES:
            raise BenchInputError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise BenchInputError(f"unknown backend(s) {', '.join(unknown) or '(none)'}; choose from "
                                  f"{', '.join(BACKENDS)}")
        if self.photos is not None:
            from segdeploy.batch import find_images

            if not Path(self.photos).is_dir():
                raise BenchInputError(f"{self.photos}: photo folder not found")
            if not find_images(Path(self.photos)):
                raise BenchInputError(f"{self.photos}: no images found for the end-to-end run")
        if self.data is not None and not Path(self.data).is_dir():
            raise BenchInputError(f"{self.data}: dataset folder not found")


# --------------------------------------------------------------------------------------------
# Models: what was asked for, resolved before any long work


@dataclass
class ModelRef:
    """One MODEL argument: a checkpoint or an .onnx file, with its spec and the sizes to run."""

    path: Path
    kind: str  # "checkpoint" | "onnx"
    name: str
    spec: ModelSpec
    sizes: list[tuple[int, int]]
    data: Path | None  # dataset for calibration and accuracy (--data, else the checkpoint's own)
    onnx: dict[str, Path] = field(default_factory=dict)  # precision -> file (filled for checkpoints later)


def resolve_model(path: Path, config: BenchConfig) -> ModelRef:
    """Read the spec of a checkpoint or .onnx file and check the requested image sizes fit it."""
    from segtrain.checkpoint import CheckpointError, load_checkpoint
    from segtrain.models import INPUT_DIVISORS

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from segdeploy.runtime import read_metadata

        try:
            spec = ModelSpec.from_metadata(read_metadata(path))
        except (ValueError, TypeError) as e:
            raise BenchInputError(f"{path}: no segtrain model spec in its metadata ({e})") from e
        except ModelLoadError as e:
            raise BenchInputError(str(e)) from e
        ref = ModelRef(path, "onnx", path.stem, spec, [], config.data, onnx_variants(path))
    else:
        from segdeploy.export import output_name

        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            raise BenchInputError(str(e)) from e
        recorded = (ckpt.get("config") or {}).get("data") if isinstance(ckpt.get("config"), dict) else None
        data = config.data or (Path(recorded) if recorded and Path(recorded).is_dir() else None)
        ref = ModelRef(path, "checkpoint", output_name(path), ckpt["spec"], [], data)
    divisor = INPUT_DIVISORS.get(ref.spec.arch, 1)
    sizes = [(s, s) for s in config.image_sizes] if config.image_sizes else [tuple(ref.spec.input_size)]
    for h, w in sizes:
        if h % divisor or w % divisor:
            raise BenchInputError(f"{path}: image size {h}x{w} is not a multiple of {divisor}, "
                                  f"which {ref.spec.arch} needs")
    ref.sizes = sizes
    return ref


def onnx_variants(path: Path) -> dict[str, Path]:
    """An exported model and the INT8/FP16 siblings `segdeploy export` writes beside it."""
    from segdeploy.runtime import read_metadata

    precision = json.loads(read_metadata(path).get("segdeploy.precision", '"fp32"'))
    found = {precision: path}
    if precision == "fp32":
        for variant in ("int8", "fp16"):
            sibling = path.with_suffix(f".{variant}.onnx")
            if sibling.is_file():
                found[variant] = sibling
    return found


def check_writable(path: Path | None) -> None:
    """Fail before the run, not after it, when a result file cannot be written."""
    if path is None:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=Path(path).parent):
            pass
    except OSError as e:
        raise BenchInputError(f"{path}: cannot write results there ({e.strerror or type(e).__name__})") from e


def resolve_models(config: BenchConfig) -> list[ModelRef]:
    refs = [resolve_model(p, config) for p in config.models]
    for ref in refs:
        check_inputs(ref, config)
    names = [r.name for r in refs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash and config.onnx_dir is not None:
        raise BenchInputError(f"two models export to the same name ({', '.join(clash)}) in {config.onnx_dir}; "
                              "bench them in separate runs or give separate --onnx-dir")
    return refs


def default_models(runs_dir: Path = Path("runs"), exported: Path = Path("exported")) -> list[Path]:
    """Every runs/*/best_model.pth, else every FP32 .onnx in exported/ (variants ride along)."""
    from segdeploy.export import find_checkpoints

    found = find_checkpoints(runs_dir)
    if not found and exported.is_dir():
        found = sorted(p for p in exported.glob("*.onnx") if p.suffixes[-2:-1] not in ([".int8"], [".fp16"]))
    if not found:
        raise BenchInputError(f"no MODEL given and no {runs_dir}/*/best_model.pth or {exported}/*.onnx to bench")
    return found


# --------------------------------------------------------------------------------------------
# ONNX variants of a checkpoint


def gpu_provider_available(provider: str) -> bool:
    import onnxruntime as ort

    if provider not in ("auto", "cuda", "tensorrt"):
        return False
    return any(p in ort.get_available_providers() for p in GPU_PROVIDERS)


def export_variants(ref: ModelRef, config: BenchConfig, out_dir: Path, echo: Echo) -> dict:
    """ONNX FP32 (+ INT8, FP16 as requested) of a checkpoint in `out_dir`; reuses files of the same weights."""
    from segdeploy.export import ExportError, ExportOptions, VerificationError, export_checkpoint
    from segtrain.checkpoint import file_sha256

    files = planned_exports(ref, config, out_dir)
    if all(_exported_from(f, file_sha256(ref.path)) for f in files.values()):
        echo(f"reusing {', '.join(str(f) for f in files.values())} (exported from the same checkpoint)")
        ref.onnx = files
        return {"reused": True, "seconds": 0.0, "files": {p: str(f) for p, f in files.items()}}
    opts = ExportOptions(out_dir=out_dir, verify=False, data=ref.data, int8="int8" in files, fp16="fp16" in files,
                         calibration_images=config.calibration_images)
    t0 = time.perf_counter()
    try:
        export_checkpoint(ref.path, opts, echo=lambda m: echo("  " + m))
    except ExportError as e:
        raise BenchInputError(str(e)) from e
    except VerificationError as e:  # not raised with verify=False; kept so a change there fails loudly
        raise RuntimeError(str(e)) from e
    ref.onnx = files
    return {"reused": False, "seconds": time.perf_counter() - t0, "files": {p: str(f) for p, f in files.items()}}


def planned_exports(ref: ModelRef, config: BenchConfig, out_dir: Path) -> dict[str, Path]:
    """precision -> the file `segdeploy export` writes for it (FP16 only where a GPU provider can run it)."""
    want = ["fp32"] + [p for p in ("int8", "fp16") if f"ort-{p}" in config.backends]
    if "fp16" in want and not gpu_provider_available(config.provider):
        want.remove("fp16")
    return {p: out_dir / (f"{ref.name}.onnx" if p == "fp32" else f"{ref.name}.{p}.onnx") for p in want}


def check_inputs(ref: ModelRef, config: BenchConfig) -> None:
    """Fail before any long work when a checkpoint's INT8 calibration or accuracy check has no data."""
    from segtrain.checkpoint import file_sha256
    from segtrain.coco import DataError, resolve_split

    needs_int8 = "ort-int8" in config.backends
    if ref.kind == "checkpoint" and needs_int8 and ref.data is None:
        reusable = config.onnx_dir is not None and all(
            _exported_from(f, file_sha256(ref.path)) for f in planned_exports(ref, config, config.onnx_dir).values())
        if not reusable:
            raise BenchInputError(f"{ref.path}: INT8 calibration needs real images and the checkpoint records no "
                                  "dataset here; pass --data DIR (or leave ort-int8 out of --backends)")
    if needs_int8 and config.accuracy and ref.data is not None:
        try:
            resolve_split(ref.data, "validation")
        except DataError as e:
            raise BenchInputError(f"INT8 accuracy needs a validation split: {e} (or pass --no-accuracy)") from e


def _exported_from(path: Path, sha256: str) -> bool:
    from segdeploy.runtime import read_metadata

    if not path.is_file():
        return False
    try:
        return json.loads(read_metadata(path).get("segdeploy.checkpoint_sha256", "null")) == sha256
    except (ModelLoadError, ValueError):
        return False


@contextmanager
def onnx_home(config: BenchConfig) -> Iterator[Path]:
    """--onnx-dir (kept, reused next time) or a temporary folder removed afterwards."""
    if config.onnx_dir is not None:
        try:
            Path(config.onnx_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BenchInputError(f"{config.onnx_dir}: cannot create the ONNX folder ({e.strerror})") from e
        yield Path(config.onnx_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix="segdeploy-bench-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

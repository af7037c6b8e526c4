"""What `segdeploy bench` runs on: the models behind each MODEL argument, and their ONNX files.

A MODEL is a checkpoint (benched as its eager PyTorch model plus its ONNX FP32 and INT8 exports,
made with `segdeploy.export` into --onnx-dir or a temporary folder, and reused when they carry the
same checkpoint's sha256) or an .onnx file (benched with its .int8/.fp16 siblings). Everything a
run needs is checked here, before any long work: files, specs, image sizes against the
architecture's input divisor, calibration and validation data.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.bench.config import PRECISION, BenchConfig, BenchInputError, Echo
from segdeploy.bench.report import ExportInfo
from segdeploy.export.artifact import exported_from, model_path
from segdeploy.infer.model_file import DEFAULT_MODEL_DIR, VARIANTS, fp32_name
from segdeploy.infer.runtime import gpu_provider_available, read_model_metadata
from segtrain.common.extras import installed
from segtrain.common.files import ensure_writable_dir, not_a_result_file
from segtrain.contract import ModelSpec
from segtrain.data.coco import DataError, resolve_split
from segtrain.training.runs import BEST_MODEL, RUNS_DIR, best_checkpoints, run_name


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
    from segtrain.training.checkpoint import Checkpoint

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        spec = read_model_metadata(path).spec
        ref = ModelRef(path, "onnx", path.stem, spec, [], config.data, onnx_variants(path))
    else:
        ckpt = Checkpoint.load(path)
        try:
            data = ckpt.data_root(config.data)
        except DataError:
            if config.data is not None:
                raise
            data = None  # random inputs, no calibration or accuracy data
        ref = ModelRef(path, "checkpoint", run_name(path), ckpt.spec, [], data)
    divisor = input_divisor(ref.spec.arch)
    sizes = [(s, s) for s in config.image_sizes] if config.image_sizes else [tuple(ref.spec.input_size)]
    for h, w in sizes:
        if h % divisor or w % divisor:
            raise BenchInputError(f"{path}: image size {h}x{w} is not a multiple of {divisor}, "
                                  f"which {ref.spec.arch} needs")
    ref.sizes = sizes
    return ref


def input_divisor(arch: str) -> int:
    """What the architecture's input sides must be multiples of (1 without PyTorch, where the registry cannot
    be imported: a size that does not fit then fails when the backend runs, as a BenchRunError)."""
    if not installed("train"):
        return 1
    from segtrain.models import INPUT_DIVISORS

    return INPUT_DIVISORS.get(arch, 1)


def onnx_variants(path: Path) -> dict[str, Path]:
    """An exported model and the INT8/FP16 siblings `segdeploy export` writes beside it."""
    precision = read_model_metadata(path).provenance.precision
    found = {precision: path}
    if precision == "fp32":
        for variant in VARIANTS:
            sibling = path.with_suffix(f".{variant}.onnx")
            if sibling.is_file():
                found[variant] = sibling
    return found


def check_writable(path: Path | None) -> None:
    """Fail before the run, not after it, when a result file cannot be written."""
    if path is None:
        return
    if (problem := not_a_result_file(path)) is not None:
        raise BenchInputError(f"{path}: {problem}; results go to a new or a regular file")
    try:
        ensure_writable_dir(Path(path).parent)
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


def default_models(runs_dir: Path = RUNS_DIR, exported: Path = DEFAULT_MODEL_DIR) -> list[Path]:
    """Every runs/*/best_model.pth, else every FP32 .onnx in exported/ (variants ride along)."""
    found = best_checkpoints(runs_dir)
    if not found and exported.is_dir():
        found = sorted(p for p in exported.glob("*.onnx") if fp32_name(p.name) == p.name)
    if not found:
        raise BenchInputError(f"no MODEL given and no {runs_dir}/*/{BEST_MODEL} or {exported}/*.onnx to bench")
    return found


# --------------------------------------------------------------------------------------------
# ONNX variants of a checkpoint


def export_for_bench(ref: ModelRef, config: BenchConfig, out_dir: Path, echo: Echo) -> ExportInfo:
    """ONNX FP32 (+ INT8, FP16 as requested) of a checkpoint in `out_dir`; reuses files of the same weights."""
    from segdeploy.export.exporter import ExportConfig, export_checkpoint
    from segtrain.common.files import file_sha256

    files = planned_exports(ref, config, out_dir)
    names = {p: str(f) for p, f in files.items()}
    if all(exported_from(f, file_sha256(ref.path)) for f in files.values()):
        echo(f"reusing {', '.join(names.values())} (exported from the same checkpoint)")
        ref.onnx = files
        return ExportInfo(reused=True, seconds=0.0, files=names)
    export = ExportConfig(out=out_dir, verify=False, data=ref.data, int8="int8" in files, fp16="fp16" in files,
                          calibration_images=config.calibration_images, overwrite=True)  # the bench's own folder
    t0 = time.perf_counter()
    export_checkpoint(ref.path, export, echo=lambda m: echo("  " + m))
    ref.onnx = files
    return ExportInfo(reused=False, seconds=time.perf_counter() - t0, files=names)


def planned_exports(ref: ModelRef, config: BenchConfig, out_dir: Path) -> dict[str, Path]:
    """precision -> the file `segdeploy export` writes for it (FP16 only where a GPU provider can run it)."""
    want = ["fp32"] + [p for p in VARIANTS if p in wanted_precisions(config)]
    if "fp16" in want and not gpu_provider_available(config.provider):
        want.remove("fp16")
    return {p: model_path(out_dir, ref.name, p) for p in want}


def wanted_precisions(config: BenchConfig) -> set[str]:
    """The ONNX precisions some requested backend runs (ort-int8 and ov-int8 share the INT8 file)."""
    return {PRECISION[b] for b in config.backends if b != "torch"}


def check_inputs(ref: ModelRef, config: BenchConfig) -> None:
    """Fail before any long work when a checkpoint's INT8 calibration or accuracy check has no data."""
    from segtrain.common.files import file_sha256

    needs_int8 = "int8" in wanted_precisions(config)
    if ref.kind == "checkpoint" and needs_int8 and ref.data is None:
        reusable = config.onnx_dir is not None and all(
            exported_from(f, file_sha256(ref.path)) for f in planned_exports(ref, config, config.onnx_dir).values())
        if not reusable:
            raise BenchInputError(f"{ref.path}: INT8 calibration needs real images and the checkpoint records no "
                                  "dataset here; pass --data DIR (or leave ort-int8 and ov-int8 out of --backends)")
    if needs_int8 and config.accuracy and ref.data is not None:
        try:
            resolve_split(ref.data, "validation")
        except DataError as e:
            raise BenchInputError(f"INT8 accuracy needs a validation split: {e} (or pass --no-accuracy)") from e


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

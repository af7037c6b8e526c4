"""The exported files: names, metadata, staging beside the final path, and the verification reports.

A model file is self-contained and its metadata_props carry the ModelSpec (``segtrain.*``) and the
Provenance (``segdeploy.*``). Every file is staged under a temporary name that carries its writer
(segtrain.common.files.owner_tag) and renamed into place only when complete and verified; each
export first sweeps the temporaries of dead writers from its folder (`prepare_out_dir`), and a
writer on another machine is taken for gone after `STALE_TEMP_SECONDS`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segdeploy.export.verify import ParityReport
from segdeploy.infer.model_file import variant_path
from segdeploy.infer.runtime import ModelLoadError, read_model_metadata
from segtrain.common.contained import contained_folder
from segtrain.common.errors import InputError
from segtrain.common.files import (
    NEW_FILE_MODE,
    atomic_write_text,
    ensure_writable_dir,
    owner_tag,
    sweep_orphans,
    temp_name_pattern,
)
from segtrain.contract import Provenance
from segtrain.training.checkpoint import Checkpoint

REPORT_SUFFIX = ".verify.json"
FAILED_REPORT_SUFFIX = ".failed.verify.json"
QUANTIZE_WORK = "quantize"  # .quantize.<writer>.<random>/: INT8 quantization's working folder
STALE_TEMP_SECONDS = 24 * 3600  # the staged model waits through verification and calibration: hours on a slow CPU
_TEMP_NAMES = (temp_name_pattern(rf".+\.onnx|.+{re.escape(REPORT_SUFFIX)}"),
               temp_name_pattern(QUANTIZE_WORK, suffix=""))


class ExportError(InputError):
    """Bad input to an export (checkpoint, data, output folder)."""


def model_path(out_dir: Path, name: str, precision: str = "fp32") -> Path:
    """<out>/<name>.onnx for FP32, <out>/<name>.<precision>.onnx for a variant (the naming `segdeploy batch`
    picks models by: segdeploy.infer.model_file)."""
    return variant_path(Path(out_dir) / f"{name}.onnx", precision)


def report_path(model: Path, failed: bool = False) -> Path:
    """<model stem>.verify.json (or .failed.verify.json) beside the model file."""
    return model.with_name(model.name.removesuffix(".onnx") + (FAILED_REPORT_SUFFIX if failed else REPORT_SUFFIX))


def fp32_provenance(ckpt: Checkpoint, exporter: str) -> Provenance:
    """Where the FP32 export's weights came from and how good they were."""
    return Provenance(precision="fp32", checkpoint=ckpt.path.name if ckpt.path else None,
                      checkpoint_sha256=ckpt.sha256() if ckpt.path else None, epoch=ckpt.epoch,
                      val_miou=ckpt.miou, exporter=exporter)


def exported_from(path: Path, checkpoint_sha256: str) -> bool:
    """Whether `path` is a model exported from the checkpoint with this sha256 (its provenance says so)."""
    if not Path(path).is_file():
        return False
    try:
        return read_model_metadata(path).provenance.checkpoint_sha256 == checkpoint_sha256
    except ModelLoadError:
        return False


def check_existing(files: dict[str, Path], checkpoint_sha256: str, overwrite: bool) -> list[str]:
    """Which of `files` (precision -> path) already are exports of this checkpoint, to be kept as they are.

    A file there from another checkpoint (or not a readable export) is an ExportError naming it,
    unless `overwrite`; with `overwrite` nothing is kept.
    """
    if overwrite:
        return []
    current = []
    for precision, path in files.items():
        if not Path(path).exists():
            continue
        if exported_from(path, checkpoint_sha256):
            current.append(precision)
            continue
        try:
            prov = read_model_metadata(path).provenance
            origin = (f"was exported from another checkpoint ({prov.checkpoint}, "
                      f"sha256 {str(prov.checkpoint_sha256)[:12]})")
        except ModelLoadError:
            origin = "is not an export of this checkpoint"
        raise ExportError(f"{path}: exists and {origin}; pass --overwrite to replace it, or choose another --out")
    return current


def set_metadata(proto: Any, metadata: dict[str, str]) -> None:
    """Replace metadata_props entries with these keys (others are kept)."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary path beside `final` (gone afterwards unless the caller renamed it into place)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{owner_tag()}.", suffix=".tmp",
                               dir=contained_folder(final.parent))
    os.close(fd)
    os.chmod(tmp, NEW_FILE_MODE)  # mkstemp makes 0600; a model is a file like any other
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def prepare_out_dir(out_dir: Path) -> list[Path]:
    """Create the folder, prove a file can be written there, and sweep dead exports' temporaries; returns those.

    Done before any long work.
    """
    try:
        ensure_writable_dir(out_dir)
    except OSError as e:
        raise ExportError(f"{out_dir}: cannot write exported models there ({e.strerror or type(e).__name__})") from e
    return [path for pattern in _TEMP_NAMES for path in sweep_orphans(out_dir, pattern, STALE_TEMP_SECONDS)]


def quantize_workdir(out: Path) -> tempfile.TemporaryDirectory:
    """A working folder for INT8 quantization beside `out`, named so a later export can sweep it if this one dies."""
    return tempfile.TemporaryDirectory(dir=contained_folder(out.parent), prefix=f".{QUANTIZE_WORK}.{owner_tag()}.")


def write_report(report: ParityReport, path: Path) -> None:
    atomic_write_text(path, report.to_json() + "\n", tag=owner_tag())

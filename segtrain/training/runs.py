"""A training run's folder: the names of its files, and which folder a run writes to (torch-free).

An existing run is never overwritten by accident: without --out a run goes to `runs/<model>/` or
the next free `runs/<model>-N/`; an --out that holds a run (one of RUN_FILES is there) is refused
unless --exist-ok or --resume; --resume continues in the folder of its last.pth (or --out), never
in a path stored inside the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segtrain.common.errors import InputError
from segtrain.common.files import ensure_writable_dir

RUNS_DIR = Path("runs")  # where runs go without --out
BEST_MODEL, LAST, METRICS_CSV, CONFIG_JSON = "best_model.pth", "last.pth", "metrics.csv", "config.json"
LOSS_PNG, MIOU_PNG, CONFUSION_PNG, SAMPLES_PNG = "loss.png", "miou.png", "confusion.png", "samples.png"
# Any of these: the folder holds a run. config.json alone does not: it is written before epoch 1, and a run
# stopped before any epoch finished has nothing to protect (the same command runs again).
RUN_FILES = (BEST_MODEL, LAST, METRICS_CSV)


class RunFolderError(InputError):
    """An output folder that cannot or must not be written to; the message says which and the choices."""


@dataclass(frozen=True)
class RunFolder:
    path: Path
    note: str  # the first line of the run's output says which folder and why


def best_checkpoints(runs_dir: Path = RUNS_DIR) -> list[Path]:
    """Every runs/*/best_model.pth (what `segdeploy export` and `bench` take without arguments)."""
    return sorted(Path(runs_dir).glob(f"*/{BEST_MODEL}"))


def run_name(checkpoint: Path) -> str:
    """runs/<name>/best_model.pth (or last.pth) -> <name>; any other file -> its stem."""
    checkpoint = Path(checkpoint)
    if checkpoint.name in (BEST_MODEL, LAST) and checkpoint.parent.name not in ("", "."):
        return checkpoint.parent.name
    return checkpoint.stem


def run_files(folder: Path) -> list[str]:
    """The run artifacts already in `folder` (empty when there are none, or no folder)."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder}: exists and is not a folder; choose another --out")


def claim_run_folder(folder: Path) -> None:
    """Create the chosen folder and prove a file can be written there, before any long work."""
    try:
        ensure_writable_dir(folder)
    except OSError as e:
        raise RunFolderError(f"{folder}: cannot write the run there ({e.strerror or type(e).__name__}); "
                             "choose another --out") from e


def choose_run_folder(model: str, out: str | Path | None = None, resume: str | Path | None = None,
                      exist_ok: bool = False, runs_dir: Path = RUNS_DIR) -> RunFolder:
    """The folder this run writes to; RunFolderError when it would replace another run's files."""
    if resume is not None:
        own = Path(resume).parent
        target = Path(out) if out is not None else own
        _check_folder(target)
        if out is not None and not _same(target, own) and run_files(target) and not exist_ok:
            raise RunFolderError(_refusal(target))
        return RunFolder(target, f"continuing the run of {resume} in {target}")
    if out is not None:
        target = Path(out)
        _check_folder(target)
        if run_files(target) and not exist_ok:
            raise RunFolderError(_refusal(target))
        return RunFolder(target, f"writing to {target}" + (" (--exist-ok: replacing the run there)"
                                                           if run_files(target) else ""))
    base = Path(runs_dir) / model
    _check_folder(base)
    if exist_ok or not run_files(base):
        return RunFolder(base, f"writing to {base}" + (" (--exist-ok: replacing the run there)"
                                                       if run_files(base) else ""))
    n = 2
    while run_files(Path(f"{base}-{n}")) or Path(f"{base}-{n}").is_file():
        n += 1
    target = Path(f"{base}-{n}")
    return RunFolder(target, f"writing to {target} ({base} holds an earlier run; --out chooses the folder)")


def _refusal(folder: Path) -> str:
    files = ", ".join(run_files(folder))
    return (f"{folder}: already holds a run ({files}); choose another --out, continue it with "
            f"--resume {folder / LAST}, or pass --exist-ok to write over it")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False

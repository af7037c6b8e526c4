"""What `segdeploy batch` runs on: the images its SOURCEs name, and the model when none is named (torch-free).

A SOURCE is a folder (every image under it, at any depth), an image file, or a glob pattern
(quoted, so the shell leaves it alone; ``**`` matches any depth). Each input gets a key, the path
its outputs mirror under --out: relative to the folder given, to the glob's fixed leading folder,
or just the file name for a file given directly.

Exported models are ``<name>.onnx`` (FP32) with optional variants ``<name>.int8.onnx`` and
``<name>.fp16.onnx`` beside it (`segdeploy export --int8 --fp16`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segtrain.errors import InputError
from segtrain.images import IMAGE_SUFFIXES, is_image_file

DEFAULT_MODEL_DIR = Path("exported")
PRECISIONS = ("fp32", "int8", "fp16")
VARIANTS = PRECISIONS[1:]  # <name>.<variant>.onnx beside <name>.onnx


class BatchInputError(InputError):
    """A problem with the batch's arguments (model choice, sources); the message says which."""


@dataclass(frozen=True)
class InputFile:
    """An input image: `key` is its path relative to the folder it was found in (POSIX form)."""

    key: str
    path: Path
    root: Path  # the folder `key` is relative to


def find_images(input_dir: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """Image files under `input_dir` (any depth, suffix in any case), relative and sorted.

    Folders in `exclude` (the output folder when it lies inside the input) are not entered.
    """
    root = Path(input_dir)
    excluded = {Path(p).resolve() for p in exclude}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() not in excluded)
        found.extend((here / f).relative_to(root) for f in sorted(filenames) if is_image_file(Path(f)))
    return found


def resolve_sources(sources: Sequence[str | Path], exclude: Sequence[Path] = ()) -> list[InputFile]:
    """The images the SOURCEs name, sorted by key; BatchInputError for a source that names none,
    or for two different files that would write the same outputs.

    A file named twice (a folder and a glob inside it) is done once, under the key it got first.
    """
    by_key: dict[str, InputFile] = {}
    seen: set[Path] = set()
    for source in sources:
        for item in _source_images(str(source), exclude):
            resolved = item.path.resolve()
            if resolved in seen:
                continue
            other = by_key.get(item.key)
            if other is not None:
                raise BatchInputError(f"{other.path} and {item.path} would both write the outputs of '{item.key}'; "
                                      "run them into separate --out folders")
            by_key[item.key] = item
            seen.add(resolved)
    return [by_key[key] for key in sorted(by_key)]


def _source_images(source: str, exclude: Sequence[Path]) -> list[InputFile]:
    path = Path(source)
    kinds = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    if path.is_dir():
        found = [InputFile(rel.as_posix(), path / rel, path) for rel in find_images(path, exclude)]
        if not found:
            raise BatchInputError(f"{source}: no images ({kinds}) found")
        return found
    if path.is_file():
        if not is_image_file(path):
            raise BatchInputError(f"{source}: not an image file (expected {kinds})")
        return [InputFile(path.name, path, path.parent)]
    if os.path.lexists(path):
        raise BatchInputError(f"{source}: not a regular file or folder")
    if glob.has_magic(source):
        return _glob_images(source, exclude, kinds)
    raise BatchInputError(f"{source}: does not exist (not a file, a folder or a glob pattern)")


def _glob_images(pattern: str, exclude: Sequence[Path], kinds: str) -> list[InputFile]:
    """Images matched by a glob pattern, keyed relative to its leading folder without wildcards."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        raise BatchInputError(f"{pattern}: no file or folder matches this pattern")
    found = []
    for match in map(Path, matches):
        if match.is_dir():
            found += [InputFile((match / rel).relative_to(base).as_posix(), match / rel, base)
                      for rel in find_images(match, exclude)]
        elif match.is_file() and is_image_file(match):
            found.append(InputFile(match.relative_to(base).as_posix(), match, base))
    if not found:
        raise BatchInputError(f"{pattern}: matches {len(matches)} path(s) but no images ({kinds})")
    return found


# --------------------------------------------------------------------------------------------
# The model


def variant_path(model: Path, precision: str) -> Path:
    """<name>.onnx for fp32, <name>.<precision>.onnx for a variant, whichever of them `model` is."""
    if precision not in PRECISIONS:
        raise BatchInputError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    base = fp32_name(Path(model).name)
    return Path(model).with_name(base if precision == "fp32" else base.removesuffix(".onnx") + f".{precision}.onnx")


def fp32_name(name: str) -> str:
    """The FP32 model's file name for a model or variant file name."""
    for variant in VARIANTS:
        if name.endswith(f".{variant}.onnx"):
            return name.removesuffix(f".{variant}.onnx") + ".onnx"
    return name


def default_model(model_dir: Path = DEFAULT_MODEL_DIR) -> Path:
    """The one FP32 .onnx model in `model_dir` (its .int8/.fp16 variants may sit beside it); BatchInputError
    when there are none or several."""
    models = sorted(Path(model_dir).glob("*.onnx")) if Path(model_dir).is_dir() else []
    if not models:
        raise BatchInputError(f"no --model given and {model_dir}/ holds no .onnx model "
                              "(run `segdeploy export` or pass --model)")
    fp32 = sorted({fp32_name(m.name) for m in models})
    if len(fp32) > 1:
        names = ", ".join(m.name for m in models)
        raise BatchInputError(f"no --model given and {model_dir}/ holds {len(fp32)} models ({names}); "
                              "choose one with --model")
    path = Path(model_dir) / fp32[0]
    if not path.is_file():
        raise BatchInputError(f"no --model given and {model_dir}/ holds only variants of {fp32[0]} "
                              f"({', '.join(m.name for m in models)}), not the model itself; pass --model")
    return path


def choose_model(model: Path | None, precision: str | None = None,
                 model_dir: Path = DEFAULT_MODEL_DIR) -> tuple[Path, str | None]:
    """(the model file to run, a note saying which was picked when it was not named exactly).

    No `model`: the FP32 model in `model_dir`. `precision` (fp32, int8, fp16): that variant of the
    model; BatchInputError when it is missing.
    """
    chosen = Path(model) if model is not None else default_model(model_dir)
    if precision is not None:
        chosen = variant_path(chosen, precision)
        if not chosen.is_file():
            how = f" (`segdeploy export --{precision}` writes it)" if precision in VARIANTS else ""
            raise BatchInputError(f"{chosen}: file not found{how}")
    if model is not None and chosen == Path(model):
        return chosen, None
    variants = sorted(p.name for p in chosen.parent.glob("*.onnx")
                      if p != chosen and fp32_name(p.name) == fp32_name(chosen.name))
    extra = f"; also there: {', '.join(variants)} (--precision picks one)" if variants else ""
    how = "no --model given" if model is None else f"--model {model} --precision {precision}"
    return chosen, f"{how}: using {chosen}{extra}"

"""What `segdeploy batch` runs on: the images under a folder, and the model when none is named (torch-free)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from segtrain.errors import InputError
from segtrain.images import is_image_file

DEFAULT_MODEL_DIR = Path("exported")


class BatchInputError(InputError):
    """A problem with the batch's arguments (model choice, folders); the message says which."""


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


def default_model(model_dir: Path = DEFAULT_MODEL_DIR) -> Path:
    """The one .onnx model in `model_dir`; BatchInputError when there are none or several."""
    models = sorted(Path(model_dir).glob("*.onnx")) if Path(model_dir).is_dir() else []
    if len(models) == 1:
        return models[0]
    if not models:
        raise BatchInputError(f"no --model given and {model_dir}/ holds no .onnx model "
                              "(run `segdeploy export` or pass --model)")
    names = ", ".join(m.name for m in models)
    raise BatchInputError(f"no --model given and {model_dir}/ holds {len(models)} models ({names}); "
                          "choose one with --model")

"""The optional parts of the install, and the one error for "this needs an extra that is not here" (torch-free).

The base install (`pip install segtrain`) is what inference needs: onnxruntime, onnx, numpy,
OpenCV, Pillow, pycocotools, click, tqdm, psutil. Training and export need the `train` extra
(PyTorch and friends), the second runtime the `openvino` extra. Commands import those packages
inside the functions that use them; when one is missing, `segtrain.common.commandline.ToolGroup` turns
the ImportError into a `MissingExtraError` (an input error) naming the extra to install, so no
command needs a check of its own.
"""

from __future__ import annotations

import importlib.util

from segtrain.common.errors import InputError

DISTRIBUTION = "segtrain"

# extra -> top-level modules that come with it (the first one stands for the extra in `installed`).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "torchvision", "segmentation_models_pytorch", "albumentations", "onnxscript", "onnx_ir",
              "matplotlib", "yaml", "safetensors", "timm", "sympy"),
    "openvino": ("openvino",),
}


class MissingExtraError(InputError):
    """A command or runtime needs an optional extra that is not installed."""


def install_command(extra: str) -> str:
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def extra_for_module(module: str | None) -> str | None:
    """The extra that provides top-level module `module` (or a submodule of it), or None."""
    top = (module or "").partition(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def missing_extra(error: ImportError, what: str = "this") -> MissingExtraError | None:
    """The MissingExtraError an ImportError stands for, or None when the module belongs to no extra."""
    extra = extra_for_module(error.name)
    if extra is None:
        return None
    return MissingExtraError(f"{what} needs the '{extra}' extra, which is not installed here (no module "
                             f"{error.name!r}): {install_command(extra)}")


def importable(module: str) -> bool:
    """Whether top-level `module` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install
        return False


def installed(extra: str) -> bool:
    """Whether the extra's main package can be imported here."""
    return importable(EXTRAS[extra][0])


def require(module: str, what: str) -> None:
    """MissingExtraError (naming the extra) unless top-level `module` of an extra can be imported."""
    if not importable(module):
        raise missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module), what)

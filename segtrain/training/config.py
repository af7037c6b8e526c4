"""The training configuration: one typed dataclass, and the one path every setting takes into it.

Settings arrive in layers, later ones winning: the config stored in a checkpoint (`--resume`), a
`--config` file (YAML or JSON, the flags' names with - or _), the command line. Every value of
every layer goes through `coerce`: the field's annotated type converts it (YAML's `lr: 1e-3` is
the string "1e-3" and becomes 0.001; `image_size: '64'` becomes 64) and the field's rule checks
it. A value that fails, or a key that is not a setting, is a one-line ConfigError naming the key
and where it came from (the file, or the flag). The resolved config is written next to the
outputs (`config.json`) and into every checkpoint.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from segtrain.common.errors import InputError
from segtrain.common.limits import MAX_INPUT_SIDE
from segtrain.common.system import usable_cores

LOSSES = ("auto", "ce", "ce+dice", "dice")
DEFAULT_LOSS = {"deeplab": "ce", "segnet": "ce+dice"}
LR_SCHEDULES = ("constant", "poly", "cosine")
PROGRESS_MODES = ("auto", "bar", "log", "off")
IMAGE_SIZE_STEP = 32
COMMAND_LINE = "--"  # the source name of flag values: errors then name the flag (--image-size)


class ConfigError(InputError):
    """A config file or value that cannot be used; the message names the file or flag and the key."""


@dataclass
class TrainConfig:
    model: str = "deeplab"
    data: str = "data"
    out: str | None = None            # None: runs/<model>, or the next free runs/<model>-N (segtrain.training.runs)
    categories: list[str] | None = None
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    patience: int | None = None       # None: no early stop
    image_size: int = 512
    encoder: str | None = None        # default per model: segtrain.models.DEFAULT_ENCODERS
    encoder_weights: str = "imagenet"
    loss: str = "auto"
    amp: bool | None = None           # None: fp16 on CUDA, off on CPU
    device: str = "auto"
    workers: int | None = None        # None: one fewer than the CPUs, at most 8
    seed: int = 0
    sync_bn: bool = False
    progress: str = "auto"            # auto: bar on a terminal, else log
    tensorboard: bool = False

    def resolved(self) -> TrainConfig:
        """Check every field, then fill the defaults that depend on other fields.

        `data` becomes an absolute path, so a checkpoint names its dataset from any folder.
        """
        from segtrain.models import DEFAULT_ENCODERS, MODELS

        c = TrainConfig(**{key: coerce(key, value, source="") for key, value in asdict(self).items()})
        problem = one_of(tuple(MODELS))(c.model)
        if problem:
            raise ConfigError(f"model {problem}")
        c.data = os.path.abspath(os.path.expanduser(c.data))
        c.encoder = c.encoder or DEFAULT_ENCODERS[c.model]
        c.loss = DEFAULT_LOSS.get(c.model, "ce") if c.loss == "auto" else c.loss
        if c.workers is None:
            c.workers = min(8, usable_cores() - 1)
        return c

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Rules: what each field accepts beyond its type. A rule returns the problem, or None.

Rule = Callable[[Any], "str | None"]


def at_least(low: float) -> Rule:
    return lambda v: None if v >= low else f"must be at least {low:g}, got {v:g}"


def one_of(choices: tuple[str, ...]) -> Rule:
    def rule(v: str) -> str | None:
        if v in choices:
            return None
        close = difflib.get_close_matches(v, choices, n=1, cutoff=0.7)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"must be one of {', '.join(choices)}, got {v!r}{hint}"

    return rule


def _image_size(v: int) -> str | None:
    if v % IMAGE_SIZE_STEP:
        return f"must be a multiple of {IMAGE_SIZE_STEP}, got {v}"
    if not IMAGE_SIZE_STEP <= v <= MAX_INPUT_SIDE:
        return f"must be between {IMAGE_SIZE_STEP} and {MAX_INPUT_SIDE}, got {v}"
    return None


def _non_empty(v: Any) -> str | None:
    return None if len(v) else "must not be empty"


RULES: dict[str, Rule] = {
    "model": _non_empty, "data": _non_empty, "out": _non_empty, "categories": _non_empty,
    "epochs": at_least(1), "batch_size": at_least(1), "lr": at_least(0), "weight_decay": at_least(0),
    "lr_schedule": one_of(LR_SCHEDULES), "warmup_epochs": at_least(0), "patience": at_least(1),
    "image_size": _image_size, "encoder": _non_empty, "encoder_weights": _non_empty, "loss": one_of(LOSSES),
    "device": _non_empty, "workers": at_least(0), "seed": at_least(0), "progress": one_of(PROGRESS_MODES),
}


# --------------------------------------------------------------------------------------------
# Conversion by the annotated type


class _Bad(ValueError):
    """A value that does not convert; the message is the problem ("must be ...")."""


def _to_int(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise _Bad(f"must be a whole number, got {v!r}")


def _to_float(v: Any) -> float:
    out = None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        out = float(v)
    elif isinstance(v, str):
        try:
            out = float(v.strip())
        except ValueError:
            pass
    if out is None:
        raise _Bad(f"must be a number, got {v!r}")
    if not math.isfinite(out):
        raise _Bad(f"must be a finite number, got {v!r}")
    return out


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, str)) and str(v).strip().lower() in _TRUE + _FALSE:
        return str(v).strip().lower() in _TRUE
    raise _Bad(f"must be true or false, got {v!r}")


def _to_str(v: Any) -> str:
    if isinstance(v, (str, Path)):
        return str(v)
    raise _Bad(f"must be text, got {v!r}")


def _to_str_list(v: Any) -> list[str]:
    """'person,cat,37' or [person, cat, 37] (names or COCO ids)."""
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    if isinstance(v, (list, tuple)) and all(isinstance(s, (str, int)) and not isinstance(s, bool) for s in v):
        return [str(s).strip() for s in v if str(s).strip()]
    raise _Bad(f"must be a list of names or ids (or 'a,b,c'), got {v!r}")


CONVERTERS: dict[Any, Callable[[Any], Any]] = {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str,
                                               list[str]: _to_str_list}
_HINTS = typing.get_type_hints(TrainConfig)
SETTINGS = tuple(f.name for f in fields(TrainConfig))


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of an annotation like `int | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def where(key: str, source: str) -> str:
    """How an error names a setting: the flag for command-line values, else `<file>: key`."""
    if source == COMMAND_LINE:
        return "--" + key.replace("_", "-")
    return f"{source}: {key}" if source else key


def check_known(key: str, source: str) -> None:
    if key not in SETTINGS:
        close = difflib.get_close_matches(key, SETTINGS, n=1, cutoff=0.7)
        hint = f"did you mean {close[0]!r}?" if close else f"known settings: {', '.join(SETTINGS)}"
        raise ConfigError(f"{source}: unknown setting {key!r} ({hint})")


def coerce(key: str, value: Any, source: str) -> Any:
    """`value` converted to setting `key`'s type and checked by its rule; ConfigError naming key and source."""
    check_known(key, source)
    kind, optional = _split_optional(_HINTS[key])
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where(key, source)} must be set (it has no 'none' value)")
    try:
        converted = CONVERTERS[kind](value)
    except _Bad as e:
        raise ConfigError(f"{where(key, source)} {e}") from None
    problem = RULES[key](converted) if key in RULES else None
    if problem:
        raise ConfigError(f"{where(key, source)} {problem}")
    return converted


def build_config(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> TrainConfig:
    """A TrainConfig from (source, settings) layers, later layers winning; every value coerced.

    `source` is a file name, or COMMAND_LINE for flag values.
    """
    values: dict[str, Any] = {}
    for source, settings in layers:
        for key, value in settings.items():
            values[key] = coerce(key, value, source)
    return TrainConfig(**values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or YAML file with the flags' names (- or _); keys are checked here."""
    path = Path(path)
    if not path.is_file():  # a folder, a FIFO (reading would block) or nothing at all
        raise ConfigError(f"{path}: {'not a regular file' if path.exists() else 'config file not found'}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({getattr(e, 'strerror', None) or e})") from e
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            data = {} if data is None else data
        else:
            data = json.loads(text)
    except Exception as e:  # JSON and YAML parsers raise their own error types
        raise ConfigError(f"{path}: malformed config file ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config file must hold a mapping of settings")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    for key in data:
        check_known(key, str(path))
    return data

"""Settings of a command: one typed dataclass per command, every value through one conversion and one rule.

A command's settings are a dataclass whose fields are declared with `setting(default, rule=...)`.
Values arrive from the command line, a settings file, a stored checkpoint or Python; each goes
through `coerce`: the field's annotated type converts it (YAML's `lr: 1e-3` is the string "1e-3"
and becomes 0.001) and the field's rule checks it. A value that fails, or a key that is not a
setting, is a one-line SettingError naming the key and where it came from: the flag for
command-line values (`--image-size`), else `<source>: key`. click options read their defaults
from the same fields (`default`), so each default is written once.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from segtrain.common.errors import InputError
from segtrain.common.limits import MAX_RUN_BATCH_SIZE, MAX_THREADS, MAX_WORKERS

COMMAND_LINE = "--"  # the source name of flag values: errors then name the flag (--image-size)
Rule = Callable[[Any], "str | None"]  # the problem with a converted value, or None
T = TypeVar("T")


class SettingError(InputError):
    """A setting that cannot be used; the message names the flag or the source and the key."""


def setting(default: Any = dataclasses.MISSING, *, rule: Rule | None = None,
            factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its default (or default factory) and the rule its values must pass."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"rule": rule})


# --------------------------------------------------------------------------------------------
# Rules: what a field accepts beyond its type.


def _shown(v: float) -> str:
    """A number as messages show it: an int in full (1 << 24 as 16777216), a float in the shortest form."""
    return str(v) if isinstance(v, int) else f"{v:g}"


@dataclass(frozen=True)
class Range:
    """A number from `low` to `high` (either may be open); the command line builds its option type from it."""

    low: float | None = None
    high: float | None = None

    def __call__(self, v: float) -> str | None:
        if self.high is None:
            return None if v >= self.low else f"must be at least {_shown(self.low)}, got {_shown(v)}"
        if self.low is None:
            return None if v <= self.high else f"must be at most {_shown(self.high)}, got {_shown(v)}"
        if self.low <= v <= self.high:
            return None
        return f"must be from {_shown(self.low)} to {_shown(self.high)}, got {_shown(v)}"


def at_least(low: float) -> Range:
    return Range(low, None)


def between(low: float, high: float) -> Range:
    return Range(low, high)


@dataclass(frozen=True)
class OneOf:
    """One of `choices`; a near miss is named."""

    choices: tuple[str, ...]

    def __call__(self, v: str) -> str | None:
        if v in self.choices:
            return None
        close = difflib.get_close_matches(v, self.choices, n=1, cutoff=0.7)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"must be one of {', '.join(self.choices)}, got {v!r}{hint}"


def one_of(choices: Iterable[str]) -> OneOf:
    return OneOf(tuple(choices))


@dataclass(frozen=True)
class Each:
    """A list that is not empty and whose every item passes `rule`."""

    rule: Rule

    def __call__(self, values: Any) -> str | None:
        if not len(values):
            return "must not be empty"
        return next(filter(None, map(self.rule, values)), None)


def non_empty(v: Any) -> str | None:
    return None if len(v) else "must not be empty"


# The rules of numbers several entry points take (the command lines, the Python API): each range once.
THREADS = between(1, MAX_THREADS)
RUN_BATCH_SIZE = between(1, MAX_RUN_BATCH_SIZE)
WORKERS = between(1, MAX_WORKERS)
ALPHA = between(0, 1)  # an overlay's opacity (nan fails every comparison, so it is refused too)


def check_argument(name: str, value: Any, kind: type, rule: Rule) -> Any:
    """`value` of a Python API argument converted to `kind` and checked by `rule` (the rule of the option it
    matches); ValueError "name must be ..." otherwise."""
    try:
        converted = CONVERTERS[kind](value)
    except _Bad as e:
        raise ValueError(f"{name} {e}") from None
    problem = rule(converted)
    if problem:
        raise ValueError(f"{name} {problem}")
    return converted


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


def _to_path(v: Any) -> Path:
    if isinstance(v, (str, Path)) and str(v):
        return Path(v)
    raise _Bad(f"must be a path, got {v!r}")


def _to_str_list(v: Any) -> list[str]:
    """'person,cat,37' or [person, cat, 37] (names or ids)."""
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    if isinstance(v, (list, tuple)) and all(isinstance(s, (str, int)) and not isinstance(s, bool) for s in v):
        return [str(s).strip() for s in v if str(s).strip()]
    raise _Bad(f"must be a list of names or ids (or 'a,b,c'), got {v!r}")


def _to_int_tuple(v: Any) -> tuple[int, ...]:
    """'1,4,8' or [1, 4, 8]."""
    items = v.split(",") if isinstance(v, str) else v
    if isinstance(items, (list, tuple)):
        try:
            return tuple(_to_int(i) for i in items if not (isinstance(i, str) and not i.strip()))
        except _Bad:
            pass
    raise _Bad(f"must be a list of whole numbers (or '1,4,8'), got {v!r}")


def _to_str_tuple(v: Any) -> tuple[str, ...]:
    return tuple(_to_str_list(v))


def _to_path_list(v: Any) -> list[Path]:
    if isinstance(v, (list, tuple)):
        return [_to_path(p) for p in v]
    raise _Bad(f"must be a list of paths, got {v!r}")


CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    int: _to_int, float: _to_float, bool: _to_bool, str: _to_str, Path: _to_path, list[str]: _to_str_list,
    tuple[int, ...]: _to_int_tuple, tuple[str, ...]: _to_str_tuple, list[Path]: _to_path_list}


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of an annotation like `int | None`; a union of several types
    other than None is returned whole (no conversion: only the rule checks it)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007
    return hint, False


# --------------------------------------------------------------------------------------------
# The mechanism


def names(cls: type) -> tuple[str, ...]:
    """The settings of dataclass `cls`, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls))


def kind_of(cls: type, key: str) -> tuple[Any, bool]:
    """(the annotated type of setting `key`, whether None is allowed)."""
    return _split_optional(_type_hints(cls)[key])


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """`cls`'s annotations, evaluated once (get_type_hints evaluates every one of them at each call)."""
    return typing.get_type_hints(cls)


def rule_of(cls: type, key: str) -> Rule | None:
    return next(f.metadata.get("rule") for f in dataclasses.fields(cls) if f.name == key)


def default(cls: type, name: str) -> Any:
    """The default of setting `name`: click options read their defaults from here."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name}")


def where(key: str, source: str) -> str:
    """How an error names a setting: the flag for command-line values, else `<source>: key`."""
    if source == COMMAND_LINE:
        return "--" + key.replace("_", "-")
    return f"{source}: {key}" if source else key


def check_known(cls: type, key: str, source: str) -> None:
    known = names(cls)
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
        hint = f"did you mean {close[0]!r}?" if close else f"known settings: {', '.join(known)}"
        raise SettingError(f"{source if source and source != COMMAND_LINE else cls.__name__}: unknown setting "
                           f"{key!r} ({hint})")


def coerce(cls: type, key: str, value: Any, source: str) -> Any:
    """`value` converted to setting `key`'s type and checked by its rule; SettingError naming key and source."""
    check_known(cls, key, source)
    kind, optional = kind_of(cls, key)
    if value is None:
        if optional:
            return None
        raise SettingError(f"{where(key, source)} must be set (it has no 'none' value)")
    try:
        converted = CONVERTERS[kind](value) if kind in CONVERTERS else value
    except _Bad as e:
        raise SettingError(f"{where(key, source)} {e}") from None
    rule = rule_of(cls, key)
    problem = rule(converted) if rule is not None else None
    if problem:
        raise SettingError(f"{where(key, source)} {problem}")
    return converted


def build(cls: type[T], layers: Iterable[tuple[str, Mapping[str, Any]]]) -> T:
    """A `cls` from (source, settings) layers, later layers winning; every value coerced.

    `source` is a file name, or COMMAND_LINE for flag values.
    """
    values: dict[str, Any] = {}
    for source, layer in layers:
        for key, value in layer.items():
            values[key] = coerce(cls, key, value, source)
    return cls(**values)


def checked_values(obj: Any, source: str = "") -> dict[str, Any]:
    """Every setting of dataclass instance `obj`, converted and checked (for `__post_init__` and `resolved`)."""
    return {f.name: coerce(type(obj), f.name, getattr(obj, f.name), source) for f in dataclasses.fields(obj)}


class Checked:
    """Base of a settings dataclass whose every value is converted and checked when it is made (from the command
    line, Python or `dataclasses.replace`); a bad one is a SettingError naming the setting."""

    NAMED_BY = ""  # how errors name a setting: "" by its key, COMMAND_LINE by its flag

    def __post_init__(self) -> None:
        for key, value in checked_values(self, self.NAMED_BY).items():
            object.__setattr__(self, key, value)

"""The one settings mechanism: conversion by annotated type, rules per field, errors naming the source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from segtrain.common.settings import (
    COMMAND_LINE,
    SettingError,
    at_least,
    between,
    build,
    checked_values,
    default,
    one_of,
    setting,
)


@dataclass(frozen=True)
class Demo:
    sizes: tuple[int, ...] = setting((1, 4), rule=lambda v: None if v and min(v) >= 1 else "must be positive")
    names: tuple[str, ...] = setting(("mask",))
    folder: Path | None = setting(None)
    alpha: float = setting(0.5, rule=between(0, 1))
    tile: str | int = setting("auto", rule=lambda v: None if v == "auto" or isinstance(v, int) else "bad tile")
    mode: str = setting("fast", rule=one_of(("fast", "slow")))
    workers: int = setting(factory=lambda: 3, rule=at_least(1))

    def __post_init__(self) -> None:
        for key, value in checked_values(self).items():
            object.__setattr__(self, key, value)


def test_values_are_converted_by_their_annotated_type() -> None:
    d = build(Demo, [("s.yaml", {"sizes": "1,4,8", "names": "mask, overlay", "folder": "out", "alpha": "0.25"})])
    assert d.sizes == (1, 4, 8) and d.names == ("mask", "overlay") and d.folder == Path("out") and d.alpha == 0.25
    assert Demo(tile=512).tile == 512 and Demo().workers == 3  # a union of types is checked by its rule only


@pytest.mark.parametrize(("values", "message"), [
    ({"alpha": "nan"}, "--alpha must be a finite number, got 'nan'"),
    ({"alpha": 5}, "--alpha must be from 0 to 1, got 5"),
    ({"sizes": "1,x"}, "--sizes must be a list of whole numbers (or '1,4,8'), got '1,x'"),
    ({"sizes": "0"}, "--sizes must be positive"),
    ({"mode": "fats"}, "--mode must be one of fast, slow, got 'fats' (did you mean 'fast'?)"),
    ({"workers": None}, "--workers must be set (it has no 'none' value)"),
    ({"tile": "big"}, "--tile bad tile"),
    ({"mood": "fast"}, "Demo: unknown setting 'mood' (did you mean 'mode'?)"),
])
def test_a_bad_value_is_one_line_naming_the_flag(values: dict, message: str) -> None:
    with pytest.raises(SettingError) as err:
        build(Demo, [(COMMAND_LINE, values)])
    assert str(err.value) == message


def test_python_callers_are_checked_by_the_same_rules() -> None:
    with pytest.raises(SettingError, match=r"^alpha must be from 0 to 1, got -3$"):
        Demo(alpha=-3)


def test_default_reads_the_field() -> None:
    assert default(Demo, "sizes") == (1, 4) and default(Demo, "workers") == 3
    with pytest.raises(KeyError):
        default(Demo, "nothing")

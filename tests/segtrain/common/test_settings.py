"""The one settings mechanism: conversion by annotated type, rules per field, errors naming the source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from segtrain.common.settings import (
    COMMAND_LINE,
    Each,
    SettingError,
    at_least,
    between,
    build,
    checked_values,
    default,
    one_of,
    rule_of,
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


def test_each_checks_a_list_item_by_item() -> None:
    rule = Each(between(1, 8))
    assert rule((1, 8)) is None and rule(()) == "must not be empty" and rule((2, 9)) == "must be from 1 to 8, got 9"


# Every command's option of a ranged or listed setting gets click's type from that setting's rule, so the range
# lives once, in the dataclass: the command line and Python callers are held to the same bars.
@pytest.mark.parametrize(("cls", "name", "bad", "message"), [
    ("ExportConfig", "opset", 30, "opset must be from 18 to 23, got 30"),
    ("ExportConfig", "min_agreement", 101, "min_agreement must be from 0 to 100, got 101"),
    ("BenchConfig", "batch_sizes", (1, 0), "batch_sizes must be from 1 to 4096, got 0"),
    ("BenchConfig", "backends", ("torch", "tpu"), "backends must be one of torch, ort-fp32, ort-int8, ort-fp16, "
                                                  "ov-fp32, ov-int8, got 'tpu'"),
    ("BenchConfig", "sgemm_size", 8, "sgemm_size must be from 16 to 16384, got 8"),
    ("CheckpointEvaluateConfig", "batch_size", 0, "batch_size must be at least 1, got 0"),
])
def test_command_settings_and_their_options_share_one_rule(cls: str, name: str, bad: object, message: str) -> None:
    import click

    from segdeploy.bench.config import BenchConfig
    from segdeploy.export.config import ExportConfig
    from segtrain.common.commandline import IntList, NameList, option_type
    from segtrain.training.config import CheckpointEvaluateConfig

    config = {"ExportConfig": ExportConfig, "BenchConfig": BenchConfig,
              "CheckpointEvaluateConfig": CheckpointEvaluateConfig}[cls]
    required = {"checkpoint": "x.pth"} if config is CheckpointEvaluateConfig else {}
    with pytest.raises(SettingError) as err:
        config(**required, **{name: bad})
    assert str(err.value) == message
    rule, kind = rule_of(config, name), option_type(config, name)
    if isinstance(kind, IntList):
        assert kind.maximum == rule.rule.high
    elif isinstance(kind, NameList):
        assert kind.choices == rule.rule.choices
    else:
        assert isinstance(kind, (click.IntRange, click.FloatRange)) and (kind.min, kind.max) == (rule.low, rule.high)
    with pytest.raises(click.BadParameter):
        kind.convert(",".join(map(str, bad)) if isinstance(bad, tuple) else str(bad), None, None)

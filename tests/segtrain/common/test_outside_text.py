"""The bounded reader for outside text (segtrain.common.outside_text): an alias bomb, deep nesting, huge strings,
FIFOs and oversized files are refused in one line naming the source and the key; environment values are checked
like the options they stand for."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from segtrain.cli import main
from segtrain.common.errors import InputError
from segtrain.common.limits import MAX_NESTING, MAX_STRING_CHARS
from segtrain.common.outside_text import (
    OutsideTextError,
    env_value,
    parse_json,
    parse_yaml,
    read_json,
    read_text,
)
from segtrain.common.settings import between

ALIAS_BOMB = """\
a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
categories: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_alias_bomb_is_refused_at_once() -> None:
    t0 = time.perf_counter()
    with pytest.raises(OutsideTextError, match=r"cfg.yaml: malformed YAML \(aliases \(\*a\) are not accepted"):
        parse_yaml(ALIAS_BOMB, "cfg.yaml")
    assert time.perf_counter() - t0 < 2


def test_fit_refuses_an_alias_bomb_in_a_known_setting_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(ALIAS_BOMB.replace("categories:", "categories:"))
    result = CliRunner().invoke(main, ["fit", "deeplab", "--config", str(path), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: malformed config file (aliases"), lines


def test_anchors_without_aliases_and_plain_values_still_read() -> None:
    assert parse_yaml("epochs: &e 3\nlr: 1e-3\n", "c.yaml") == {"epochs": 3, "lr": "1e-3"}


@pytest.mark.parametrize("parse", [parse_json, parse_yaml])
def test_deep_nesting_is_refused_not_a_recursion_error(parse) -> None:
    for depth in (MAX_NESTING + 1, 100_000):
        with pytest.raises(OutsideTextError, match=f"nested more than {MAX_NESTING} levels deep"):
            parse("[" * depth + "]" * depth, "doc")
    assert parse("[" * MAX_NESTING + "]" * MAX_NESTING, "doc") is not None


@pytest.mark.parametrize("parse", [parse_json, parse_yaml])
def test_a_ten_megabyte_string_is_refused_naming_its_key(parse) -> None:
    text = '{"categories": [{"name": "' + "x" * 10_000_000 + '"}]}'
    with pytest.raises(OutsideTextError, match=r"doc: categories\[0\]\.name: a string of 10000000 characters"):
        parse(text, "doc")
    assert parse('{"a": "' + "x" * MAX_STRING_CHARS + '"}', "doc")["a"] == "x" * MAX_STRING_CHARS


def test_a_ten_megabyte_key_is_refused_too() -> None:
    with pytest.raises(OutsideTextError, match="a string of 10000000 characters"):
        parse_json('{"' + "k" * 10_000_000 + '": 1}', "doc")


def test_files_are_read_only_when_regular_and_small(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(OutsideTextError, match=r"fifo.json: not a regular file \(a FIFO\)"):
        read_json(tmp_path / "fifo.json")  # never blocks: opened without waiting for a writer
    (tmp_path / "big.json").write_text("[" + "0," * 1000 + "0]")
    with pytest.raises(OutsideTextError, match="big.json: the summary is larger than 100 bytes; refused"):
        read_text(tmp_path / "big.json", 100, "summary")
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json", "summary")
    (tmp_path / "latin.json").write_bytes(b'"\xff"')
    with pytest.raises(OutsideTextError, match="not UTF-8"):
        read_json(tmp_path / "latin.json")


def test_environment_values_are_checked_like_their_option() -> None:
    rule = between(1, 64)
    assert env_value("N", int, rule, 7, {}) == 7
    assert env_value("N", int, rule, 7, {"N": " 12 "}) == 12
    with pytest.raises(InputError, match=r"^\$N='abc': must be a whole number, got 'abc' \(like --threads\)$"):
        env_value("N", int, rule, 7, {"N": "abc"}, option="--threads")
    with pytest.raises(InputError, match=r"^\$N='100000': must be from 1 to 64, got 100000$"):
        env_value("N", int, rule, 7, {"N": "100000"})
    with pytest.raises(InputError, match=r"^\$N='1\\n\\x00x': must be a whole number"):
        env_value("N", int, rule, 7, {"N": "1\n\0x"})  # shown terminal-safe, on one line


@pytest.mark.parametrize(("environ", "message"), [
    ({"WORLD_SIZE": "abc"}, r"\$WORLD_SIZE='abc': must be a whole number"),
    ({"WORLD_SIZE": "0"}, r"\$WORLD_SIZE='0': must be from 1 to 65536"),
    ({"WORLD_SIZE": "2"}, r"\$WORLD_SIZE=2 but \$RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, r"\$RANK='2': must be from 0 to 1, got 2"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "-1"}, r"\$LOCAL_RANK='-1': must be from 0"),
])
def test_torchrun_variables_are_checked(environ: dict, message: str) -> None:
    pytest.importorskip("torch")
    from segtrain.training.distributed import torchrun_environment

    with pytest.raises(InputError, match=message):
        torchrun_environment(environ)
    assert torchrun_environment({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == (1, 2, 1)
    assert torchrun_environment({}) == (0, 1, 0)


def test_fit_with_a_hostile_world_size_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   sample_root: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "abc")
    result = CliRunner().invoke(main, ["fit", "segnet", "--data", str(sample_root), "--out", str(tmp_path / "r"),
                                       "--epochs", "1", "--encoder-weights", "none", "--image-size", "32"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == "Error: $WORLD_SIZE='abc': must be a whole number, got 'abc'"


@pytest.mark.parametrize("value", ["1", "lots", "-5", "9" * 30])
def test_the_pixel_limit_variable_is_checked_in_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from segtrain.data.images import max_image_pixels

    monkeypatch.setenv("SEGTRAIN_MAX_IMAGE_PIXELS", value)
    with pytest.raises(InputError, match=r"^\$SEGTRAIN_MAX_IMAGE_PIXELS='"):
        max_image_pixels()

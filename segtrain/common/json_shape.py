"""The shape of a JSON document made by someone else, checked once, with the path of the first mismatch (torch-free).

A shape is declared as a value (`Record`, `ListOf`, `Integer`, ...) and `check(document, shape)`
raises `ShapeError` naming the JSON path of the first value that does not fit and what was
expected there, e.g. ``images[3].height: expected a positive integer, found null``. Readers of
labels.json (segtrain.data.coco_schema) declare shapes here; records of dataclasses (the batch and
shard summaries, the bench report) get theirs from their annotations (segtrain.common.json_record).
Containers add their key or index to the path only while an error propagates, so a document that
fits costs one type test per value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


class ShapeError(ValueError):
    """A value that does not fit its declared shape; `path` is where, in JSON-path form."""

    def __init__(self, expected: str, value: object = None, missing: bool = False) -> None:
        self.expected, self.value, self.missing = expected, value, missing
        self.parts: list[str] = []
        super().__init__(expected)

    def inside(self, part: str) -> ShapeError:
        self.parts.insert(0, part)
        return self

    @property
    def path(self) -> str:
        return "".join(self.parts).removeprefix(".") or "(top level)"

    def __str__(self) -> str:
        if self.missing:
            return f"{self.path}: missing (expected {self.expected})"
        return f"{self.path}: expected {self.expected}, found {describe(self.value)}"


def describe(value: object, limit: int = 40) -> str:
    """A short JSON-like rendering of `value` for an error message (one line, never the whole document)."""
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=True)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_integer(value: object) -> bool:
    """An integer that JSON wrote as one (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite real number (a bool, NaN and infinities are not)."""
    if is_integer(value):
        return True
    return isinstance(value, float) and math.isfinite(value)


class Shape:
    expected = "a value"

    def check(self, value: object) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Anything(Shape):
    expected: str = "a value"

    def check(self, value: object) -> None:
        return None


@dataclass(frozen=True)
class Integer(Shape):
    lo: int | None = None
    hi: int | None = None

    @property
    def expected(self) -> str:
        if self.lo == 1 and self.hi is None:
            return "a positive integer"
        if self.lo is not None and self.hi is not None:
            return f"an integer from {self.lo} to {self.hi}"
        if self.lo is not None:
            return f"an integer >= {self.lo}"
        return "an integer"

    def check(self, value: object) -> None:
        if not is_integer(value) or (self.lo is not None and value < self.lo) or \
                (self.hi is not None and value > self.hi):
            raise ShapeError(self.expected, value)


@dataclass(frozen=True)
class Number(Shape):
    """A real number; `finite=False` also takes NaN and infinities (what Python's json writes for them)."""

    lo: float | None = None
    finite: bool = True

    @property
    def expected(self) -> str:
        kind = "a finite number" if self.finite else "a number"
        return kind if self.lo is None else f"{kind} >= {self.lo:g}"

    def check(self, value: object) -> None:
        number = is_number(value) or (not self.finite and isinstance(value, float))
        if not number or (self.lo is not None and not value >= self.lo):
            raise ShapeError(self.expected, value)


@dataclass(frozen=True)
class String(Shape):
    nonempty: bool = True

    @property
    def expected(self) -> str:
        return "a non-empty string" if self.nonempty else "a string"

    def check(self, value: object) -> None:
        if not isinstance(value, str) or (self.nonempty and not value):
            raise ShapeError(self.expected, value)


@dataclass(frozen=True)
class Boolean(Shape):
    expected: str = "true or false"

    def check(self, value: object) -> None:
        if not isinstance(value, bool):
            raise ShapeError(self.expected, value)


@dataclass(frozen=True)
class Nullable(Shape):
    shape: Shape

    def check(self, value: object) -> None:
        if value is None:
            return
        try:
            self.shape.check(value)
        except ShapeError as e:
            if not e.parts:  # the value itself, not something inside it
                e.expected = self.expected
            raise

    @property
    def expected(self) -> str:
        return f"{self.shape.expected} or null"


@dataclass(frozen=True)
class ListOf(Shape):
    item: Shape
    length: int | None = None

    @property
    def expected(self) -> str:
        count = f"{self.length} " if self.length is not None else ""
        return f"a list of {count}items, each {self.item.expected}"

    def check(self, value: object) -> None:
        if not isinstance(value, list) or (self.length is not None and len(value) != self.length):
            raise ShapeError(self.expected, value)
        for i, v in enumerate(value):
            _check_at(self.item, v, i, "[{}]")


@dataclass(frozen=True)
class MapOf(Shape):
    """An object whose keys are free and whose values all have one shape."""

    value: Shape

    @property
    def expected(self) -> str:
        return f"an object of {self.value.expected}"

    def check(self, value: object) -> None:
        if not isinstance(value, dict):
            raise ShapeError(self.expected, value)
        for k, v in value.items():
            _check_at(self.value, v, k, ".{}")


@dataclass(frozen=True)
class Record(Shape):
    """An object with these keys (`required` must be there, `optional` may be); other keys are allowed."""

    required: Mapping[str, Shape] = field(default_factory=dict)
    optional: Mapping[str, Shape] = field(default_factory=dict)
    expected: str = "an object"

    def check(self, value: object) -> None:
        if not isinstance(value, dict):
            raise ShapeError(self.expected, value)
        for key, shape in self.required.items():
            if key not in value:
                raise ShapeError(shape.expected, missing=True).inside(f".{key}")
            _check_at(shape, value[key], key, ".{}")
        for key, shape in self.optional.items():
            if key in value:
                _check_at(shape, value[key], key, ".{}")


def _check_at(shape: Shape, value: object, key: object, part: str) -> None:
    """shape.check(value); a mismatch gets `part` (a format of `key`) in front of its path."""
    try:
        shape.check(value)
    except ShapeError as e:
        raise e.inside(part.format(key)) from None


def check(document: object, shape: Shape) -> None:
    """Raise ShapeError (with the JSON path) unless `document` fits `shape`."""
    shape.check(document)

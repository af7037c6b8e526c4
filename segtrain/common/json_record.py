"""Dataclasses as JSON documents: one type writes a file users script against and reads it back (torch-free).

A record is a dataclass; its fields, in order, are the document's keys and their annotations are
its shape (segtrain.common.json_shape), so a document read back is checked before any field is
used. A field declared with `key(omit_none=True)` is left out while it is None (and may be absent
on read); any other field with a default may be absent in older documents. `key(shape=...)` (or
`required(shape)` for a field without a default) narrows what its values may be beyond their type
(a count is `Integer(lo=0)`). A type with its own layout provides `json_shape()`, `to_dict()` and
`from_dict(value)` and nests like the others.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar

from segtrain.common import json_shape as js

T = TypeVar("T")
_OMIT_NONE, _SHAPE = "omit_none", "shape"


def key(default: Any = None, *, omit_none: bool = False, factory: Any = dataclasses.MISSING,
        shape: js.Shape | None = None) -> Any:
    """A record field with its default; `omit_none`: not written while None (an absent key reads as None);
    `shape`: what its (non-None) values must be, narrower than the annotation says."""
    metadata = {_OMIT_NONE: omit_none, _SHAPE: shape}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def required(shape: js.Shape) -> Any:
    """A record field without a default whose values must fit `shape` (narrower than the annotation says)."""
    return dataclasses.field(metadata={_SHAPE: shape})


def _custom(kind: Any) -> bool:
    return isinstance(kind, type) and hasattr(kind, "from_dict") and hasattr(kind, "json_shape")


def _parts(kind: Any) -> tuple[Any, tuple[Any, ...]]:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return typing.Union, typing.get_args(kind)
    return origin, typing.get_args(kind)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def shape_of(kind: Any) -> js.Shape:
    """The json_shape Shape of an annotation: a record, a list, a mapping, a scalar, or `X | None`."""
    if _custom(kind):
        return kind.json_shape()
    if dataclasses.is_dataclass(kind):
        return record_shape(kind)
    origin, args = _parts(kind)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {kind}")
        return js.Nullable(shape_of(inner[0]))
    if origin is list:
        return js.ListOf(shape_of(args[0]))
    if origin is tuple:
        return js.ListOf(shape_of(args[0]), None if args[-1] is Ellipsis else len(args))
    if origin is dict:
        return js.MapOf(shape_of(args[1]))
    scalars = {int: js.Integer(), float: js.Number(finite=False), str: js.String(nonempty=False), bool: js.Boolean(),
               Any: js.Anything()}
    if kind in scalars:
        return scalars[kind]
    raise TypeError(f"no JSON shape for {kind!r}")


def record_shape(cls: type) -> js.Record:
    """The shape of dataclass `cls` field by field: a field without a default is a required key."""
    needed, optional = {}, {}
    for f in dataclasses.fields(cls):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        (optional if has_default else needed)[f.name] = _field_shape(cls, f)
    return js.Record(needed, optional)


def _field_shape(cls: type, f: dataclasses.Field) -> js.Shape:
    hint, narrower = _hints(cls)[f.name], f.metadata.get(_SHAPE)
    if narrower is None:
        return shape_of(hint)
    origin, args = _parts(hint)
    return js.Nullable(narrower) if origin is typing.Union and type(None) in args else narrower


def record_fields(cls: type, value: dict) -> dict[str, Any]:
    """The fields of dataclass `cls` from a checked JSON object, each built from its annotation."""
    hints, out = _hints(cls), {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            try:
                out[f.name] = _build(hints[f.name], value[f.name])
            except js.ShapeError as e:  # a check a type makes beyond its shape (a matrix's size, say)
                raise e.inside(f".{f.name}") from None
    return out


def encode(value: Any) -> Any:
    """A record (or a list, mapping, tuple of them) as plain JSON values, keys in field order."""
    if _custom(type(value)):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return JsonRecord.to_dict(value)
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def _build(kind: Any, value: Any) -> Any:
    """A checked JSON value as an instance of annotation `kind`."""
    if value is None:
        return None
    if _custom(kind):
        return kind.from_dict(value)
    if dataclasses.is_dataclass(kind):
        return kind(**record_fields(kind, value))
    origin, args = _parts(kind)
    if origin is typing.Union:
        return _build(next(a for a in args if a is not type(None)), value)
    if origin is list:
        return [_build(args[0], v) for v in value]
    if origin is tuple:
        return tuple(_build(args[0], v) for v in value)
    if origin is dict:
        return {k: _build(args[1], v) for k, v in value.items()}
    return value


def decode(cls: type[T], document: Any) -> T:
    """A `cls` from a parsed JSON document; json_shape.ShapeError (with the JSON path) when it does not fit."""
    js.check(document, shape_of(cls))
    return _build(cls, document)


class JsonRecord:
    """A record dataclass's JSON methods, through this module: `to_dict()`, `from_dict(value)` (of a value
    already checked, as nesting passes it), `json_shape()`, and `decode(document)` that checks first."""

    @classmethod
    def json_shape(cls) -> js.Record:
        return record_shape(cls)

    @classmethod
    def from_dict(cls: type[T], value: dict) -> T:
        return cls(**record_fields(cls, value))

    @classmethod
    def decode(cls: type[T], document: Any) -> T:
        """From a parsed JSON document; json_shape.ShapeError (with the JSON path) when it does not fit."""
        js.check(document, cls.json_shape())
        return cls.from_dict(document)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.metadata.get(_OMIT_NONE):
                continue
            out[f.name] = encode(v)
        return out

"""Dataclasses as JSON documents: keys in field order, omitted and absent keys, and the shape check on reading."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pytest

from segtrain.common.json_record import JsonRecord, decode, encode, key, required
from segtrain.common.json_shape import Integer, ShapeError, String


@dataclass(kw_only=True)
class Item:
    size: tuple[int, int]
    value: float
    note: str | None = key(omit_none=True)


@dataclass(kw_only=True)
class Doc:
    name: str
    items: list[Item]
    counts: dict[str, int]
    best: float | None  # written as null while None
    tags: list[str] = field(default_factory=list)  # may be absent in older documents


def test_a_record_writes_its_fields_in_order_and_reads_back_equal() -> None:
    doc = Doc(name="a", items=[Item(size=(2, 3), value=0.5), Item(size=(4, 5), value=math.inf, note="x")],
              counts={"b": 1, "a": 2}, best=None, tags=["t"])
    written = encode(doc)
    assert json.dumps(written) == ('{"name": "a", "items": [{"size": [2, 3], "value": 0.5}, {"size": [4, 5], '
                                   '"value": Infinity, "note": "x"}], "counts": {"b": 1, "a": 2}, "best": null, '
                                   '"tags": ["t"]}')
    read = decode(Doc, json.loads(json.dumps(written)))
    assert read == doc and read.items[0].size == (2, 3) and read.items[0].note is None


def test_keys_with_defaults_may_be_absent() -> None:
    read = decode(Doc, {"name": "a", "items": [], "counts": {}, "best": 1})
    assert read.tags == [] and read.best == 1


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("best"), "best: missing (expected a number or null)"),
    (lambda d: d["items"][1].update(value="fast"), 'items[1].value: expected a number, found "fast"'),
    (lambda d: d["items"][0].update(size=[1, 2, 3]), "items[0].size: expected a list of 2 items, each an integer, "
                                                     "found a list of 3 item(s)"),
    (lambda d: d["counts"].update(b=True), "counts.b: expected an integer, found true"),
    (lambda d: d.update(name=None), "name: expected a string, found null"),
])
def test_a_document_that_does_not_fit_names_the_json_path(change, message: str) -> None:
    document = {"name": "a", "items": [{"size": [1, 1], "value": 1}, {"size": [2, 2], "value": 2.5}],
                "counts": {"b": 1}, "best": None}
    change(document)
    with pytest.raises(ShapeError) as err:
        decode(Doc, document)
    assert str(err.value) == message


@dataclass(frozen=True)
class Counted(JsonRecord):
    count: int = required(Integer(lo=0))
    label: str | None = key(omit_none=True, shape=String())


@dataclass(frozen=True)
class Square(JsonRecord):
    """A type that checks more than its shape when it is built: the error still names where it was."""

    rows: list[list[int]]

    @classmethod
    def from_dict(cls, value: dict) -> Square:
        if any(len(row) != len(value["rows"]) for row in value["rows"]):
            raise ShapeError("a square matrix", value["rows"]).inside(".rows")
        return super().from_dict(value)


@dataclass(frozen=True)
class Holder(JsonRecord):
    counted: Counted
    square: Square


def test_a_field_shape_narrows_what_the_annotation_allows() -> None:
    assert Counted.decode({"count": 3}) == Counted(3) and Counted(3).to_dict() == {"count": 3}
    with pytest.raises(ShapeError, match=r"^count: expected an integer >= 0, found -1$"):
        Counted.decode({"count": -1})
    with pytest.raises(ShapeError, match=r"^label: expected a non-empty string"):
        Counted.decode({"count": 1, "label": ""})
    assert Counted.decode({"count": 1, "label": None}).label is None  # an optional field may be null


def test_a_check_made_while_building_names_its_path() -> None:
    doc = {"counted": {"count": 0}, "square": {"rows": [[1, 2], [3, 4]]}}
    assert Holder.decode(doc).to_dict() == doc
    with pytest.raises(ShapeError, match=r"^square\.rows: expected a square matrix"):
        Holder.decode({"counted": {"count": 0}, "square": {"rows": [[1, 2]]}})

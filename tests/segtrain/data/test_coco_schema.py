"""labels.json of the wrong shape: refused once, at load, in one line naming the file, the JSON path and what
was expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from json_edit import DELETE, edit

from segtrain.cli import main
from segtrain.data.coco import CocoSplit, DataError

GOOD = {"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 6},
                   {"id": 2, "file_name": "b.png", "height": 4, "width": 6}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2],
                         "segmentation": [[0, 0, 2, 0, 2, 2]]}],
        "categories": [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}]}


def write_labels(root: Path, labels: object) -> Path:
    from PIL import Image

    data = root / "train" / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (6, 4), (90, 90, 90)).save(data / name)
    text = labels if isinstance(labels, str) else json.dumps(labels)
    (root / "train" / "labels.json").write_text(text)
    return root


def mutated(path: tuple, value: object) -> dict:
    """GOOD with the entry at `path` set to `value` (or deleted: json_edit.DELETE)."""
    doc = json.loads(json.dumps(GOOD))
    edit(doc, path, value)
    return doc


CASES = [  # (where, new value or DELETE, the message after "labels.json: ")
    (("images", 0, "id"), "abc", 'images[0].id: expected an integer, found "abc"'),
    (("images", 1, "height"), None, "images[1].height: expected a positive integer, found null"),
    (("images", 0, "width"), 0, "images[0].width: expected a positive integer, found 0"),
    (("images", 0, "height"), float("nan"), "images[0].height: expected a positive integer, found NaN"),
    (("images", 0, "file_name"), 5, "images[0].file_name: expected a non-empty string, found 5"),
    (("images", 0, "id"), True, "images[0].id: expected an integer, found true"),
    (("annotations", 0, "category_id"), [1],
     "annotations[0].category_id: expected an integer, found a list of 1 item(s)"),
    (("annotations", 0, "id"), None, "annotations[0].id: expected an integer, found null"),
    (("annotations", 0, "image_id"), DELETE, "annotations[0].image_id: missing (expected an integer)"),
    (("annotations", 0, "bbox"), ["a", "b", "c", "d"], 'annotations[0].bbox[0]: expected a finite number, found "a"'),
    (("annotations", 0, "bbox"), [1, 2, 3], "annotations[0].bbox: expected a list of 4 items, each a finite number, "
                                            "found a list of 3 item(s)"),
    (("categories", 1, "id"), DELETE, "categories[1].id: missing (expected an integer)"),
    (("categories", 0, "name"), {"x": 1},
     "categories[0].name: expected a non-empty string, found an object with 1 key(s)"),
    (("images",), {"0": 1}, "images: expected a list of items, each an object, found an object with 1 key(s)"),
]


@pytest.mark.parametrize(("where", "value", "message"), CASES, ids=[".".join(map(str, c[0])) for c in CASES])
def test_wrong_shapes_are_one_line_exit_2_with_the_json_path(tmp_path: Path, where, value, message) -> None:
    doc = mutated(where, value)
    root = write_labels(tmp_path, doc)
    res = CliRunner().invoke(main, ["data", str(root)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, (TypeError, KeyError, ValueError))
    assert f"[train] UNUSABLE: {root / 'train' / 'labels.json'}: {message}" in res.stdout
    assert res.stderr.strip().splitlines() == ["Error: unusable split(s): train"]
    with pytest.raises(DataError, match=r"^\S+labels\.json: "):
        CocoSplit.open(root, "train")


def test_duplicate_image_ids_name_both_files(tmp_path: Path) -> None:
    root = write_labels(tmp_path, mutated(("images", 1, "id"), 1))
    with pytest.raises(DataError) as err:
        CocoSplit.open(root, "train")
    assert str(err.value) == (f"{root / 'train' / 'labels.json'}: images[1].id: 1 is also the id of images[0] "
                              '(file_name "a.png" and "b.png"); ids must be unique')


def test_duplicate_category_ids_are_refused(tmp_path: Path) -> None:
    root = write_labels(tmp_path, mutated(("categories", 1, "id"), 1))
    with pytest.raises(DataError, match=r'categories\[1\]\.id: 1 is also the id of categories\[0\] '
                                        r'\(name "person" and "cat"\)'):
        CocoSplit.open(root, "train")


@pytest.mark.parametrize("depth", [50_000, 2_000])
def test_deeply_nested_json_is_refused_in_one_line(tmp_path: Path, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    root = write_labels(tmp_path, '{"images": [], "annotations": ' + nested + ', "categories": []}')
    res = CliRunner().invoke(main, ["data", str(root)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "labels.json: " in res.stdout and ("nested too deeply" in res.stdout or "annotations[0]" in res.stdout)


def test_top_level_and_missing_lists(tmp_path: Path) -> None:
    for doc, message in (([], "(top level): expected a COCO object with images, annotations and categories, "
                              "found a list of 0 item(s)"),
                         ({"images": [], "categories": []}, "annotations: missing (expected a list of items, "
                                                            "each an object)")):
        root = write_labels(tmp_path, doc)
        with pytest.raises(DataError) as err:
            CocoSplit.open(root, "train")
        assert str(err.value).endswith(f"labels.json: {message}")


def test_a_good_file_still_loads_and_extra_keys_are_allowed(tmp_path: Path) -> None:
    doc = mutated(("info",), {"year": 2017})
    doc["annotations"][0]["iscrowd"] = 0
    split = CocoSplit.open(write_labels(tmp_path, doc), "train")
    assert len(split) == 2 and split.records[0].anns[0].ann_id == 7


# ------------------------------------------------------------------------------------------
# The shape checker itself


def test_shape_errors_carry_the_path_of_the_first_mismatch() -> None:
    from segtrain.common.json_shape import Integer, ListOf, MapOf, Nullable, Number, Record, ShapeError, String, check

    shape = Record({"a": ListOf(Record({"b": Nullable(Integer(lo=0))}))}, optional={"m": MapOf(Number())})
    check({"a": [{"b": None}, {"b": 3}]}, shape)
    with pytest.raises(ShapeError) as err:
        check({"a": [{"b": 1}, {"b": -2}]}, shape)
    assert str(err.value) == "a[1].b: expected an integer >= 0 or null, found -2"
    with pytest.raises(ShapeError, match=r"^m\.x: expected a finite number, found Infinity$"):
        check({"a": [], "m": {"x": float("inf")}}, shape)
    with pytest.raises(ShapeError, match=r'^\(top level\): expected an integer, found "x{36}\.\.\.$'):
        check("x" * 100, Integer())  # a long value is shortened: a message stays one short line
    with pytest.raises(ShapeError, match=r'^\(top level\): expected a non-empty string, found ""$'):
        check("", String())

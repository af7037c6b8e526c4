"""What a labels.json must hold before anything indexes it, checked once at load (torch-free).

The shape covers what the tools read (ids, file names, sizes, bounding boxes, category names);
image and category ids must be unique. A segmentation's geometry is one annotation's problem, not
the file's: segtrain.data.rasterize checks it.
"""

from __future__ import annotations

from segtrain.common.json_shape import Integer, ListOf, Number, Record, ShapeError, String, check, describe

BBOX = ListOf(Number(), length=4)
IMAGE = Record({"id": Integer(), "file_name": String(), "height": Integer(lo=1), "width": Integer(lo=1)})
ANNOTATION = Record({"image_id": Integer(), "category_id": Integer()}, optional={"id": Integer(), "bbox": BBOX})
CATEGORY = Record({"id": Integer(), "name": String()})
LABELS = Record({"images": ListOf(IMAGE), "annotations": ListOf(ANNOTATION), "categories": ListOf(CATEGORY)},
                expected="a COCO object with images, annotations and categories")


class LabelsError(ValueError):
    """labels.json that does not fit; the message is "<JSON path>: <what is wrong>" (the caller names the file)."""


def validate_labels(data: object) -> None:
    """Raise LabelsError unless `data` (a parsed labels.json) has the shape the tools read."""
    try:
        check(data, LABELS)
    except ShapeError as e:
        raise LabelsError(str(e)) from None
    _unique(data["images"], "images", "file_name")
    _unique(data["categories"], "categories", "name")


def _unique(entries: list[dict], where: str, label: str) -> None:
    """LabelsError naming both entries (by `label`) when two share an id."""
    seen: dict[int, int] = {}
    for i, entry in enumerate(entries):
        first = seen.setdefault(entry["id"], i)
        if first != i:
            raise LabelsError(f"{where}[{i}].id: {entry['id']} is also the id of {where}[{first}] "
                              f"({label} {describe(entries[first][label])} and {describe(entry[label])}); "
                              "ids must be unique")

"""Editing a JSON document at a path, for the tests that break labels.json and shard summaries on purpose;
reading a file the tools wrote as strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

DELETE = object()  # as the value: remove the key instead of setting it


def edit(doc: dict | list, path: tuple, value: object = DELETE) -> None:
    """Set doc[path[0]][path[1]]... to `value`, or delete that entry when `value` is DELETE."""
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


def strict_json(path: Path) -> object:
    """The file parsed as strict JSON: UTF-8, no NaN or infinities, no unpaired surrogate escapes."""
    def refuse(value: str) -> None:
        raise ValueError(f"{path}: {value} is not JSON")

    doc = json.loads(Path(path).read_bytes().decode("utf-8"), parse_constant=refuse)  # bytes must be UTF-8
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # raises on lone surrogates
    return doc

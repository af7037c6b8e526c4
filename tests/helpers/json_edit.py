"""Editing a JSON document at a path, for the tests that break labels.json and shard summaries on purpose."""

from __future__ import annotations

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

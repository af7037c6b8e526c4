"""One bounded reader for text from outside: files (JSON, YAML), model metadata and environment values (torch-free).

Whatever a file or a variable holds, reading it costs bounded memory and time and fails in one line naming the
source and the key (`OutsideTextError`, an InputError: exit 2):

- files: regular files only (a FIFO would block the reader), at most `max_bytes`;
- JSON: at most MAX_NESTING levels deep (deeper is refused, never a RecursionError) and strings of at most
  MAX_STRING_CHARS characters;
- YAML: the same, and aliases are refused (`*name`: an alias bomb expands a few lines into gigabytes);
- environment values: converted and checked by the same rules as the command-line option they stand for
  (segtrain.common.settings), named as `$NAME`.

The limits live in segtrain.common.limits (README, "Safety").
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from segtrain.common.errors import InputError, printable
from segtrain.common.files import file_kind
from segtrain.common.limits import MAX_NESTING, MAX_RECORD_BYTES, MAX_STRING_CHARS
from segtrain.common.settings import CONVERTERS, Rule


class OutsideTextError(InputError, ValueError):
    """Outside text that is too big, too deep, malformed or out of range; the message names source and key.

    A ValueError too, so a reader that skips unreadable files (an earlier run's summary) skips these as well."""


class MissingFileError(OutsideTextError, FileNotFoundError):
    """The file to read is not there (a FileNotFoundError too, for readers that treat that case apart)."""


def _shown_size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def read_text(path: str | Path, max_bytes: int, what: str = "file") -> str:
    """The UTF-8 text of a regular file of at most `max_bytes` bytes; OutsideTextError otherwise. `path` may also
    be an object-store location (a UPath: anything with an fsspec `fs` and `open`), read the same way."""
    if hasattr(path, "fs") and not isinstance(path, (str, PurePath)):
        return _decoded(path, _read_object(path, max_bytes, what), max_bytes, what)
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens without a writer
    except FileNotFoundError:
        raise MissingFileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise OutsideTextError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OutsideTextError(f"{path}: not a regular file ({file_kind(mode)})")
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    return _decoded(path, data, max_bytes, what)


def _read_object(path: Any, max_bytes: int, what: str) -> bytes:
    """At most max_bytes + 1 bytes of an object in a store (no links or FIFOs there)."""
    try:
        with path.open("rb") as f:
            return f.read(max_bytes + 1)
    except FileNotFoundError:
        raise MissingFileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise OutsideTextError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def _decoded(path: Any, data: bytes, max_bytes: int, what: str) -> str:
    if len(data) > max_bytes:
        raise OutsideTextError(f"{path}: the {what} is larger than {_shown_size(max_bytes)}; refused")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OutsideTextError(f"{path}: cannot read {what} (not UTF-8 text at byte {e.start})") from None


def parse_json(text: str, source: str, what: str = "JSON") -> Any:
    """JSON `text` from `source`, bounded (see the module docstring); OutsideTextError naming source and key."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise OutsideTextError(f"{source}: nested more than {MAX_NESTING} levels deep; refused") from None
    except ValueError as e:
        raise OutsideTextError(f"{source}: malformed {what} ({printable(str(e).splitlines()[0])})") from None
    check_bounds(value, source)
    return value


def read_json(path: str | Path, what: str = "file", max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """The JSON document in the regular file `path`, bounded; OutsideTextError naming the file and the key."""
    return parse_json(read_text(path, max_bytes, what), str(path))


def parse_yaml(text: str, source: str, what: str = "YAML") -> Any:
    """YAML `text` from `source` with aliases refused, bounded like JSON (plain values only: yaml.safe_load)."""
    import yaml

    class _NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.events.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not accepted",
                                                  event.start_mark)
            return super().compose_node(parent, index)

    try:
        value = yaml.load(text, Loader=_NoAliases)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise OutsideTextError(f"{source}: nested more than {MAX_NESTING} levels deep; refused") from None
    except yaml.YAMLError as e:
        raise OutsideTextError(f"{source}: malformed {what} ({printable(' '.join(str(e).split()))})") from None
    check_bounds(value, source)
    return value


def check_bounds(value: Any, source: str) -> None:
    """OutsideTextError when `value` nests deeper than MAX_NESTING or holds a string (or key) longer than
    MAX_STRING_CHARS; the key path is named ("labels.json: categories[2].name: ...")."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()  # depth: the containers around it
        if depth >= MAX_NESTING and isinstance(item, Mapping | list | tuple):
            raise OutsideTextError(f"{source}: {where or 'the document'}: nested more than {MAX_NESTING} "
                                   "levels deep; refused")
        if isinstance(item, str):
            if len(item) > MAX_STRING_CHARS:
                raise OutsideTextError(f"{source}: {where or 'the document'}: a string of {len(item)} characters "
                                       f"(at most {MAX_STRING_CHARS}); refused")
        elif isinstance(item, Mapping):
            for k, v in item.items():
                key = str(k)
                name = printable(key[:40] + ("..." if len(key) > 40 else ""))
                stack.append((key, f"{where}.{name}" if where else name, depth + 1))
                stack.append((v, f"{where}.{name}" if where else name, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))


def env_value(name: str, kind: type, rule: Rule | None = None, default: Any = None,
              environ: Mapping[str, str] | None = None, option: str = "") -> Any:
    """Environment variable `name` converted to `kind` and checked by `rule` (the rule of the option it stands
    for, named in the message as `option`); `default` when it is unset or blank."""
    env = os.environ if environ is None else environ
    text = env.get(name, "").strip()
    if not text:
        return default
    like = f" (like {option})" if option else ""
    shown = printable(text[:40] + ("..." if len(text) > 40 else ""))
    try:
        value = CONVERTERS[kind](text.replace("_", "") if kind in (int, float) else text)
    except ValueError as e:
        raise OutsideTextError(f"${name}='{shown}': {e}{like}") from None
    problem = rule(value) if rule is not None else None
    if problem:
        raise OutsideTextError(f"${name}='{shown}': {problem}{like}")
    return value

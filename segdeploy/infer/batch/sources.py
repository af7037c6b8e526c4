"""The images and videos `segdeploy batch`'s SOURCEs name (folders, image and video files, glob patterns, video
streams and cameras: what a text SOURCE is, is segdeploy.infer.media's rule), each keyed by the path its outputs
mirror under --out (torch-free).

`list_sources` is the one place inputs are found. It names what it cannot use instead of dropping it (an
image-named FIFO, device, dangling symlink or loop; a folder it cannot list), follows symlinked folders once
each, and stats only symlinks and folders. Keys are text: a file-name byte that is not UTF-8 is ``\\xNN``
(segtrain.common.errors.undecodable_escaped), so summaries stay UTF-8 and `batch` and `merge-summary` hash the
same key (shards.py); files are read and written under their real names.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.infer.batch.outputs import is_run_output
from segdeploy.infer.media import MEDIA_KINDS, Kind, classify, is_media_name, is_video_name, stream_key
from segdeploy.infer.media import url_unsupported as _url_unsupported
from segdeploy.infer.pipeline import Failure
from segdeploy.infer.storage import find_media, is_remote, is_store_url, location, shown, why
from segtrain.common.errors import InputError, undecodable_escaped
from segtrain.common.files import file_kind

_KINDS = MEDIA_KINDS


class BatchInputError(InputError):
    """A problem with the batch's arguments (sources, --out, --gt); the message says which."""


@dataclass(frozen=True)
class InputFile:
    """An input image: `key` is its path relative to `root` in POSIX form, as summaries show it."""

    key: str
    path: Path
    root: Path  # the folder `key` is relative to
    real: str = field(default="", compare=False, repr=False)  # its real path, when the listing knew it

    @property
    def rel(self) -> Path:
        """The path relative to `root` under its real name (where its outputs go); an object's is its key."""
        return Path(self.key) if is_remote(self.path) else self.path.relative_to(self.root)

    @property
    def video(self) -> bool:
        return is_video_name(self.path.name)


@dataclass(frozen=True)
class Stream:
    """A video stream or camera SOURCE (segdeploy.infer.media.Kind.STREAM): its key (the name its outputs take at
    the top of --out) and the SOURCE as given."""

    key: str
    source: str


@dataclass
class Listing:
    """What the SOURCEs name: the input images and videos (sorted by key), the streams and cameras, and what
    could not be listed or used."""

    files: list[InputFile] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)
    earlier_outputs: int = 0  # files an earlier run wrote among the inputs, left out (outputs.is_run_output)


def file_problem(path: Path) -> str | None:
    """Why `path` (named like an image) is not a readable regular file, or None when it is one.

    One stat; a dangling symlink and a symlink loop are told apart from a missing file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"dangling symlink (its target {os.readlink(path)} does not exist)"
        return "file not found"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop (too many levels of symbolic links)"
        return f"cannot stat it ({e.strerror or e})"
    return None if stat.S_ISREG(st.st_mode) else f"not a regular file ({file_kind(st.st_mode)})"


class _Lister:
    """Walks folders and glob patterns into a Listing; each real folder is listed once."""

    def __init__(self, exclude: Sequence[Path]) -> None:
        self.listing = Listing()
        self.excluded = {ident for p in exclude if (ident := _identity(p)) is not None}
        self.seen: set[tuple[int, int]] = set(self.excluded)

    def fail(self, rel: str, reason: str) -> None:
        self.listing.failures.append(Failure(undecodable_escaped(rel), reason))

    def add_file(self, path: Path, root: Path, rel: str | None = None, known_regular: bool = False,
                 real: str | None = None) -> None:
        """`path` (`rel` relative to `root`) as an input, or its problem as a failure."""
        rel = _relative(path, root) if rel is None else rel
        if is_run_output(path):  # a mask, overlay or legend an earlier run wrote among the photos: not an input
            self.listing.earlier_outputs += 1
            return
        problem = None if known_regular else file_problem(path)
        if problem is None:
            self.listing.files.append(InputFile(undecodable_escaped(rel), path, root, real or os.path.realpath(path)))
        else:
            self.fail(rel, problem)

    def entries(self, folder: Path, root: Path, top: str | None = None) -> list[os.DirEntry] | None:
        """The entries of `folder`; None (and a named failure) when it cannot be listed.

        `top`: the SOURCE this folder is; that it cannot be listed is a usage error instead.
        """
        try:
            with os.scandir(folder) as it:
                return list(it)
        except OSError as e:
            reason = f"cannot list this folder ({e.strerror or e})"
            if top is not None:
                raise BatchInputError(f"{top}: {reason}") from None
            self.fail(_relative(folder, root) + "/", f"{reason}; the images in it are not processed")
            return None

    def enter(self, folder: Path | os.DirEntry) -> bool:
        """True the first time a real folder is reached (not the output folder, not again through a link)."""
        ident = _identity(folder)
        if ident is None or ident in self.seen:
            return False
        self.seen.add(ident)
        return True

    def walk(self, start: Path, root: Path, top: str | None = None) -> None:
        """Every image under `start` (any depth, suffix in any case), keyed relative to `root`."""
        if not self.enter(start):
            return
        rel = _relative(start, root)
        stack = [(start, "" if rel == "." else rel + "/")]  # (folder, its path relative to root + "/")
        while stack:
            folder, prefix = stack.pop()
            real_folder = None
            for entry in self.entries(folder, root, top if folder is start else None) or ():
                if _is_dir(entry):
                    if self.enter(entry):
                        stack.append((Path(entry.path), prefix + entry.name + "/"))
                elif is_media_name(entry.name):
                    plain = _is_plain_file(entry)  # most files: no stat needed
                    if plain:
                        real_folder = real_folder or os.path.realpath(folder)
                    self.add_file(Path(entry.path), root, prefix + entry.name, known_regular=plain,
                                  real=os.path.join(real_folder, entry.name) if plain else None)

    def glob(self, pattern: str) -> int:
        """Images the pattern matches (a matched folder: every image under it); returns the matches."""
        parts = Path(pattern).parts
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        base = Path(*parts[:fixed]) if fixed else Path(".")
        if not base.is_dir():
            return 0
        matches = 0
        for match in self.matches(base, parts[fixed:], pattern, dirs_only=pattern.endswith("/")):
            matches += 1
            if match.is_dir():
                self.walk(match, base)
            elif is_media_name(match.name):
                self.add_file(match, base)
        return matches

    def matches(self, base: Path, parts: tuple[str, ...], pattern: str, dirs_only: bool) -> Iterator[Path]:
        """Paths matching `parts` under `base`, as glob.glob(recursive=True) matches them (hidden names
        only when the pattern part starts with a dot), naming the folders it cannot list (`base`
        itself: a usage error of `pattern`)."""

        def entries(folder: Path) -> list[os.DirEntry]:
            return self.entries(folder, base, pattern if folder == base else None) or []

        def into(entry: os.DirEntry) -> bool:  # a folder to match in (not the output folder)
            return _is_dir(entry) and _identity(entry) not in self.excluded

        stack: list[tuple[Path, int]] = [(base, 0)]
        expanded: set[tuple[int, int] | None] = set()  # folders ** went through (a symlink loop ends there)
        while stack:
            folder, i = stack.pop()
            part, last = parts[i], i == len(parts) - 1
            if part == "**":  # zero or more folders
                if last:
                    yield folder
                else:
                    stack.append((folder, i + 1))
                if (ident := _identity(folder)) not in expanded:
                    expanded.add(ident)
                    stack += [(Path(e.path), i) for e in entries(folder) if not e.name.startswith(".") and into(e)]
            elif glob.has_magic(part):
                for entry in entries(folder):
                    if (entry.name.startswith(".") and not part.startswith(".")) or \
                            not fnmatch.fnmatchcase(entry.name, part):
                        continue
                    if last and (not dirs_only or _is_dir(entry)):
                        yield Path(entry.path)
                    elif not last and into(entry):
                        stack.append((Path(entry.path), i + 1))
            elif last:
                if os.path.lexists(folder / part):
                    yield folder / part
            elif (folder / part).is_dir():
                stack.append((folder / part, i + 1))


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _identity(path: Path | os.DirEntry) -> tuple[int, int] | None:
    try:
        st = path.stat()  # follows symlinks
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; no stat for a plain folder
    except OSError:
        return False


def _is_plain_file(entry: os.DirEntry) -> bool:
    """A regular file that is not a symlink, known from the listing itself (no stat on most filesystems)."""
    try:
        return not entry.is_symlink() and entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def list_folder(folder: Path, exclude: Sequence[Path] = ()) -> Listing:
    """The images under `folder` (any depth) keyed relative to it, and what could not be listed or used.

    Folders in `exclude` (the output folder when it lies inside the input) are not entered.
    """
    lister = _Lister(exclude)
    lister.walk(Path(folder), Path(folder), top=str(folder))
    return _sorted(lister.listing)


def find_images(input_dir: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """The readable image files under `input_dir` (any depth, suffix in any case), relative and sorted."""
    return [f.rel for f in list_folder(input_dir, exclude).files]


def list_sources(sources: Sequence[str | Path], exclude: Sequence[Path] = ()) -> Listing:
    """The images and videos the SOURCEs name (sorted by key), their streams, and the failures met listing them.

    BatchInputError for a source that names nothing usable (a missing path, a pattern without
    matches, a folder without images or problems, a file that is not a regular image or video file, a
    URL that is not a video stream), and for two different inputs that would write the same outputs. A
    file named twice (a folder and a glob inside it) is done once, under the key it got first.
    """
    by_key: dict[str, InputFile | Stream] = {}
    failures: dict[str, Failure] = {}
    seen: set[str] = set()
    earlier_outputs = 0
    for source in sources:
        listing = _list_source(str(source), exclude)
        earlier_outputs += listing.earlier_outputs
        for item in listing.files:
            real = item.real or os.path.realpath(item.path)
            if real in seen:
                continue
            _claim(by_key, item.key, item)
            seen.add(real)
        for stream in listing.streams:
            if stream.source not in seen:
                _claim(by_key, stream.key, stream)
                seen.add(stream.source)
        failures.update((f.input, f) for f in listing.failures if f.input not in by_key)
    return Listing([by_key[key] for key in sorted(by_key) if isinstance(by_key[key], InputFile)],
                   [failures[key] for key in sorted(failures)],
                   [by_key[key] for key in sorted(by_key) if isinstance(by_key[key], Stream)], earlier_outputs)


def _claim(by_key: dict[str, InputFile | Stream], key: str, item: InputFile | Stream) -> None:
    other = by_key.get(key)
    if other is not None:
        named = [x.path if isinstance(x, InputFile) else x.source for x in (other, item)]
        raise BatchInputError(f"{named[0]} and {named[1]} would both write the outputs of '{key}'; "
                              "run them into separate --out folders")
    by_key[key] = item


def resolve_sources(sources: Sequence[str | Path], exclude: Sequence[Path] = ()) -> list[InputFile]:
    """The input images the SOURCEs name, sorted by key (list_sources without the failures)."""
    return list_sources(sources, exclude).files


def _list_source(source: str, exclude: Sequence[Path]) -> Listing:
    path = Path(source)
    lister = _Lister([p for p in exclude if not is_remote(p)])
    kind = classify(source)
    if kind is Kind.FOLDER:
        lister.walk(path, path, top=source)
        if not lister.listing.files and not lister.listing.failures:
            raise BatchInputError(f"{source}: no images or videos ({_KINDS}) found")
    elif kind in (Kind.IMAGE, Kind.VIDEO, Kind.OTHER_FILE):
        problem = file_problem(path)
        if problem is None and kind is Kind.OTHER_FILE:
            problem = f"not an image or video file (expected {_KINDS})"
        if problem is not None:
            raise BatchInputError(f"{source}: {problem}")
        lister.add_file(path, path.parent, known_regular=True)
    elif kind is Kind.GLOB:
        matches = lister.glob(source)
        if not matches and not lister.listing.failures:
            raise BatchInputError(f"{source}: no file or folder matches this pattern")
        if not lister.listing.files and not lister.listing.failures:
            raise BatchInputError(f"{source}: matches {matches} path(s) but no images or videos ({_KINDS})")
    elif kind is Kind.STREAM:
        lister.listing.streams.append(Stream(stream_key(source), source))
    elif kind is Kind.URL and is_store_url(source):
        return _list_store(source, [str(p).rstrip("/") + "/" for p in exclude if is_remote(p)])
    elif kind is Kind.URL:
        raise _url_unsupported(source)
    else:
        raise BatchInputError(f"{source}: does not exist (not a file, a folder, a glob pattern, a video URL "
                              "or a camera index)")
    return _sorted(lister.listing)


def _list_store(source: str, exclude: Sequence[str] = ()) -> Listing:
    """The images under an object-store prefix (or the one object the URL names), keyed relative to it, but for
    those under the `exclude` prefixes (--out inside the SOURCE prefix). Videos in a store are named failures:
    OpenCV reads video from local files and streams only."""
    root = location(source)
    listing = Listing()
    try:
        if root.is_file():
            found = [(root.name, root)]
            root = root.parent
        else:
            found = [(key, path) for key, path in find_media(root) if not str(path).startswith(tuple(exclude))]
    except Exception as e:  # the stores raise their own types (OSError, botocore's NoCredentialsError, ...)
        raise BatchInputError(f"{shown(source)}: cannot list it ({why(e)})") from None
    for key, path in found:
        if is_video_name(key):
            listing.failures.append(Failure(key, "a video in object storage: copy it to a local folder first"))
        else:
            listing.files.append(InputFile(key, path, root, str(path)))
    if not found:
        raise BatchInputError(f"{shown(source)}: no images or videos ({_KINDS}) found")
    return _sorted(listing)


def _sorted(listing: Listing) -> Listing:
    return Listing(sorted(listing.files, key=lambda f: f.key), sorted(listing.failures, key=lambda f: f.input),
                   listing.streams, listing.earlier_outputs)

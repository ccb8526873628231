"""What a dataset adapter finds on disk: clip sources and layout rejections."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
#: Integer columns of the catalog are int64: values outside are layout errors, found while scanning.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class FileStat:
    """What a listing knows of a file without reading it (``os.stat``): the key of the hash cache."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class ClipSource:
    """One clip a dataset adapter found.

    Attributes
    ----------
    clip_id : str
        Unique within the dataset (the file's stem).
    label : str
        Class id, always a string ("04", "glass_breaking").
    source_path : str
        Path relative to the dataset root, with forward slashes.
    columns : dict
        Dataset-specific catalog columns (AudioMNIST: digit, rep; ESC-50: fold,
        target, esc10, src_file, take).
    stat : FileStat or None
        The file's ``stat`` when the adapter listed it (the scan reads no audio byte).
    """

    clip_id: str
    label: str
    source_path: str
    columns: dict[str, Any] = field(default_factory=dict)
    stat: FileStat | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Rejection:
    """A file or row the adapter refused, and why (it becomes a catalog row).

    Its texts are made printable (:func:`printable`): a name that is not UTF-8
    or holds control characters is still named, escaped, in the catalog.
    """

    clip_id: str
    label: str
    source_path: str
    reason: str
    columns: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("clip_id", "label", "source_path", "reason"):
            object.__setattr__(self, name, printable(getattr(self, name)))


@dataclass(frozen=True)
class DatasetScan:
    """Result of scanning a dataset directory.

    Attributes
    ----------
    root : Path
    clips : tuple[ClipSource, ...]
        Sorted by clip id.
    rejections : tuple[Rejection, ...]
    column_types : dict[str, str]
        Dataset-specific columns and their Arrow types ("int64", "string", "bool").
    """

    dataset: str
    root: Path
    clips: tuple[ClipSource, ...]
    rejections: tuple[Rejection, ...]
    column_types: dict[str, str]


def is_hidden(name: str) -> bool:
    """Files such as ``.DS_Store`` are skipped silently."""
    return name.startswith(".")


def printable(text: str) -> str:
    """``text`` with undecodable bytes (surrogate escapes) and control characters escaped (``\\xff``, ``\\n``).

    What the catalog and one-line messages can hold for any name found on disk.
    """
    if _CONTROL.search(text) is None and text.isprintable() or text == "":
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    raw = text.encode("utf-8", "surrogateescape") if _has_surrogates(text) else text.encode("utf-8")
    return "".join(c if c.isprintable() and not _CONTROL.match(c) else repr(c)[1:-1]
                   for c in raw.decode("utf-8", "backslashreplace"))


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


def name_problem(name: str) -> str | None:
    """Why a file name cannot name a clip (not UTF-8, control characters), or None."""
    if _has_surrogates(name):
        return "the file name is not valid UTF-8"
    if _CONTROL.search(name) or not name.isprintable():
        return "the file name holds control or non-printable characters"
    return None


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a clip, naming it (None for a regular file; symlinks are followed).

    Only ``stat``: a FIFO, a device (``/dev/zero`` symlinked as a ``.wav``) or a
    socket is rejected by name without ever being opened (opening a FIFO
    blocks; reading ``/dev/zero`` never ends).
    """
    return file_stat(path)[1]


def file_stat(path: Path) -> tuple[FileStat | None, str | None]:
    """:func:`file_problem` and, for a regular file, its :class:`FileStat` (one ``stat``, no read)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return None, f"{path}: cannot read the file ({exc.strerror or exc})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return FileStat.of(st), None
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a file")
    return None, f"{path}: cannot read: not a regular file ({kind}); only regular files are read"


def parse_int64(text: str) -> int | None:
    """A decimal integer that fits the catalog's int64 columns (``"12"``, ``"-3"``), else None."""
    text = text.strip()
    if re.fullmatch(r"[+-]?[0-9]{1,20}", text) is None:
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None

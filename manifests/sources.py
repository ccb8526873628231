"""What a dataset adapter finds on disk: clip sources and layout rejections."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")


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
    """

    clip_id: str
    label: str
    source_path: str
    columns: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """A file or row the adapter refused, and why (it becomes a catalog row)."""

    clip_id: str
    label: str
    source_path: str
    reason: str
    columns: dict[str, Any] = field(default_factory=dict)


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

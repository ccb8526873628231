"""Explicit class lists for a split (``split --from FILE``): CSV or JSON, class ids kept as strings."""

from __future__ import annotations

import csv
import difflib
import json
import os
from pathlib import Path
from typing import Any

from siamese_audio.errors import SplitError
from siamese_audio.files import MIB, read_regular
from siamese_audio.manifests.classes import known_classes
from siamese_audio.manifests.splits import SPLITS, Split


def split_from_file(path: str | os.PathLike[str], *, dataset: str) -> Split:
    """Read explicit class lists from CSV or JSON (scheme ``"file"``, seed ``None``).

    Accepted layouts:

    * CSV with a header holding ``class`` and ``split`` columns (others are
      ignored, except ``dataset`` which must match);
    * JSON ``{"train": [...], "validation": [...], "test": [...]}``, the same
      under a ``"classes"`` key (the output of ``split-show --json``), or a
      list of ``{"class": ..., "split": ...}`` objects.

    Class ids stay strings: a CSV's ``04`` is ``"04"``; a JSON number is refused.
    The result is not checked for coverage: call :func:`validate`.
    """
    path = Path(path)
    known_classes(dataset)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise SplitError(f"{path}: expected a .csv or .json file of class lists. Got suffix {path.suffix!r}.")
    try:
        text = read_regular(path, max_bytes=64 * MIB, what="class lists").decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SplitError(f"{path}: cannot read the class lists ({exc}).") from exc
    pairs = _pairs_from_csv(path, text, dataset) if suffix == ".csv" else _pairs_from_json(path, text, dataset)
    lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    for where, cls, name in pairs:
        if name not in lists:
            close = difflib.get_close_matches(str(name), SPLITS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SplitError(f"{path}: {where}: expected a split among {list(SPLITS)}. Got {name!r}.{hint}")
        if not isinstance(cls, str) or not cls:
            raise SplitError(
                f"{path}: {where}: expected the class id as a non-empty string (e.g. \"04\"). Got {cls!r}."
            )
        lists[name].append(cls)
    try:
        return Split(dataset, "file", None, lists)
    except SplitError as exc:
        raise SplitError(f"{path}: {exc}") from None


def _pairs_from_csv(path: Path, text: str, dataset: str) -> list[tuple[str, Any, Any]]:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "class" not in header or "split" not in header:
        raise SplitError(f"{path}: expected a CSV header with 'class' and 'split' columns. Got {header}.")
    reader.fieldnames = header
    pairs = []
    for line, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        found = (row.get("dataset") or "").strip()
        if found and found != dataset:
            raise SplitError(f"{path}: line {line}: expected dataset {dataset!r}. Got {found!r}.")
        pairs.append((f"line {line}", (row["class"] or "").strip(), (row["split"] or "").strip()))
    return pairs


_SUMMARY_KEYS = ("dataset", "scheme", "seed", "split_id", "sizes")


def _pairs_from_json(path: Path, text: str, dataset: str) -> list[tuple[str, Any, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SplitError(f"{path}: cannot parse the JSON ({exc}).") from exc
    if isinstance(data, list):
        pairs = []
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "class" not in item or "split" not in item:
                raise SplitError(f"{path}: item {i}: expected an object with 'class' and 'split'. Got {item!r}.")
            pairs.append((f"item {i}", item["class"], item["split"]))
        return pairs
    if not isinstance(data, dict):
        raise SplitError(f"{path}: expected a JSON object or a list of class lists. Got {type(data).__name__}.")
    found = data.get("dataset")
    if found is not None and found != dataset:
        raise SplitError(f"{path}: expected dataset {dataset!r}. Got {found!r}.")
    if "classes" in data:
        lists = data["classes"]
        if not isinstance(lists, dict):
            raise SplitError(f"{path}: expected 'classes' to map split → class list. Got {type(lists).__name__}.")
    else:
        lists = {k: v for k, v in data.items() if k not in _SUMMARY_KEYS}
    pairs = []
    for name, values in lists.items():
        if not isinstance(values, list):
            raise SplitError(f"{path}: expected split {name!r} to be a list of class ids. Got {values!r}.")
        pairs += [(f"split {name!r}", cls, name) for cls in values]
    return pairs

"""A split joined with a feature version's catalog: stored clips per class, checks, store rows.

``version`` is a :class:`features.store.FeatureVersion` or any object with
``.dataset`` and ``.stored()`` (a DataFrame with ``row`` and ``class``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from siamese_audio.errors import SplitError
from siamese_audio.manifests.splits import MIN_CLIPS, SPLITS, Split

#: Catalog column naming the source recording a clip was cut from (ESC-50's ``src_file``).
#: A catalog without it (AudioMNIST) does not know its clips' recordings.
SOURCE_COLUMN = "src_file"


def _stored_rows(version: Any) -> dict[str, np.ndarray]:
    """Stored store rows of every class of ``version`` (sorted int64)."""
    stored = version.stored()
    out: dict[str, np.ndarray] = {}
    for cls, rows in stored.groupby("class", sort=True)["row"]:
        out[str(cls)] = np.sort(rows.to_numpy(dtype=np.int64))
    return out


def _check_dataset(split: Split, version: Any) -> None:
    if split.dataset != version.dataset:
        where = getattr(version, "path", "the feature version")
        raise SplitError(
            f"Expected a split of dataset {version.dataset!r} for {where}. "
            f"Got split {split.split_id} of dataset {split.dataset!r}."
        )


def clip_counts(split: Split, version: Any) -> dict[str, dict[str, int]]:
    """Stored clips of each class of ``split`` in ``version`` (0 when absent).

    ``version`` is a :class:`features.store.FeatureVersion` or any object with
    ``.dataset`` and ``.stored()`` (a DataFrame with ``row`` and ``class``).
    """
    _check_dataset(split, version)
    rows = _stored_rows(version)
    return {s: {c: int(rows[c].size) if c in rows else 0 for c in split.classes[s]} for s in SPLITS}


def catalog_problems(split: Split, version: Any, *, min_clips: int = MIN_CLIPS) -> list[str]:
    """Classes of ``split`` with fewer than ``min_clips`` stored clips in ``version`` ([] when fine)."""
    counts = clip_counts(split, version)
    return [
        f"{s} class {c!r} has {n} stored clip{'s' if n != 1 else ''}"
        for s in SPLITS for c, n in counts[s].items() if n < min_clips
    ]


def validate_against_version(split: Split, version: Any, *, min_clips: int = MIN_CLIPS) -> None:
    """Check that every class of ``split`` has at least ``min_clips`` stored clips in ``version``.

    Raises
    ------
    SplitError
        The version is of another dataset, or classes have too few stored clips
        (all of them are named).
    """
    problems = catalog_problems(split, version, min_clips=min_clips)
    if problems:
        where = getattr(version, "path", "the feature version")
        raise SplitError(
            f"Expected every class to have at least {min_clips} stored clips in {where} "
            f"(a one-shot task needs a query and a support). {len(problems)} do not: {'; '.join(problems)}."
        )


def clip_rows(split: Split, version: Any, *, min_clips: int = MIN_CLIPS) -> dict[str, dict[str, np.ndarray]]:
    """Store rows of each split and class: what training and evaluation read.

    Parameters
    ----------
    split : Split
    version : FeatureVersion or duck-typed object
        Needs ``.dataset`` and ``.stored()`` (DataFrame with ``row`` and ``class``).
    min_clips : int
        Stored clips every class needs (default 2).

    Returns
    -------
    dict
        ``{"train": {class: rows}, "validation": {...}, "test": {...}}``, rows a
        sorted ``np.ndarray[int64]`` of store row indices.

    Raises
    ------
    SplitError
        The split is of another dataset, or a class is missing from the
        catalog or has fewer than ``min_clips`` stored clips.
    """
    validate_against_version(split, version, min_clips=min_clips)
    rows = _stored_rows(version)
    return {s: {c: rows[c] for c in split.classes[s]} for s in SPLITS}


def clip_sources(version: Any, class_rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """Source recording of every clip of ``class_rows``, aligned with it; None when the catalog has none.

    Parameters
    ----------
    version : FeatureVersion or duck-typed object
        Needs ``.stored()`` (DataFrame with ``row``, ``class`` and, when known,
        :data:`SOURCE_COLUMN`).
    class_rows : mapping of str to np.ndarray
        Class -> store rows (e.g. one split of :func:`clip_rows`).

    Returns
    -------
    dict of str to np.ndarray [dtype=object] or None
        ``{class: source of each row}`` (``""`` where a clip's source is not
        recorded), or None when the catalog has no :data:`SOURCE_COLUMN` column.

    Raises
    ------
    SplitError
        A row that is not a stored clip of its class.
    """
    stored = version.stored()
    if SOURCE_COLUMN not in stored.columns:
        return None
    by_row = dict(zip(stored["row"].to_numpy(dtype=np.int64).tolist(),
                      zip(stored["class"].astype(str), stored[SOURCE_COLUMN].fillna("").astype(str))))
    out: dict[str, np.ndarray] = {}
    for name, rows in class_rows.items():
        values = []
        for row in np.asarray(rows, dtype=np.int64).tolist():
            entry = by_row.get(row)
            if entry is None or entry[0] != str(name):
                where = getattr(version, "path", "the feature version")
                raise SplitError(f"Expected store row {row} to be a stored clip of class {name!r} in {where}.")
            values.append(entry[1])
        out[str(name)] = np.array(values, dtype=object)
    return out

"""Which rows a checkpoint is evaluated (or explained) on: the split planning both stages share.

A split comes from a file or is regenerated (:func:`regenerate_splits`: K distinct splits whose test
classes avoid the checkpoint's training and validation classes); :func:`check_meta` and
:func:`check_compatible` refuse a checkpoint description or a feature version that cannot give a fair
one-shot test; :func:`plan_split` turns one split into the evaluating rows per class (and their source
recordings), after the refusals of :mod:`evaluation.checks`. ``evaluation.reevaluate`` (evaluate a
checkpoint) and ``evaluation.explain.run`` (explain its tasks) both start here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.checks import (
    check_feature_config,
    check_input_shape,
    check_unseen,
)
from siamese_audio.manifests.split_catalog import clip_rows, clip_sources
from siamese_audio.manifests.splits import Split, seeded_order

SUBSETS = ("test", "validation")

#: Seeds tried per regenerated split asked for, at most, while looking for distinct sets of test classes.
MAX_SEED_TRIES = 100

#: Checkpoint description keys evaluation relies on.
REQUIRED_META = ("feature_config", "feature_version_id", "split_id", "training_classes", "dataset")


class VersionLike(Protocol):
    """What evaluation needs of a :class:`features.store.FeatureVersion`."""

    path: Path
    version_id: str
    dataset: str
    feature_config: dict
    shape: tuple[int, int]

    def read(self, rows: np.ndarray) -> np.ndarray: ...

    def classes(self) -> list[str]: ...

    def stored(self) -> Any: ...


@dataclass(frozen=True, eq=False)
class SplitSource:
    """A split to evaluate and where it came from (``path`` is None for a regenerated one)."""

    split: Split
    path: str | None = None



def check_meta(meta: Mapping[str, Any], checkpoint: str) -> None:
    """Refuse a checkpoint description that lacks what evaluation needs."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise EvaluationError(
            f"{checkpoint}: expected the checkpoint to record {list(REQUIRED_META)}. Missing: {missing}."
        )


def regenerate_splits(
    version: VersionLike, training_classes: Sequence[str], *, k: int, seed: int, n_classes: int,
    validation_classes: Sequence[str] = (), allow_overlap: bool = False,
) -> tuple[list[SplitSource], list[str]]:
    """Draw ``k`` random splits whose test classes the checkpoint never saw (neither trained nor validated on).

    Parameters
    ----------
    version : VersionLike
        Its stored classes are the universe of the draw.
    training_classes, validation_classes : sequence of str
        The checkpoint's training classes and the validation classes that chose it.
    k : int
        Distinct splits: seeds ``seed, seed + 1, ...`` each test the first
        ``n_classes`` of ``seeded_order(unseen classes, seed)``; a seed that
        repeats an earlier split's test classes is skipped (a note says so).
        Fewer than ``k`` when fewer distinct sets exist.
    seed : int
    n_classes : int
        Test (evaluating) classes per split, at least 2.
    allow_overlap : bool
        When fewer than ``n_classes`` unseen classes remain, draw from every
        stored class instead of refusing (the report then names the seen classes).

    Returns
    -------
    splits : list[SplitSource]
        Splits over every stored class: the drawn test classes, the checkpoint's
        validation classes (those stored and not drawn) in validation, all others in train.
    notes : list[str]
        How many classes remained to draw from; when the draw could not avoid
        seen classes; seeds skipped, or fewer distinct splits than asked.

    Raises
    ------
    EvaluationError
        ``k`` or ``n_classes`` out of range; too few unseen classes (without ``allow_overlap``).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise EvaluationError(f"Expected --regenerate K with K a positive integer. Got {k!r}.")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise EvaluationError(f"Expected at least 2 evaluating classes per regenerated split. Got {n_classes!r}.")
    stored = sorted(version.classes())
    training = set(map(str, training_classes))
    validation = set(map(str, validation_classes)) - training
    remaining = [c for c in stored if c not in training and c not in validation]
    n_train_stored = len(training & set(stored))
    n_val_stored = len(validation & set(stored))
    counts = (f"{len(remaining)} of the {len(stored)} stored classes are neither among the checkpoint's "
              f"{len(training)} training classes ({n_train_stored} stored) nor its {len(validation)} validation "
              f"classes ({n_val_stored} stored)")
    universe = remaining
    notes: list[str] = []
    if len(remaining) < n_classes:
        message = (f"Cannot draw test classes the checkpoint never saw: {counts}: {remaining}; "
                   f"{n_classes} test classes per split need at least {n_classes}.")
        if not allow_overlap:
            raise EvaluationError(message + " Pass --allow-overlap to draw from every stored class anyway, "
                                            "or lower --test-classes.")
        notes.append(message + " Drew from every stored class instead (--allow-overlap); the splits name the "
                               "seen classes they hold.")
        universe = stored
    else:
        notes.append(f"Regenerated splits: {n_classes} test classes drawn from the {len(remaining)} unseen "
                     f"classes ({counts}).")
    possible = math.comb(len(universe), n_classes)
    wanted = min(k, possible)
    sources: list[SplitSource] = []
    drawn: set[tuple[str, ...]] = set()
    candidate = seed
    # Seeds seed, seed + 1, ... skipping any that repeats a set already drawn: a repeated split
    # would score the same tasks again and narrow the interval across splits for nothing.
    while len(sources) < wanted and candidate < seed + MAX_SEED_TRIES * k:
        test = tuple(sorted(seeded_order(universe, candidate)[:n_classes]))
        if test not in drawn:
            drawn.add(test)
            held_out = sorted((validation & set(stored)) - set(test))
            full = Split(version.dataset, "random", candidate,
                         {"train": sorted(set(stored) - set(test) - set(held_out)), "validation": held_out,
                          "test": list(test)})
            sources.append(SplitSource(split=full, path=None))
        candidate += 1
    if len(sources) < k:
        notes.append(f"Only {len(sources)} distinct sets of {n_classes} test classes could be drawn from the "
                     f"{len(universe)} classes ({possible} exist), not the {k} asked: the interval across splits "
                     f"covers {len(sources)} split(s).")
    elif candidate - seed > k:
        notes.append(f"Seeds {seed}..{candidate - 1} drew {k} distinct splits; seeds that repeated an earlier "
                     f"split's test classes were skipped.")
    return sources, notes


def check_compatible(meta: Mapping[str, Any], version: VersionLike, *, checkpoint: str,
                     allow_feature_mismatch: bool) -> list[str]:
    """Refuse a version of another dataset, other feature settings or another input shape.

    Returns
    -------
    list of str
        Notes for the report (feature settings that differ, when allowed).
    """
    if meta["dataset"] is not None and meta["dataset"] != version.dataset:
        raise EvaluationError(
            f"{checkpoint}: trained on dataset {meta['dataset']!r}; feature version {version.version_id} "
            f"is of dataset {version.dataset!r}."
        )
    notes = []
    diffs = check_feature_config(meta["feature_config"] or {}, version.feature_config,
                                 allow_feature_mismatch=allow_feature_mismatch, version_id=version.version_id)
    if diffs:
        notes.append("Feature settings differ from the checkpoint's (--allow-feature-mismatch): "
                     + "; ".join(f"{k}: checkpoint {a!r}, version {b!r}" for k, (a, b) in diffs.items()))
    check_input_shape(meta.get("input_shape"), version.shape, version_id=version.version_id)
    return notes


@dataclass(frozen=True, eq=False)
class PlannedSplit:
    """One split's evaluating rows, their source recordings, and the seen classes allowed."""

    source: SplitSource
    rows: dict[str, np.ndarray]
    sources: dict[str, np.ndarray] | None
    overlap: dict[str, str]


def plan_split(source: SplitSource, version: VersionLike, meta: Mapping[str, Any], *, subset: str,
               allow_overlap: bool, notes: list[str]) -> PlannedSplit:
    """The evaluating rows of one split, after the refusals (appends a note for an allowed overlap).

    Returns
    -------
    PlannedSplit
        ``rows``: class -> store rows of the ``subset`` classes; ``sources``:
        their source recordings (None when the catalog has none); ``overlap``:
        class -> how the checkpoint saw it (training or validation).
    """
    rows = clip_rows(source.split, version)[subset]
    where = f"split {source.split.split_id}{f' ({source.path})' if source.path else ''}"
    if len(rows) < 2:
        raise EvaluationError(f"{where.capitalize()} has {len(rows)} {subset} class(es); a one-shot test needs at least 2.")
    overlap = check_unseen(rows, training=meta["training_classes"], validation=meta.get("validation_classes") or (),
                           allow_overlap=allow_overlap, where=f"the {subset} classes of {where}")
    if overlap:
        seen = ", ".join(f"{c} ({how})" for c, how in overlap.items())
        notes.append(f"Split {source.split.split_id}: {subset} classes seen by the checkpoint were evaluated "
                     f"(--allow-overlap): {seen}. Their accuracy is not one-shot: training classes were learnt, "
                     f"validation classes selected the checkpoint.")
    return PlannedSplit(source=source, rows=rows, sources=clip_sources(version, rows), overlap=overlap)

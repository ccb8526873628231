"""Evaluate a checkpoint on one or several splits of its dataset, on any feature version.

This module composes the pieces the CLI needs without importing :mod:`training`:
it takes an embedder and the checkpoint's description (``meta``), refuses what
would not be a fair one-shot test (:mod:`evaluation.checks`), and evaluates each
split with :func:`evaluation.suite.evaluate_classes`.

Splits come from files (``--split``, any number) or are regenerated
(``--regenerate K --seed S``): split ``k`` is ``make_random_split`` with seed
``S + k`` over the stored classes *not* in the checkpoint's training classes,
``n_classes`` of them tested, the others (and every training class) in train.
When fewer than ``n_classes + 2`` such classes remain that is impossible; the run
is refused, or with ``allow_overlap`` the draw is made over every stored class
and the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.checks import check_feature_config, check_input_shape, check_overlap
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.metrics import CI_METHOD, Spread, per_class_counts, spread, wilson_interval
from siamese_audio.evaluation.suite import ClassesEvaluation, EvaluationSettings, evaluate_classes
from siamese_audio.manifests.split_catalog import clip_rows
from siamese_audio.manifests.splits import Split, make_random_split

SUBSETS = ("test", "validation")

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


@dataclass(frozen=True, eq=False)
class SplitRun:
    """The evaluation of one split's ``subset`` classes."""

    source: SplitSource
    subset: str
    evaluation: ClassesEvaluation
    overlap: tuple[str, ...] = ()

    @property
    def split_id(self) -> str:
        return self.source.split.split_id

    def to_dict(self) -> dict[str, Any]:
        split = self.source.split
        return {
            "split_id": split.split_id, "split_path": self.source.path, "scheme": split.scheme,
            "split_seed": split.seed, "subset": self.subset, "classes": list(self.evaluation.result.classes),
            "overlap_with_training": list(self.overlap), **self.evaluation.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Everything one ``evaluate`` command found, ready for :mod:`evaluation.report`.

    Attributes
    ----------
    context : dict
        Checkpoint path, feature version id and path, dataset, the checkpoint's
        own feature version and split ids, settings, allowances used.
    runs : tuple[SplitRun, ...]
    notes : tuple[str, ...]
        Things a reader must know (overlaps allowed, feature mismatch allowed,
        regenerated splits that could not avoid training classes).
    """

    context: dict[str, Any]
    runs: tuple[SplitRun, ...]
    notes: tuple[str, ...] = field(default=())

    def pooled(self) -> dict[str, Any]:
        """Headline numbers over the tasks of every split together.

        With one split these are that split's numbers. ``ci95`` is the Wilson
        interval of the pooled tasks; the spread between splits is in
        :meth:`distribution`.
        """
        n_tasks = sum(r.evaluation.result.n_tasks for r in self.runs)
        n_correct = sum(r.evaluation.result.n_correct for r in self.runs)
        hits: dict[str, list[int]] = {}
        for run in self.runs:
            res = run.evaluation.result
            class_hits, totals = per_class_counts(res.tasks.query_class, res.correct, len(res.classes))
            for c, h, n in zip(res.classes, class_hits, totals):
                pair = hits.setdefault(c, [0, 0])
                pair[0] += int(h)
                pair[1] += int(n)
        baselines = [r.evaluation.baseline for r in self.runs if r.evaluation.baseline is not None]
        out: dict[str, Any] = {
            "accuracy": n_correct / n_tasks, "n_tasks": n_tasks, "n_correct": n_correct,
            "ci95": list(wilson_interval(n_correct, n_tasks)), "ci_method": CI_METHOD,
            "per_class": {c: h / n for c, (h, n) in hits.items()},
            "baseline_accuracy": None, "baseline_ci95": None,
        }
        if baselines:
            b_correct = sum(b.n_correct for b in baselines)
            b_tasks = sum(b.n_tasks for b in baselines)
            out["baseline_accuracy"] = b_correct / b_tasks
            out["baseline_ci95"] = list(wilson_interval(b_correct, b_tasks))
        return out

    def distribution(self) -> dict[str, Spread]:
        """Spread over splits of the network's and the baseline's accuracy."""
        out = {"accuracy": spread([r.evaluation.result.accuracy for r in self.runs])}
        base = [r.evaluation.baseline.accuracy for r in self.runs if r.evaluation.baseline is not None]
        if base:
            out["baseline_accuracy"] = spread(base)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The content of ``report.json``."""
        return {
            **self.context, **self.pooled(),
            "distribution": {k: v.to_dict() for k, v in self.distribution().items()},
            "splits": [r.to_dict() for r in self.runs],
            "notes": list(self.notes),
        }


def check_meta(meta: Mapping[str, Any], checkpoint: str) -> None:
    """Refuse a checkpoint description that lacks what evaluation needs."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise EvaluationError(
            f"{checkpoint}: expected the checkpoint to record {list(REQUIRED_META)}. Missing: {missing}."
        )


def regenerate_splits(
    version: VersionLike, training_classes: Sequence[str], *, k: int, seed: int, n_classes: int,
    allow_overlap: bool = False,
) -> tuple[list[SplitSource], list[str]]:
    """Draw ``k`` random splits whose test classes avoid the training classes when possible.

    Parameters
    ----------
    version : VersionLike
        Its stored classes are the universe of the draw.
    training_classes : sequence of str
        The checkpoint's training classes.
    k : int
        Splits; split ``i`` uses ``make_random_split(seed=seed + i)``.
    seed : int
    n_classes : int
        Test (evaluating) classes per split, at least 2.
    allow_overlap : bool
        When too few classes remain outside training, draw from every stored
        class instead of refusing.

    Returns
    -------
    splits : list[SplitSource]
        Splits over every stored class: the drawn test classes, all others in train.
    notes : list[str]
        Says so when the draw could not avoid the training classes.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise EvaluationError(f"Expected --regenerate K with K a positive integer. Got {k!r}.")
    if n_classes < 2:
        raise EvaluationError(f"Expected at least 2 evaluating classes per regenerated split. Got {n_classes}.")
    stored = sorted(version.classes())
    training = set(map(str, training_classes))
    remaining = [c for c in stored if c not in training]
    notes: list[str] = []
    universe = remaining
    if len(remaining) < n_classes + 2:
        message = (
            f"Cannot draw splits that avoid the checkpoint's training classes: {len(remaining)} of the "
            f"{len(stored)} stored classes were not trained on ({remaining}); a random split of "
            f"{n_classes} test classes needs at least {n_classes + 2}."
        )
        if not allow_overlap:
            raise EvaluationError(message + " Pass --allow-overlap to draw from every stored class anyway, "
                                            "or lower --classes.")
        notes.append(message + " Drew from every stored class instead (--allow-overlap).")
        universe = stored
    sources = []
    for i in range(k):
        drawn = make_random_split(
            version.dataset, seed=seed + i, sizes=(len(universe) - n_classes, 0, n_classes), classes=universe
        )
        test = drawn.classes["test"]
        full = Split(version.dataset, "random", seed + i,
                     {"train": sorted(set(stored) - set(test)), "validation": [], "test": test})
        sources.append(SplitSource(split=full, path=None))
    return sources, notes


def evaluate_checkpoint(
    embedder: Embedder,
    meta: Mapping[str, Any],
    version: VersionLike,
    sources: Sequence[SplitSource],
    settings: EvaluationSettings,
    *,
    checkpoint: str,
    subset: str = "test",
    allow_overlap: bool = False,
    allow_feature_mismatch: bool = False,
    notes: Sequence[str] = (),
) -> EvaluationReport:
    """Evaluate ``embedder`` (from ``checkpoint``) on the ``subset`` classes of every split.

    Parameters
    ----------
    embedder : Embedder
    meta : mapping
        The checkpoint's description: at least :data:`REQUIRED_META`;
        ``input_shape`` when present is checked against the version.
    version : VersionLike
        The feature version to read clips from.
    sources : sequence of SplitSource
        At least one; each must be a split of ``version.dataset``.
    settings : EvaluationSettings
    checkpoint : str
        Path recorded in the report.
    subset : str
        ``"test"`` or ``"validation"``.
    allow_overlap, allow_feature_mismatch : bool
        Evaluate anyway (the report notes it) instead of raising.
    notes : sequence of str
        Notes from resolving the splits (e.g. :func:`regenerate_splits`).

    Raises
    ------
    EvaluationError
        Missing checkpoint description, overlap with training classes (naming
        them), differing feature settings (naming them), unusable input shape,
        unknown subset, no splits.
    SplitError
        A split of another dataset, or classes missing from the version.
    """
    check_meta(meta, checkpoint)
    if subset not in SUBSETS:
        raise EvaluationError(f"Expected --subset among {list(SUBSETS)}. Got {subset!r}.")
    if not sources:
        raise EvaluationError("Expected at least one split to evaluate (--split FILE or --regenerate K).")
    all_notes = list(notes) + check_compatible(meta, version, checkpoint=checkpoint,
                                               allow_feature_mismatch=allow_feature_mismatch)
    # Refuse before any embedding work: check every split first.
    planned = [plan_split(source, version, meta, subset=subset, allow_overlap=allow_overlap, notes=all_notes)
               for source in sources]
    runs = tuple(
        SplitRun(source=source, subset=subset, evaluation=evaluate_classes(embedder, version.read, rows, settings),
                 overlap=overlap)
        for source, rows, overlap in planned
    )
    context = {
        "checkpoint": str(checkpoint),
        "dataset": version.dataset,
        "feature_version_id": version.version_id,
        "features_path": str(version.path),
        "checkpoint_feature_version_id": meta["feature_version_id"],
        "checkpoint_split_id": meta["split_id"],
        "n_training_classes": len(meta["training_classes"]),
        "split_ids": [r.split_id for r in runs],
        "subset": subset,
        "seed": settings.seed,
        "settings": settings.to_dict(),
        "allow_overlap": allow_overlap,
        "allow_feature_mismatch": allow_feature_mismatch,
    }
    return EvaluationReport(context=context, runs=runs, notes=tuple(all_notes))


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


def plan_split(source: SplitSource, version: VersionLike, meta: Mapping[str, Any], *, subset: str,
               allow_overlap: bool, notes: list[str]) -> tuple[SplitSource, dict[str, np.ndarray], tuple[str, ...]]:
    """The evaluating rows of one split, after the refusals (appends a note for an allowed overlap).

    Returns
    -------
    (source, rows, overlap)
        ``rows``: class -> store rows of the ``subset`` classes; ``overlap``: those seen in training.
    """
    rows = clip_rows(source.split, version)[subset]
    if len(rows) < 2:
        raise EvaluationError(
            f"Split {source.split.split_id}{f' ({source.path})' if source.path else ''} has "
            f"{len(rows)} {subset} class(es); a one-shot test needs at least 2."
        )
    overlap = check_overlap(rows, meta["training_classes"], allow_overlap=allow_overlap,
                            where=f"split {source.split.split_id} ({subset})")
    if overlap:
        notes.append(f"Split {source.split.split_id}: {subset} classes {overlap} were seen in training "
                     f"(--allow-overlap); their accuracy is not one-shot.")
    return source, rows, tuple(overlap)

"""Algorithm 2 (GetTrainBatch): one batch of positive and negative pairs.

For every training class (in sorted order): one random anchor, ``pos`` other
distinct clips of the class (label 1) and ``neg`` clips, each from a different
randomly chosen other class (label 0), paired with the anchor. The batch is
returned as the distinct clip rows plus index arrays into them, so that each
distinct clip is encoded once and pairs are formed from embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from siamese_audio.errors import TrainingError


@dataclass(frozen=True)
class PairBatch:
    """One training batch.

    Attributes
    ----------
    rows : np.ndarray [shape=(N,), dtype=int64]
        Distinct store rows the batch needs, sorted ascending.
    left, right : np.ndarray [shape=(P,), dtype=int64]
        Pair ``i`` is ``(rows[left[i]], rows[right[i]])``; ``left`` is the anchor.
    labels : np.ndarray [shape=(P,), dtype=float32]
        1 for a positive pair (same class), 0 for a negative pair.
    """

    rows: np.ndarray
    left: np.ndarray
    right: np.ndarray
    labels: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.labels.shape[0])


def validate_class_rows(class_rows: Mapping[str, np.ndarray], *, pos: int, neg: int, split: str = "train") -> None:
    """Refuse class rows that cannot give Algorithm 2 batches.

    Raises
    ------
    TrainingError
        Fewer than ``neg + 1`` classes, or a class with fewer than ``pos + 1`` clips.
    """
    if len(class_rows) < neg + 1:
        raise TrainingError(
            f"Pair sampler: {neg} negative pairs per class need at least {neg + 1} {split} classes, "
            f"each negative from a different class. Got {len(class_rows)} classes."
        )
    for name in sorted(class_rows):
        count = len(class_rows[name])
        if count < pos + 1:
            raise TrainingError(
                f"Pair sampler: {split} class {name!r} needs at least {pos + 1} clips "
                f"(one anchor and {pos} positives). Got {count}."
            )


def sample_pair_batch(
    class_rows: Mapping[str, np.ndarray], *, pos: int, neg: int, rng: np.random.Generator
) -> PairBatch:
    """Draw one Algorithm 2 batch of ``C * pos`` positive and ``C * neg`` negative pairs.

    Parameters
    ----------
    class_rows : Mapping[str, np.ndarray]
        Training class -> its store rows [shape=(n_clips,), int].
    pos, neg : int
        Positive and negative pairs per class.
    rng : np.random.Generator
        Advanced in place; the same state gives the same batch.

    Returns
    -------
    PairBatch
        Pairs ordered class by class (sorted class names): ``pos`` positives then ``neg`` negatives.
    """
    validate_class_rows(class_rows, pos=pos, neg=neg)
    classes = sorted(class_rows)
    per_class = pos + neg
    left = np.empty(len(classes) * per_class, dtype=np.int64)
    right = np.empty_like(left)
    labels = np.zeros(left.shape[0], dtype=np.float32)
    for c, name in enumerate(classes):
        rows = np.asarray(class_rows[name], dtype=np.int64)
        picks = rows[rng.choice(rows.shape[0], size=pos + 1, replace=False)]
        others = rng.choice(len(classes) - 1, size=neg, replace=False)
        others = others + (others >= c)  # skip the anchor's own class
        negatives = [class_rows[classes[o]][rng.integers(len(class_rows[classes[o]]))] for o in others]
        start = c * per_class
        left[start:start + per_class] = picks[0]
        right[start:start + pos] = picks[1:]
        right[start + pos:start + per_class] = negatives
        labels[start:start + pos] = 1.0
    distinct, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    n = left.shape[0]
    return PairBatch(rows=distinct, left=inverse[:n], right=inverse[n:], labels=labels)


@dataclass(frozen=True)
class ClassBatch:
    """One batch of ``P`` classes x ``K`` clips, every pair of which the loss uses.

    Attributes
    ----------
    rows : np.ndarray [shape=(P * K,), dtype=int64]
        Store rows, class by class (``K`` consecutive rows per class), each clip once.
    labels : np.ndarray [shape=(P * K,), dtype=int64]
        Index ``0 .. P - 1`` of each row's class within the batch.
    classes : np.ndarray or None [shape=(P * K,), dtype=int64]
        Index of each row's class among all the training classes (sorted by name),
        for a classifier over them; None where the batch was made without it.
    """

    rows: np.ndarray
    labels: np.ndarray
    classes: np.ndarray | None = None

    @property
    def n_pairs(self) -> int:
        n = int(self.rows.shape[0])
        return n * (n - 1) // 2


def validate_class_batch(class_rows: Mapping[str, np.ndarray], *, classes: int, clips: int,
                         split: str = "train") -> None:
    """Refuse class rows that cannot give batches of ``classes`` x ``clips``.

    Raises
    ------
    TrainingError
        Fewer than ``classes`` classes, or a class with fewer than ``clips`` clips.
    """
    if len(class_rows) < classes:
        raise TrainingError(
            f"Class batches of {classes} classes need at least {classes} {split} classes. "
            f"Got {len(class_rows)}; lower classes_per_batch."
        )
    for name in sorted(class_rows):
        if len(class_rows[name]) < clips:
            raise TrainingError(
                f"Class batches of {clips} clips per class: {split} class {name!r} has {len(class_rows[name])}; "
                "lower clips_per_class."
            )


def sample_class_batch(
    class_rows: Mapping[str, np.ndarray], *, classes: int, clips: int, rng: np.random.Generator
) -> ClassBatch:
    """Draw ``classes`` distinct classes and ``clips`` distinct clips of each.

    Parameters
    ----------
    class_rows : Mapping[str, np.ndarray]
        Training class -> its store rows.
    classes, clips : int
        ``P`` and ``K``.
    rng : np.random.Generator
        Advanced in place; the same state gives the same batch.
    """
    validate_class_batch(class_rows, classes=classes, clips=clips)
    names = sorted(class_rows)
    chosen = rng.choice(len(names), size=classes, replace=False)
    rows = np.concatenate([
        np.asarray(class_rows[names[c]], dtype=np.int64)[rng.choice(len(class_rows[names[c]]), size=clips,
                                                                    replace=False)]
        for c in chosen
    ])
    return ClassBatch(rows=rows, labels=np.repeat(np.arange(classes, dtype=np.int64), clips),
                      classes=np.repeat(np.asarray(chosen, dtype=np.int64), clips))

"""Pure functions for one-shot metrics: intervals, per-class accuracy, confusion, spread over splits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from siamese_audio.errors import EvaluationError

#: Two-sided 95% standard normal quantile.
Z95 = 1.959963984540054

#: How :func:`wilson_interval` is described in reports.
CI_METHOD = "Wilson score interval, 95%, treating tasks as independent Bernoulli trials"


def wilson_interval(successes: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    successes : int
        Correct tasks, ``0 <= successes <= n``.
    n : int
        Tasks, ``n >= 1``.
    z : float
        Normal quantile (1.96 for 95%).

    Returns
    -------
    (low, high) : tuple[float, float]
        Within ``[0, 1]``; unlike the normal (Wald) interval it stays informative
        at accuracies of 0 or 1 and for few tasks.
    """
    if n < 1 or not 0 <= successes <= n:
        raise EvaluationError(f"Expected 0 <= successes <= n and n >= 1. Got successes={successes}, n={n}.")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def choose(scores: np.ndarray) -> np.ndarray:
    """Column of the highest score of each task, the first one on ties.

    Parameters
    ----------
    scores : np.ndarray [shape=(T, C)]

    Returns
    -------
    np.ndarray [shape=(T,), dtype=int64]
    """
    if scores.ndim != 2:
        raise EvaluationError(f"Expected scores of shape (tasks, ways). Got shape {scores.shape}.")
    if not np.isfinite(scores).all():
        bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))[:5].tolist()
        raise EvaluationError(f"Expected finite similarity scores. Tasks {bad} have NaN or infinite scores.")
    return np.argmax(scores, axis=1).astype(np.int64)


def confusion_matrix(query_class: np.ndarray, chosen_class: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (query class, class of the chosen support).

    Parameters
    ----------
    query_class, chosen_class : np.ndarray [shape=(T,), dtype=int]
    n_classes : int

    Returns
    -------
    np.ndarray [shape=(n_classes, n_classes), dtype=int64]
        Row = class of the query, column = class of the support chosen.
    """
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (query_class, chosen_class), 1)
    return matrix


def per_class_counts(query_class: np.ndarray, correct: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Correct tasks and tasks per query class, [shape=(n_classes,), int64] each."""
    hits = np.bincount(query_class, weights=correct.astype(np.float64), minlength=n_classes).astype(np.int64)
    totals = np.bincount(query_class, minlength=n_classes).astype(np.int64)
    return hits, totals


@dataclass(frozen=True)
class Spread:
    """Distribution of one number over several splits.

    ``sd`` is the sample standard deviation (``ddof=1``); 0.0 for one split.
    """

    n: int
    mean: float
    sd: float
    min: float
    max: float

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max}


def spread(values: Sequence[float]) -> Spread:
    """Mean, sample sd, min and max of ``values`` (at least one)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise EvaluationError("Expected at least one value to summarise. Got none.")
    sd = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return Spread(n=int(array.size), mean=float(array.mean()), sd=sd, min=float(array.min()), max=float(array.max()))

"""Pure functions for one-shot metrics: intervals, ties, per-class accuracy, confusion, spread over splits.

Two intervals, for two questions:

- :func:`wilson_interval` on the tasks of one split: how precisely these tasks
  measure accuracy on these classes, treating tasks as independent (they share
  clips, so it is somewhat too narrow). Pooling the tasks of several splits into
  one Wilson interval (:data:`POOLED_CI_METHOD`) is narrower still: the splits
  share held-out classes and clips.
- :func:`t_interval` on the per-split accuracies of ``K`` splits
  (:data:`ACROSS_SPLITS_CI_METHOD`): where the mean accuracy over such splits
  lies, given the spread between the ``K`` splits seen. It treats the split
  accuracies as independent draws; splits drawn from one small pool of
  held-out classes overlap, so it understates the variation over all possible
  class sets, and it says nothing about other datasets or recordings.
"""

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

#: How the Wilson interval of several splits' tasks pooled together is described.
POOLED_CI_METHOD = (
    "pooled Wilson score interval, 95%, over the tasks of all splits together as if independent "
    "(too narrow: the splits share held-out classes and clips, and tasks within a split share clips)"
)

#: How :func:`t_interval` over per-split accuracies is described.
ACROSS_SPLITS_CI_METHOD = (
    "mean of the per-split accuracies with a 95% Student t-interval over the K split means (df = K - 1)"
)


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


def t_interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float] | None:
    """Student t-interval of the mean of ``values`` (e.g. per-split accuracies).

    Parameters
    ----------
    values : sequence of float
        At least two for an interval.
    level : float
        Two-sided coverage, 0.95 by default.

    Returns
    -------
    (low, high) or None
        ``mean -/+ t_{level, K-1} * sd / sqrt(K)`` (sample sd), not clipped;
        None for fewer than two values.
    """
    from scipy.special import stdtrit

    array = np.asarray(values, dtype=np.float64)
    if array.size < 2:
        return None
    if not np.isfinite(array).all():
        raise EvaluationError(f"Expected finite values for a t-interval. Got {array.tolist()}.")
    mean = float(array.mean())
    half = float(stdtrit(array.size - 1, 0.5 + level / 2)) * float(array.std(ddof=1)) / math.sqrt(array.size)
    return mean - half, mean + half


def tied_top(scores: np.ndarray) -> np.ndarray:
    """Tasks whose highest score is shared by two or more supports.

    Parameters
    ----------
    scores : np.ndarray [shape=(T, C)]

    Returns
    -------
    np.ndarray [shape=(T,), dtype=bool]
        On these tasks the choice fell to the tie rule (first support), not the scorer.
    """
    if scores.ndim != 2:
        raise EvaluationError(f"Expected scores of shape (tasks, ways). Got shape {scores.shape}.")
    return (scores == scores.max(axis=1, keepdims=True)).sum(axis=1) > 1


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
    ``ci95`` is the 95% t-interval of the mean (:func:`t_interval`), None for one split.
    """

    n: int
    mean: float
    sd: float
    min: float
    max: float
    ci95: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max,
                "ci95": None if self.ci95 is None else list(self.ci95),
                "ci_method": ACROSS_SPLITS_CI_METHOD if self.ci95 is not None else None}


def spread(values: Sequence[float]) -> Spread:
    """Mean, sample sd, min, max and 95% t-interval of the mean of ``values`` (at least one)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise EvaluationError("Expected at least one value to summarise. Got none.")
    sd = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return Spread(n=int(array.size), mean=float(array.mean()), sd=sd, min=float(array.min()), max=float(array.max()),
                  ci95=t_interval(array))

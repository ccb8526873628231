"""C-way one-shot tasks (the report's Algorithm 4), drawn from a seed as integer arrays.

A task fixes a query clip of class ``c``, one *other* clip of ``c`` (the positive
support) and one clip of each of ``C - 1`` other classes drawn at random from the
evaluating classes (the negative supports). Algorithm 3 draws ``runs`` tasks per
evaluating class.

Tasks index a :class:`ClipPool`, the evaluating clips laid out class after class,
so that scoring can look embeddings up by position. Nothing here reads data.

Tie-breaking
------------
The supports of a task are placed in random order (the positive support's column
is drawn uniformly from ``0 .. C-1``), and the chosen support is the *first*
column with the highest similarity (``numpy.argmax``). Ties are therefore broken
deterministically given the seed, and a scorer that gives every support the same
score is right exactly when the positive support was placed in column 0, i.e.
with probability ``1 / C``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from siamese_audio.errors import EvaluationError


@dataclass(frozen=True, eq=False)
class ClipPool:
    """The distinct clips of the evaluating classes, grouped by class.

    Attributes
    ----------
    classes : tuple[str, ...]
        Evaluating classes, in the order given by the caller.
    rows : np.ndarray [shape=(N,), dtype=int64]
        Store rows, class after class (``rows[offsets[k]:offsets[k+1]]`` are class ``k``'s).
    labels : np.ndarray [shape=(N,), dtype=int64]
        Class index (into ``classes``) of each pooled clip.
    offsets : np.ndarray [shape=(K+1,), dtype=int64]
        Start of each class's clips in ``rows``; ``offsets[-1] == N``.
    """

    classes: tuple[str, ...]
    rows: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """Clips per class [shape=(K,), dtype=int64]."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return int(self.rows.shape[0])


@dataclass(frozen=True, eq=False)
class OneShotTasks:
    """``T`` C-way one-shot tasks over a :class:`ClipPool`.

    Attributes
    ----------
    pool : ClipPool
    ways : int
        ``C``, supports per task.
    runs : int
        Tasks per evaluating class.
    seed : int
    query : np.ndarray [shape=(T,), dtype=int64]
        Pool index of each task's query clip.
    support : np.ndarray [shape=(T, C), dtype=int64]
        Pool index of each support clip, in the (random) order they are scored.
    support_class : np.ndarray [shape=(T, C), dtype=int64]
        Class index of each support (distinct within a task).
    positive : np.ndarray [shape=(T,), dtype=int64]
        Column of ``support`` that holds the positive support.
    """

    pool: ClipPool
    ways: int
    runs: int
    seed: int
    query: np.ndarray
    support: np.ndarray
    support_class: np.ndarray
    positive: np.ndarray

    @property
    def n_tasks(self) -> int:
        return int(self.query.shape[0])

    @property
    def query_class(self) -> np.ndarray:
        """Class index of each task's query [shape=(T,), dtype=int64]."""
        return self.pool.labels[self.query]

    def query_rows(self) -> np.ndarray:
        """Store rows of the queries [shape=(T,), dtype=int64]."""
        return self.pool.rows[self.query]

    def support_rows(self) -> np.ndarray:
        """Store rows of the supports [shape=(T, C), dtype=int64]."""
        return self.pool.rows[self.support]


def make_pool(class_rows: Mapping[str, np.ndarray | list[int]]) -> ClipPool:
    """Lay the evaluating clips out class after class, checking they can form tasks.

    Parameters
    ----------
    class_rows : mapping of str to array-like of int
        Store rows of each evaluating class (at least two classes, each with at
        least two clips, and no row in two classes).

    Returns
    -------
    ClipPool

    Raises
    ------
    EvaluationError
        Fewer than two classes, a class with fewer than two clips, non-integer or
        negative rows, or a row listed under two classes.
    """
    if len(class_rows) < 2:
        raise EvaluationError(
            f"Expected at least 2 evaluating classes for one-shot tasks. Got {len(class_rows)}: {sorted(class_rows)}."
        )
    classes = tuple(str(c) for c in class_rows)
    parts = []
    for name, rows in class_rows.items():
        array = np.asarray(rows)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise EvaluationError(
                f"Expected the rows of class {name!r} to be a 1-D array of integers. "
                f"Got shape {array.shape}, dtype {array.dtype} instead."
            )
        if array.size < 2:
            raise EvaluationError(
                f"Expected at least 2 clips of every evaluating class (a query and a positive support). "
                f"Class {name!r} has {array.size}."
            )
        if array.min() < 0:
            raise EvaluationError(f"Expected store rows >= 0 for class {name!r}. Got {int(array.min())}.")
        parts.append(array.astype(np.int64))
    rows = np.concatenate(parts)
    unique, counts = np.unique(rows, return_counts=True)
    if (counts > 1).any():
        repeated = unique[counts > 1][:5].tolist()
        raise EvaluationError(f"Expected every store row in one class only. Rows {repeated} appear more than once.")
    sizes = np.array([p.size for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    labels = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
    return ClipPool(classes=classes, rows=rows, labels=labels, offsets=offsets)


def validate_ways_runs(ways: int, runs: int, n_classes: int) -> None:
    """Check ``2 <= ways <= n_classes`` and ``runs >= 1`` (integers)."""
    if isinstance(ways, bool) or not isinstance(ways, (int, np.integer)) or not 2 <= ways <= n_classes:
        raise EvaluationError(
            f"Expected ways (C) to be an integer from 2 to the number of evaluating classes ({n_classes}). "
            f"Got {ways!r}."
        )
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
        raise EvaluationError(f"Expected runs (tasks per evaluating class) to be a positive integer. Got {runs!r}.")


def draw_tasks(pool: ClipPool, *, ways: int, runs: int, seed: int) -> OneShotTasks:
    """Draw ``runs`` C-way one-shot tasks per class of ``pool`` (Algorithms 3-4).

    Tasks are ordered class after class (``runs`` consecutive tasks per class).
    Everything random comes from ``numpy.random.default_rng(seed)``: the same
    pool, ``ways``, ``runs`` and ``seed`` give the same tasks.

    Parameters
    ----------
    pool : ClipPool
    ways : int
        ``C``, from 2 to ``len(pool.classes)``.
    runs : int
        Tasks per class.
    seed : int

    Returns
    -------
    OneShotTasks
        ``T = len(pool.classes) * runs`` tasks.
    """
    n_classes = len(pool.classes)
    validate_ways_runs(ways, runs, n_classes)
    rng = np.random.default_rng(seed)
    counts = pool.counts
    offsets = pool.offsets
    n_tasks = n_classes * runs
    query_class = np.repeat(np.arange(n_classes, dtype=np.int64), runs)

    # Query and a different clip of the same class (the positive support).
    n_own = counts[query_class]
    q_local = rng.integers(0, n_own).astype(np.int64)
    p_local = rng.integers(0, n_own - 1).astype(np.int64)
    p_local += p_local >= q_local
    query = offsets[query_class] + q_local
    positive_clip = offsets[query_class] + p_local

    # C - 1 distinct other classes: the first C - 1 of a random order of the others.
    keys = rng.random((n_tasks, n_classes))
    keys[np.arange(n_tasks), query_class] = np.inf
    negative_class = np.argsort(keys, axis=1, kind="stable")[:, : ways - 1].astype(np.int64)
    neg_local = rng.integers(0, counts[negative_class]).astype(np.int64)
    negative_clip = offsets[negative_class] + neg_local

    # Place the positive support at a random column; negatives fill the rest in order.
    positive = rng.integers(0, ways, size=n_tasks).astype(np.int64)
    columns = np.arange(ways)[None, :]
    is_positive = columns == positive[:, None]
    neg_index = columns - (columns > positive[:, None])  # column -> index among negatives
    neg_index = np.clip(neg_index, 0, max(ways - 2, 0))
    take = np.take_along_axis
    support = np.where(is_positive, positive_clip[:, None], take(negative_clip, neg_index, axis=1))
    support_class = np.where(is_positive, query_class[:, None], take(negative_class, neg_index, axis=1))
    return OneShotTasks(
        pool=pool, ways=int(ways), runs=int(runs), seed=int(seed), query=query,
        support=support.astype(np.int64), support_class=support_class.astype(np.int64), positive=positive,
    )

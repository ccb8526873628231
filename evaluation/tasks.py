"""C-way one-shot tasks (the report's Algorithm 4), drawn from a seed as integer arrays.

A task fixes a query clip of class ``c``, one *other* clip of ``c`` (the positive
support) and one clip of each of ``C - 1`` other classes drawn at random from the
evaluating classes (the negative supports). Algorithm 3 draws ``runs`` tasks per
evaluating class.

Tasks index a :class:`ClipPool`, the evaluating clips laid out class after class,
so that scoring can look embeddings up by position. Nothing here reads data.
:func:`draw_tasks` is the only function that draws tasks; :func:`evaluation_tasks`
is "the tasks ``evaluate`` (and training's validation) draws for these classes,
ways, runs, seed and source rule", for any stage that must score exactly those.

Positives from another recording
--------------------------------
Some datasets cut several clips from one source recording (ESC-50's ``src_file``,
different ``take``). A positive support cut from the query's own recording is an
easier match than a new recording of the class. When the pool knows each clip's
source recording, the positive support is drawn from the clips of the query's
class that come from *another* recording (:data:`POSITIVES_OTHER_RECORDING`, the
default). A task whose class has no clip from another recording than the query's
takes its positive from the query's own recording; it is flagged
(``OneShotTasks.no_other_recording``) and counted in the reports, never silently.
``same_source_ok=True`` draws the positive from every other clip of the class
(:data:`POSITIVES_ANY_CLIP`, the report's protocol), with the same random stream
as when sources are unknown. Without sources (AudioMNIST) the rule cannot apply
and the summary says so.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from siamese_audio.errors import EvaluationError

#: The positive support comes from another source recording than the query when one exists (default).
POSITIVES_OTHER_RECORDING = "other_recording"
#: The positive support is any other clip of the query's class (the report's protocol, --same-source-ok).
POSITIVES_ANY_CLIP = "any_clip"


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
    sources : np.ndarray [shape=(N,), dtype=int64] or None
        Source recording of each pooled clip as a code (equal codes: same
        recording; a clip of unknown source has a code of its own), or None when
        the sources are not known at all.
    """

    classes: tuple[str, ...]
    rows: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    sources: np.ndarray | None = None

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
    same_source_ok : bool
        The positive rule: False = :data:`POSITIVES_OTHER_RECORDING`, True = :data:`POSITIVES_ANY_CLIP`.
    no_other_recording : np.ndarray [shape=(T,), dtype=bool] or None
        Tasks whose query's class has no clip from another recording than the
        query's (None when the pool's sources are unknown).
    positive_same_recording : np.ndarray [shape=(T,), dtype=bool] or None
        Tasks whose positive support comes from the query's own recording (under
        the default rule: exactly ``no_other_recording``).
    """

    pool: ClipPool
    ways: int
    runs: int
    seed: int
    query: np.ndarray
    support: np.ndarray
    support_class: np.ndarray
    positive: np.ndarray
    same_source_ok: bool = False
    no_other_recording: np.ndarray | None = None
    positive_same_recording: np.ndarray | None = None

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

    @property
    def rule(self) -> str:
        """:data:`POSITIVES_OTHER_RECORDING` or :data:`POSITIVES_ANY_CLIP`."""
        return POSITIVES_ANY_CLIP if self.same_source_ok else POSITIVES_OTHER_RECORDING

    def positives_summary(self) -> dict[str, Any]:
        """Which positive rule the tasks used, whether it could apply, and what it could not avoid.

        Returns
        -------
        dict
            ``rule``; ``sources_known`` (the pool knows source recordings);
            ``applied`` (the other-recording rule was in force); ``n_tasks``;
            ``n_positive_same_recording`` (tasks whose positive is from the
            query's own recording); ``n_without_other_recording`` and
            ``classes_without_other_recording`` (tasks, and their query classes,
            with no clip of the class from another recording). Counts are None
            when sources are unknown.
        """
        known = self.pool.sources is not None
        out: dict[str, Any] = {
            "rule": self.rule, "sources_known": known, "applied": known and not self.same_source_ok,
            "n_tasks": self.n_tasks, "n_positive_same_recording": None, "n_without_other_recording": None,
            "classes_without_other_recording": [],
        }
        if known:
            lacking = self.no_other_recording
            out["n_positive_same_recording"] = int(self.positive_same_recording.sum())
            out["n_without_other_recording"] = int(lacking.sum())
            out["classes_without_other_recording"] = [
                self.pool.classes[k] for k in np.unique(self.query_class[lacking]).tolist()]
        return out


def make_pool(
    class_rows: Mapping[str, np.ndarray | list[int]],
    class_sources: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
) -> ClipPool:
    """Lay the evaluating clips out class after class, checking they can form tasks.

    Parameters
    ----------
    class_rows : mapping of str to array-like of int
        Store rows of each evaluating class (at least two classes, each with at
        least two clips, and no row in two classes).
    class_sources : mapping of str to array-like, optional
        Source recording of each clip, aligned with ``class_rows`` (same classes,
        same lengths), e.g. from :func:`manifests.split_catalog.clip_sources`.
        ``None``, ``""`` or NaN marks a clip of unknown source (a recording of its
        own). Omit it when the dataset does not know its sources.

    Returns
    -------
    ClipPool

    Raises
    ------
    EvaluationError
        Fewer than two classes, a class with fewer than two clips, non-integer or
        negative rows, a row listed under two classes, or sources that do not
        line up with the rows.
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
    sources = None if class_sources is None else _source_codes(class_rows, class_sources)
    return ClipPool(classes=classes, rows=rows, labels=labels, offsets=offsets, sources=sources)


def _is_unknown(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == ""


def _source_codes(class_rows: Mapping[str, Any], class_sources: Mapping[str, Any]) -> np.ndarray:
    """Integer codes of the pooled clips' source recordings (unknown ones: a code each)."""
    if set(map(str, class_sources)) != set(map(str, class_rows)):
        raise EvaluationError(
            f"Expected sources for exactly the evaluating classes {sorted(map(str, class_rows))}. "
            f"Got sources for {sorted(map(str, class_sources))}."
        )
    names: list[str | None] = []
    for name, rows in class_rows.items():
        values = list(class_sources[name])
        if len(values) != len(rows):
            raise EvaluationError(
                f"Expected one source per clip of class {name!r} ({len(rows)}). Got {len(values)}."
            )
        names += [None if _is_unknown(v) else str(v) for v in values]
    known = sorted({n for n in names if n is not None})
    code = {n: i for i, n in enumerate(known)}
    out = np.empty(len(names), dtype=np.int64)
    unknown = len(known)
    for i, n in enumerate(names):
        if n is None:
            out[i], unknown = unknown, unknown + 1
        else:
            out[i] = code[n]
    return out


#: Tasks drawn for one C at most: each is a row of tasks.csv and a few dozen bytes of arrays.
MAX_TASKS = 1_000_000
#: Drawing the tasks may take this share of the memory available at most.
TASK_MEMORY_SHARE = 4


def task_bytes(n_tasks: int, ways: int, n_classes: int) -> int:
    """Bytes :func:`draw_tasks` allocates for ``n_tasks`` tasks (its random keys and sorted order dominate)."""
    return n_tasks * (3 * 8 * n_classes + 8 * 8 * ways)


def check_runs(runs: int, *, n_classes: int | None = None, ways: int = 2) -> None:
    """Refuse more tasks than :data:`MAX_TASKS` or the memory allow, naming the limit.

    Without ``n_classes`` only ``runs`` itself is bounded (one class's tasks).
    """
    from siamese_audio.memory import available_bytes

    n = max(1, n_classes or 1)
    by_count = MAX_TASKS // n
    available = available_bytes()
    by_memory = max(1, available // TASK_MEMORY_SHARE // max(1, task_bytes(n, ways, n)))
    limit = min(by_count, by_memory)
    if runs <= limit:
        return
    classes = f" over {n} classes" if n_classes else ""
    why = (f"at most {MAX_TASKS:,} tasks{classes}" if by_count <= by_memory else
           f"{task_bytes(n, ways, n):,} bytes a run{classes}, within 1/{TASK_MEMORY_SHARE} of the "
           f"{available / 2**30:.1f} GiB of memory available")
    raise EvaluationError(f"Expected runs (tasks per evaluating class) at most {limit:,} ({why}). Got {runs:,}.")


def validate_ways_runs(ways: int, runs: int, n_classes: int) -> None:
    """Check ``2 <= ways <= n_classes`` and ``1 <= runs <= the bound of`` :func:`check_runs` (integers)."""
    if isinstance(ways, bool) or not isinstance(ways, (int, np.integer)) or not 2 <= ways <= n_classes:
        raise EvaluationError(
            f"Expected ways (C) to be an integer from 2 to the number of evaluating classes ({n_classes}). "
            f"Got {ways!r}."
        )
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
        raise EvaluationError(f"Expected runs (tasks per evaluating class) to be a positive integer. Got {runs!r}.")
    check_runs(int(runs), n_classes=n_classes, ways=int(ways))


def draw_tasks(pool: ClipPool, *, ways: int, runs: int, seed: int, same_source_ok: bool = False) -> OneShotTasks:
    """Draw ``runs`` C-way one-shot tasks per class of ``pool`` (Algorithms 3-4).

    Tasks are ordered class after class (``runs`` consecutive tasks per class).
    Everything random comes from ``numpy.random.default_rng(seed)``: the same
    pool, ``ways``, ``runs``, ``seed`` and rule give the same tasks.

    Parameters
    ----------
    pool : ClipPool
    ways : int
        ``C``, from 2 to ``len(pool.classes)``.
    runs : int
        Tasks per class.
    seed : int
    same_source_ok : bool
        False (default): when ``pool.sources`` is known, the positive support is
        drawn from the clips of the query's class cut from another recording than
        the query's, when there is one (see the module's notes). True: from every
        other clip of the class (the report's protocol; the same tasks as without
        sources).

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
    query = offsets[query_class] + q_local
    no_other = same_recording = None
    if pool.sources is None or same_source_ok:
        p_local = rng.integers(0, n_own - 1).astype(np.int64)
        p_local += p_local >= q_local
        positive_clip = offsets[query_class] + p_local
        if pool.sources is not None:
            no_other = _recordings(pool).lacking_other(query)
    else:
        positive_clip, no_other = _recordings(pool).draw_positive(query, rng)
    if pool.sources is not None:
        same_recording = pool.sources[positive_clip] == pool.sources[query]

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
        same_source_ok=bool(same_source_ok), no_other_recording=no_other, positive_same_recording=same_recording,
    )


@dataclass(frozen=True, eq=False)
class _Recordings:
    """The pool's clips sorted by (class, source recording): each clip's recording is one contiguous block.

    ``order[j]`` is the pool index at sorted position ``j``; a class keeps its
    pool offsets (the pool is laid out class after class). ``start[i]``/``stop[i]``
    bound the block of pool clip ``i``'s recording, ``position[i]`` is its sorted position.
    """

    pool: ClipPool
    order: np.ndarray
    position: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    def lacking_other(self, query: np.ndarray) -> np.ndarray:
        """Queries whose class has no clip from another recording [shape=(T,), bool]."""
        n_class = self.pool.counts[self.pool.labels[query]]
        return (self.stop[query] - self.start[query]) == n_class

    def draw_positive(self, query: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One positive per query: uniform over the class's other-recording clips, else over its other clips.

        Returns
        -------
        positive_clip : np.ndarray [shape=(T,), int64]
            Pool index of each positive support.
        lacking : np.ndarray [shape=(T,), bool]
            Queries whose positive had to come from their own recording.
        """
        first = self.pool.offsets[self.pool.labels[query]]
        n_class = self.pool.counts[self.pool.labels[query]]
        block = self.stop[query] - self.start[query]
        lacking = block == n_class
        n_candidates = np.where(lacking, n_class - 1, n_class - block)
        u = rng.integers(0, n_candidates).astype(np.int64)
        # Other recording: skip the query's block. Own recording only: skip the query itself.
        other = first + u + np.where(first + u >= self.start[query], block, 0)
        own = first + u + (first + u >= self.position[query])
        return self.order[np.where(lacking, own, other)].astype(np.int64), lacking


def _recordings(pool: ClipPool) -> _Recordings:
    n = len(pool)
    order = np.lexsort((np.arange(n), pool.sources, pool.labels)).astype(np.int64)
    labels, sources = pool.labels[order], pool.sources[order]
    change = np.ones(n, dtype=bool)
    change[1:] = (labels[1:] != labels[:-1]) | (sources[1:] != sources[:-1])
    starts = np.flatnonzero(change)
    stops = np.append(starts[1:], n)
    block = np.cumsum(change) - 1
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    return _Recordings(pool=pool, order=order, position=position, start=starts[block][position],
                       stop=stops[block][position])


def evaluation_tasks(
    class_rows: Mapping[str, np.ndarray | list[int]],
    *,
    ways: int,
    runs: int,
    seed: int,
    class_sources: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    same_source_ok: bool = False,
) -> OneShotTasks:
    """The tasks ``evaluate`` and training's validation draw for these classes, ways, runs, seed and source rule.

    ``evaluate`` scores exactly ``evaluation_tasks(class_rows, ways=C, runs=R,
    seed=S, class_sources=..., same_source_ok=...)`` for its headline and for
    each C of its curve, where ``class_rows`` are the evaluating classes' store
    rows (:func:`manifests.split_catalog.clip_rows`) and ``class_sources`` their
    source recordings (:func:`manifests.split_catalog.clip_sources`, None for a
    dataset without them). A stage that must explain or re-score evaluate's
    tasks calls this with the same arguments.

    Returns
    -------
    OneShotTasks
    """
    return draw_tasks(make_pool(class_rows, class_sources), ways=ways, runs=runs, seed=seed,
                      same_source_ok=same_source_ok)

"""C-way one-shot accuracy (the report's Algorithm 3) over cached embeddings.

Every distinct clip the tasks use (of the evaluating classes) is read and
embedded once, in batches; every task is then scored from the cached embeddings with the
embedder's similarity head. :func:`evaluate_one_shot_per_pair` is the naive
method (one embedding pass and one similarity call per pair); it exists to check
the cached path and to measure what caching saves (``benchmarks/bench_eval.py``).

Tasks come from :func:`evaluation.tasks.draw_tasks`; see its module for the
tie-breaking rule (first highest score; supports in random order) and for the
rule that draws positives from another recording than the query's.

Scores are ranked as the embedder returns them: a network's head gives its
logit, which does not saturate (a float32 sigmoid is exactly 1.0 above a logit
of about 16.7 and would tie). :attr:`OneShotResult.n_tied_top` counts the tasks
whose top score was tied anyway, where the tie rule, not the scorer, chose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.metrics import (
    CI_METHOD,
    choose,
    confusion_matrix,
    per_class_counts,
    tied_top,
    wilson_interval,
)
from siamese_audio.evaluation.tasks import ClipPool, OneShotTasks, evaluation_tasks

#: ``read(rows) -> float32 array [shape=(len(rows), n_mels, n_frames)]``, e.g. ``FeatureVersion.read``.
ReadFn = Callable[[np.ndarray], np.ndarray]

#: Bytes of embeddings gathered per similarity call when scoring from the cache.
SCORE_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True, eq=False)
class OneShotResult:
    """Outcome of ``T`` C-way one-shot tasks.

    Attributes
    ----------
    accuracy : float
        Correct tasks / tasks (Algorithm 3's normalised mean accuracy).
    n_tasks, n_correct : int
    ci95 : tuple[float, float]
        95% Wilson score interval of ``accuracy`` (see :data:`ci_method`).
    per_class : dict[str, float]
        Accuracy of the tasks whose query is of each class (Table 2.3).
    classes : tuple[str, ...]
        Evaluating classes; the order of ``confusion``'s rows and columns.
    confusion : np.ndarray [shape=(K, K), dtype=int64]
        Rows: class of the query; columns: class of the chosen support (Figure 2.7).
    correct : np.ndarray [shape=(T,), dtype=bool]
        Per-task correctness, in the order of ``tasks``.
    chosen : np.ndarray [shape=(T,), dtype=int64]
        Column of the chosen support of each task.
    scores : np.ndarray [shape=(T, C), dtype=float32]
        Similarity of the query to each support (a network's logit).
    tasks : OneShotTasks
        The tasks scored (query and support rows, classes, seed, positive rule).
    tied : np.ndarray [shape=(T,), dtype=bool]
        Tasks whose highest score was shared by several supports.
    ci_method : str
    """

    accuracy: float
    n_tasks: int
    n_correct: int
    ci95: tuple[float, float]
    per_class: dict[str, float]
    classes: tuple[str, ...]
    confusion: np.ndarray
    correct: np.ndarray
    chosen: np.ndarray
    scores: np.ndarray
    tasks: OneShotTasks
    tied: np.ndarray
    ci_method: str = CI_METHOD

    @property
    def ways(self) -> int:
        return self.tasks.ways

    @property
    def runs(self) -> int:
        return self.tasks.runs

    @property
    def seed(self) -> int:
        return self.tasks.seed

    @property
    def n_tied_top(self) -> int:
        """Tasks whose top score was tied (chosen by the tie rule)."""
        return int(self.tied.sum())

    @property
    def tied_top_share(self) -> float:
        return self.n_tied_top / self.n_tasks

    @property
    def chance(self) -> float:
        """Accuracy of guessing, ``1 / C``."""
        return 1.0 / self.tasks.ways

    def per_class_ci95(self) -> dict[str, tuple[float, float]]:
        """Wilson interval of each class's accuracy."""
        hits, totals = per_class_counts(self.tasks.query_class, self.correct, len(self.classes))
        return {c: wilson_interval(int(h), int(n)) for c, h, n in zip(self.classes, hits, totals)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (everything but the per-task arrays)."""
        return {
            "accuracy": self.accuracy, "n_tasks": self.n_tasks, "n_correct": self.n_correct,
            "ci95": list(self.ci95), "ci_method": self.ci_method, "chance": self.chance,
            "ways": self.ways, "runs": self.runs, "seed": self.seed,
            "per_class": dict(self.per_class),
            "per_class_ci95": {c: list(ci) for c, ci in self.per_class_ci95().items()},
            "classes": list(self.classes), "confusion": self.confusion.tolist(),
            "n_tied_top": self.n_tied_top, "tied_top_share": self.tied_top_share,
            "positives": self.tasks.positives_summary(),
        }


# --- embedding -------------------------------------------------------------------------------


def _check_batch(batch: np.ndarray, rows: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch)
    if batch.ndim != 3 or batch.shape[0] != rows.shape[0]:
        raise EvaluationError(
            f"Expected read(rows) to return shape ({rows.shape[0]}, n_mels, n_frames). Got {batch.shape}."
        )
    finite = np.isfinite(batch).reshape(batch.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = rows[~finite][:5].tolist()
        raise EvaluationError(
            f"Expected finite log-mels for every evaluating clip. Store rows {bad} hold NaN or infinity "
            f"(rejected clips must not be in a split's evaluating rows)."
        )
    return batch.astype(np.float32, copy=False)


def _check_embedding(out: np.ndarray, n: int, who: str) -> np.ndarray:
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[0] != n:
        raise EvaluationError(f"Expected {who}.embed to return shape ({n}, D). Got {out.shape}.")
    return out


#: Clips per embedding batch at most, whatever the memory.
MAX_BATCH_SIZE = 8192
#: Bytes of activations per input byte a batch may need (the report's encoder keeps some 32-64 values
#: per input value in its first blocks); a batch may take a quarter of the memory available.
ACTIVATION_FACTOR = 64
BATCH_MEMORY_SHARE = 4


def check_batch_size(batch_size: int, clip_shape: Sequence[int] | None = None, *, option: str = "batch_size",
                     error: type[Exception] = EvaluationError) -> None:
    """Refuse a batch of more clips than :data:`MAX_BATCH_SIZE` or (with ``clip_shape``) the memory allow.

    Raises
    ------
    error
        One line naming ``option``, the limit and what sets it.
    """
    from siamese_audio.memory import available_bytes

    limit, why = MAX_BATCH_SIZE, f"at most {MAX_BATCH_SIZE:,} clips a batch"
    if clip_shape is not None:
        clip_bytes = 4 * int(np.prod(clip_shape))
        available = available_bytes()
        by_memory = max(1, available // BATCH_MEMORY_SHARE // (clip_bytes * ACTIVATION_FACTOR))
        if by_memory < limit:
            limit = by_memory
            why = (f"clips of {' x '.join(map(str, clip_shape))} float32 and their activations, within "
                   f"1/{BATCH_MEMORY_SHARE} of the {available / 2**30:.1f} GiB of memory available")
    if batch_size > limit:
        raise error(f"Expected {option} at most {limit:,} ({why}). Got {batch_size:,}.")


def embed_rows(
    embedders: Sequence[Embedder], read: ReadFn, rows: np.ndarray, *, batch_size: int = 64
) -> list[np.ndarray]:
    """Read ``rows`` once, in batches, and embed them with every embedder.

    Parameters
    ----------
    embedders : sequence of Embedder
        All see the same batches (e.g. the network and the no-learning baseline).
    read : callable
        ``read(rows) -> float32 [shape=(len(rows), n_mels, n_frames)]``.
    rows : np.ndarray [shape=(N,), dtype=int64]
        Store rows, each read exactly once.
    batch_size : int
        Clips per read and per ``embed`` call.

    Returns
    -------
    list of np.ndarray [shape=(N, D_i)]
        One embedding matrix per embedder, row ``i`` for ``rows[i]``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise EvaluationError(f"Expected batch_size to be a positive integer. Got {batch_size!r}.")
    outputs: list[list[np.ndarray]] = [[] for _ in embedders]
    for start in range(0, rows.shape[0], batch_size):
        part = rows[start:start + batch_size]
        batch = _check_batch(read(part), part)
        for out, embedder in zip(outputs, embedders):
            out.append(_check_embedding(embedder.embed(batch), part.shape[0], type(embedder).__name__))
    return [np.concatenate(out) for out in outputs]


# --- scoring ---------------------------------------------------------------------------------


def embed_pool(
    embedders: Sequence[Embedder], read: ReadFn, pool: ClipPool, tasks: Sequence[OneShotTasks], *,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """Embed, once each, the pooled clips that ``tasks`` use; return one cache per embedder.

    Parameters
    ----------
    embedders : sequence of Embedder
    read : callable
    pool : ClipPool
    tasks : sequence of OneShotTasks
        All over ``pool`` (e.g. every C of a curve); only the clips they
        reference are read and embedded.
    batch_size : int

    Returns
    -------
    list of np.ndarray [shape=(N, D_i)]
        Row ``i`` embeds pool clip ``i``; rows of clips no task uses are zero.
    """
    used = np.unique(np.concatenate([np.concatenate([t.query, t.support.ravel()]) for t in tasks]))
    parts = embed_rows(embedders, read, pool.rows[used], batch_size=batch_size)
    caches = []
    for part in parts:
        cache = np.zeros((len(pool), part.shape[1]), dtype=part.dtype)
        cache[used] = part
        caches.append(cache)
    return caches


def _check_scores(scores: np.ndarray, n: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.shape != (n,):
        raise EvaluationError(f"Expected similarity to return shape ({n},). Got {scores.shape}.")
    return scores.astype(np.float32, copy=False)


def score_cached(embedder: Embedder, embeddings: np.ndarray, tasks: OneShotTasks) -> np.ndarray:
    """Similarity of every (query, support) pair, looked up in cached embeddings.

    Parameters
    ----------
    embedder : Embedder
        Only its ``similarity`` head is called, on chunks of pairs.
    embeddings : np.ndarray [shape=(N, D)]
        Row ``i`` embeds pool clip ``i`` (from :func:`embed_pool`).
    tasks : OneShotTasks

    Returns
    -------
    np.ndarray [shape=(T, C), dtype=float32]
    """
    if embeddings.ndim != 2 or embeddings.shape[0] != len(tasks.pool):
        raise EvaluationError(
            f"Expected one cached embedding per pooled clip, shape ({len(tasks.pool)}, D). Got {embeddings.shape}."
        )
    ways = tasks.ways
    row_bytes = max(1, embeddings.shape[1] * embeddings.itemsize)
    per_chunk = max(1, SCORE_CHUNK_BYTES // (row_bytes * ways))
    scores = np.empty((tasks.n_tasks, ways), dtype=np.float32)
    for start in range(0, tasks.n_tasks, per_chunk):
        stop = min(start + per_chunk, tasks.n_tasks)
        query = np.repeat(tasks.query[start:stop], ways)
        support = tasks.support[start:stop].ravel()
        sims = embedder.similarity(embeddings[query], embeddings[support])
        scores[start:stop] = _check_scores(sims, query.shape[0]).reshape(stop - start, ways)
    return scores


def score_per_pair(embedder: Embedder, read: ReadFn, tasks: OneShotTasks) -> np.ndarray:
    """The naive method: read and embed both clips of every pair, one pair at a time.

    One ``read`` of two rows, one ``embed`` of a batch of two and one
    ``similarity`` of one pair per (query, support) pair; nothing is cached.

    Returns
    -------
    np.ndarray [shape=(T, C), dtype=float32]
    """
    rows = tasks.pool.rows
    scores = np.empty((tasks.n_tasks, tasks.ways), dtype=np.float32)
    for t in range(tasks.n_tasks):
        query_row = rows[tasks.query[t]]
        for j in range(tasks.ways):
            pair = np.array([query_row, rows[tasks.support[t, j]]], dtype=np.int64)
            emb = _check_embedding(embedder.embed(_check_batch(read(pair), pair)), 2, type(embedder).__name__)
            scores[t, j] = _check_scores(embedder.similarity(emb[:1], emb[1:]), 1)[0]
    return scores


def summarize(tasks: OneShotTasks, scores: np.ndarray) -> OneShotResult:
    """Turn the scores of ``tasks`` into a :class:`OneShotResult`.

    The chosen support is the first column with the highest score.

    Parameters
    ----------
    tasks : OneShotTasks
    scores : np.ndarray [shape=(T, C)]
    """
    if scores.shape != (tasks.n_tasks, tasks.ways):
        raise EvaluationError(f"Expected scores of shape {(tasks.n_tasks, tasks.ways)}. Got {scores.shape}.")
    chosen = choose(scores)
    correct = chosen == tasks.positive
    n_classes = len(tasks.pool.classes)
    query_class = tasks.query_class
    chosen_class = tasks.support_class[np.arange(tasks.n_tasks), chosen]
    hits, totals = per_class_counts(query_class, correct, n_classes)
    n_correct = int(correct.sum())
    return OneShotResult(
        accuracy=n_correct / tasks.n_tasks, n_tasks=tasks.n_tasks, n_correct=n_correct,
        ci95=wilson_interval(n_correct, tasks.n_tasks),
        per_class={c: float(h / n) for c, h, n in zip(tasks.pool.classes, hits, totals)},
        classes=tasks.pool.classes, confusion=confusion_matrix(query_class, chosen_class, n_classes),
        correct=correct, chosen=chosen, scores=scores.astype(np.float32, copy=False), tasks=tasks,
        tied=tied_top(scores),
    )


# --- entry points ----------------------------------------------------------------------------


def evaluate_one_shot(
    embedder: Embedder,
    read: ReadFn,
    class_rows: Mapping[str, np.ndarray],
    ways: int,
    runs: int,
    seed: int,
    batch_size: int = 64,
    *,
    class_sources: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    same_source_ok: bool = False,
) -> OneShotResult:
    """Mean accuracy of ``runs`` C-way one-shot tasks per evaluating class (Algorithm 3).

    Parameters
    ----------
    embedder : Embedder
    read : callable
        ``read(rows) -> float32 [shape=(len(rows), n_mels, n_frames)]`` (``FeatureVersion.read``).
    class_rows : mapping of str to np.ndarray [shape=(n_c,), dtype=int64]
        Store rows of each evaluating class (>= 2 classes, >= 2 clips each).
    ways : int
        ``C``, from 2 to ``len(class_rows)``.
    runs : int
        Tasks per evaluating class; ``T = len(class_rows) * runs``.
    seed : int
        Same seed, classes and rows -> same tasks -> same result.
    batch_size : int
        Clips per read and per ``embed`` call.
    class_sources : mapping of str to array-like, optional
        Source recording of each clip of ``class_rows`` (aligned), when the
        catalog knows it: positives then come from another recording than the
        query's where one exists (:func:`evaluation.tasks.draw_tasks`).
    same_source_ok : bool
        Draw positives from any other clip of the class (the report's protocol).

    Returns
    -------
    OneShotResult

    Raises
    ------
    EvaluationError
        Too few classes or clips, ``ways`` out of range, non-finite inputs or
        scores, embedder outputs of the wrong shape.
    """
    tasks = evaluation_tasks(class_rows, ways=ways, runs=runs, seed=seed, class_sources=class_sources,
                             same_source_ok=same_source_ok)
    (embeddings,) = embed_pool([embedder], read, tasks.pool, [tasks], batch_size=batch_size)
    return summarize(tasks, score_cached(embedder, embeddings, tasks))


def evaluate_one_shot_per_pair(
    embedder: Embedder,
    read: ReadFn,
    class_rows: Mapping[str, np.ndarray],
    ways: int,
    runs: int,
    seed: int,
    *,
    class_sources: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    same_source_ok: bool = False,
) -> OneShotResult:
    """Same tasks as :func:`evaluate_one_shot`, scored the naive way (:func:`score_per_pair`)."""
    tasks = evaluation_tasks(class_rows, ways=ways, runs=runs, seed=seed, class_sources=class_sources,
                             same_source_ok=same_source_ok)
    return summarize(tasks, score_per_pair(embedder, read, tasks))

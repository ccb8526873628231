"""Scoring perturbed supports against one query: batched (the tool) and one at a time (the reference).

:func:`score_queue` is what explanations use. A task's perturbations of all its
supports form one queue; perturbed spectrograms are generated a chunk of
``batch_size`` at a time (a chunk may span several supports, so every
embedding call but the last gets a full batch), embedded, and scored against
the query's embedding, which is computed once (it comes from the evaluation's
cache). Memory: one chunk of ``batch_size`` spectrograms, whatever the number
of perturbations.

:func:`score_queue_naive` is the authors' way: for every perturbation, embed the
query and the perturbed support together and score the pair. It gives the same
numbers up to float rounding of batch sizes; it exists for tests and for
``benchmarks/bench_explain.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.embedder import Embedder, LocalEmbedder
from siamese_audio.evaluation.explain.perturb import MaskSet, apply_masks


@dataclass(frozen=True, eq=False)
class Job:
    """Perturbations of one support: ``masks`` applied to ``supports[support]`` with fill ``fills[support]``."""

    support: int
    masks: MaskSet


def _check_similarity(scores: np.ndarray, n: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.shape != (n,):
        raise EvaluationError(f"Expected similarity to return shape ({n},). Got {scores.shape}.")
    if not np.isfinite(scores).all():
        raise EvaluationError("Expected finite similarity scores of perturbed supports. Got NaN or infinity.")
    return scores.astype(np.float32, copy=False)


def _check_inputs(supports: np.ndarray, fills: Sequence[float], jobs: Sequence[Job]) -> None:
    if supports.ndim != 3:
        raise EvaluationError(f"Expected supports of shape (C, n_mels, n_frames). Got {supports.shape}.")
    if len(fills) != supports.shape[0]:
        raise EvaluationError(f"Expected one fill level per support ({supports.shape[0]}). Got {len(fills)}.")
    for job in jobs:
        if not 0 <= job.support < supports.shape[0]:
            raise EvaluationError(f"Expected job support indices in 0..{supports.shape[0] - 1}. Got {job.support}.")


def score_queue(
    embedder: Embedder, query_embedding: np.ndarray, supports: np.ndarray, fills: Sequence[float],
    jobs: Sequence[Job], *, batch_size: int = 64, local: bool = True,
) -> list[np.ndarray]:
    """Similarity of the query to every perturbation of every job, in full batches.

    Parameters
    ----------
    embedder : Embedder
    query_embedding : np.ndarray [shape=(D,)]
        The query's cached embedding (the query is never perturbed).
    supports : np.ndarray [shape=(C, n_mels, n_frames), dtype=float32]
    fills : sequence of float
        Fill level of each support.
    jobs : sequence of Job
    batch_size : int
        Perturbed spectrograms per ``embed`` call (and per generated chunk).
    local : bool
        Where the embedder is a :class:`~evaluation.embedder.LocalEmbedder` that
        supports its network, embed each chunk as copies of a base (the support, or
        its all-filled copy, whichever the chunk keeps more of) recomputing only
        what each perturbation changes (:func:`score_local`). Same scores up to
        float rounding.

    Returns
    -------
    list of np.ndarray [shape=(len(job.masks),), dtype=float32]
        One array per job, in order.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise EvaluationError(f"Expected batch_size to be a positive integer. Got {batch_size!r}.")
    supports = np.asarray(supports, dtype=np.float32)
    _check_inputs(supports, fills, jobs)
    if local and isinstance(embedder, LocalEmbedder):
        out = score_local(embedder, query_embedding, supports, fills, jobs, batch_size=batch_size)
        if out is not None:
            return out
    query = np.asarray(query_embedding, dtype=np.float32).reshape(1, -1)
    out = [np.empty(len(job.masks), dtype=np.float32) for job in jobs]
    buffer = np.empty((batch_size, *supports.shape[1:]), dtype=np.float32)
    pending: list[tuple[int, int, int, int]] = []  # (job, start, stop, position in buffer)
    filled = 0

    def flush() -> None:
        nonlocal filled
        if filled == 0:
            return
        emb = np.asarray(embedder.embed(buffer[:filled]))
        if emb.ndim != 2 or emb.shape[0] != filled:
            raise EvaluationError(f"Expected embed to return shape ({filled}, D). Got {emb.shape}.")
        scores = _check_similarity(embedder.similarity(np.repeat(query, filled, axis=0), emb), filled)
        for j, start, stop, pos in pending:
            out[j][start:stop] = scores[pos:pos + stop - start]
        pending.clear()
        filled = 0

    for j, job in enumerate(jobs):
        n = len(job.masks)
        start = 0
        while start < n:
            stop = min(n, start + batch_size - filled)
            apply_masks(supports[job.support], fills[job.support], job.masks.masks(start, stop),
                        buffer[filled:filled + stop - start])
            pending.append((j, start, stop, filled))
            filled += stop - start
            start = stop
            if filled == batch_size:
                flush()
    flush()
    return out


def score_local(
    embedder: LocalEmbedder, query_embedding: np.ndarray, supports: np.ndarray, fills: Sequence[float],
    jobs: Sequence[Job], *, batch_size: int = 64,
) -> list[np.ndarray] | None:
    """:func:`score_queue` by incremental embedding, one job (support) at a time; ``None`` if not supported.

    Each chunk of a job's perturbations is embedded as copies of one base: the
    all-filled support where the chunk keeps under half of the pixels (SINEX keeps
    one segment, an insertion curve its first few), the support itself otherwise
    (a deletion curve's first steps). Each base's feature maps are computed once
    per job. Inputs as :func:`score_queue` has checked them.
    """
    if not jobs:
        return []
    query = np.asarray(query_embedding, dtype=np.float32).reshape(1, -1)
    buffer = np.empty((batch_size, *supports.shape[1:]), dtype=np.float32)
    out = []
    for job in jobs:
        support, fill = supports[job.support], float(fills[job.support])
        contexts: dict[bool, object | None] = {}
        n = len(job.masks)
        scores = np.empty(n, dtype=np.float32)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            keep = job.masks.masks(start, stop)
            chunk = apply_masks(support, fill, keep, buffer[:stop - start])
            filled_base = bool(keep.mean() < 0.5)
            if filled_base not in contexts:
                base = np.full_like(support, np.float32(fill)) if filled_base else support
                contexts[filled_base] = embedder.local_context(base)
            context = contexts[filled_base]
            if context is None:
                return None
            emb = np.asarray(embedder.embed_local(context, chunk))
            if emb.ndim != 2 or emb.shape[0] != stop - start:
                raise EvaluationError(f"Expected embed_local to return shape ({stop - start}, D). Got {emb.shape}.")
            scores[start:stop] = _check_similarity(embedder.similarity(np.repeat(query, stop - start, axis=0), emb),
                                                   stop - start)
        out.append(scores)
    return out


def score_queue_naive(
    embedder: Embedder, query: np.ndarray, supports: np.ndarray, fills: Sequence[float], jobs: Sequence[Job],
) -> list[np.ndarray]:
    """The authors' loop: embed (query, perturbed support) together and score, one perturbation at a time.

    Parameters
    ----------
    query : np.ndarray [shape=(n_mels, n_frames)]
        The query spectrogram (re-embedded for every perturbation).
    supports, fills, jobs
        As :func:`score_queue`.
    """
    supports = np.asarray(supports, dtype=np.float32)
    _check_inputs(supports, fills, jobs)
    pair = np.empty((2, *supports.shape[1:]), dtype=np.float32)
    pair[0] = query
    out = []
    for job in jobs:
        scores = np.empty(len(job.masks), dtype=np.float32)
        for p in range(len(job.masks)):
            apply_masks(supports[job.support], fills[job.support], job.masks.masks(p, p + 1), pair[1:])
            emb = np.asarray(embedder.embed(pair))
            scores[p] = _check_similarity(embedder.similarity(emb[:1], emb[1:]), 1)[0]
        out.append(scores)
    return out

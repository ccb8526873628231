"""SINEX and SINEXC: segment scores of one support from the similarity of perturbed copies.

With ``v = f(x, s)`` the similarity of the query ``x`` to the support ``s`` and
``R_i`` the pixels of segment ``i``:

* **SINEX** keeps one segment at a time: ``z_i`` is ``s`` with every segment
  but ``R_i`` filled, ``u_i = f(x, z_i)`` and ``h_i = (v - u_i) / |R_i|``.
  Deterministic; ``K`` embeddings per support.
* **SINEXC** keeps random coalitions: for each segment ``i``, ``alpha`` rows of
  Bernoulli(``beta``) over the ``K`` segments with bit ``i`` forced on; ``u_i``
  is the mean similarity over those ``alpha`` perturbations and
  ``h_i = (v - u_i) / |R_i|``. ``K * alpha`` embeddings per support. The
  coalitions come from ``numpy.random.default_rng`` seeded by
  ``(seed, task, support column)``: the same seed gives the same bytes. (The
  authors divided by the size of the last coalition drawn; here every ``h_i``
  is divided by its own segment's size.)

Reading the sign: a low ``h_i`` means segment ``i`` *alone* keeps the
similarity. Relevance is ``rho_i = -h_i``; segments are ranked and coloured by
it (rank 0: most relevant). Every support also gets ``u_empty``, the similarity
of its all-filled copy (what is left when nothing is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.explain.engine import Job, score_queue, score_queue_naive
from siamese_audio.evaluation.explain.perturb import SegmentMasks
from siamese_audio.evaluation.explain.segments import segment_sizes

METHODS = ("sinex", "sinexc")

#: How segments are ranked: ``rho`` (the authors' ``-h``, per pixel) or ``u`` (``u_i - v``, per segment).
#: The default is ``u``: on a cpu-esc50 model of the real ESC-50 (benchmarks/bench_faithfulness.py, 60
#: tasks) deleting by u gives AOPC 0.128 [0.079, 0.177] against rho's 0.033 [-0.011, 0.076] and random
#: orders' 0.027; rho was no better than random (docs/results/faithfulness.md).
RANKINGS = ("rho", "u")
DEFAULT_RANKING = "u"

#: Mixed into every SINEXC seed so that coalitions never share a stream with other seeded draws.
COALITION_STREAM = 0x51E7C


@dataclass(frozen=True)
class MethodConfig:
    """Which explainer, and SINEXC's coalition parameters.

    Attributes
    ----------
    method : str
        ``"sinex"`` or ``"sinexc"``.
    alpha : int
        SINEXC: coalitions per segment (authors: 150).
    beta : float
        SINEXC: probability that another segment joins a coalition (authors: 0.15).
    ranking : str
        ``"rho"``: rank (and colour, and keep for top-k) by ``rho = -h``, per pixel;
        ``"u"``: by ``u_i - v``, the same perturbations not divided by the segment's size.
    """

    method: str = "sinex"
    alpha: int = 150
    beta: float = 0.15
    ranking: str = DEFAULT_RANKING

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EvaluationError(f"Expected --method among {list(METHODS)}. Got {self.method!r}.")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, np.integer)) or self.alpha < 1:
            raise EvaluationError(f"Expected --alpha (coalitions per segment) to be a positive integer. "
                                  f"Got {self.alpha!r}.")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not 0.0 <= self.beta <= 1.0:
            raise EvaluationError(f"Expected --beta to be a probability in [0, 1]. Got {self.beta!r}.")
        if self.ranking not in RANKINGS:
            raise EvaluationError(f"Expected --ranking among {list(RANKINGS)}. Got {self.ranking!r}.")

    def to_dict(self) -> dict[str, Any]:
        if self.method == "sinex":
            return {"method": "sinex", "ranking": self.ranking}
        return {"method": "sinexc", "alpha": self.alpha, "beta": self.beta, "ranking": self.ranking}


def coalition_rng(seed: int, task: int, column: int) -> np.random.Generator:
    """The generator of one support's SINEXC coalitions, a function of ``(seed, task, column)`` only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(task), int(column), COALITION_STREAM]))


def keep_matrix(n_segments: int, config: MethodConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """Segments kept by each perturbation, the all-filled perturbation last.

    Returns
    -------
    np.ndarray [dtype=bool]
        SINEX: shape ``(K + 1, K)``, row ``i`` keeps segment ``i`` only.
        SINEXC: shape ``(K * alpha + 1, K)``, rows ``i * alpha .. (i + 1) * alpha - 1``
        are segment ``i``'s coalitions (bit ``i`` on).
    """
    k = int(n_segments)
    if config.method == "sinex":
        rows = np.eye(k, dtype=bool)
    else:
        if rng is None:
            raise EvaluationError("SINEXC needs a seeded generator for its coalitions.")
        rows = rng.random((k, config.alpha, k)) < config.beta
        rows[np.arange(k), :, np.arange(k)] = True
        rows = rows.reshape(k * config.alpha, k)
    return np.concatenate([rows, np.zeros((1, k), dtype=bool)])


@dataclass(frozen=True, eq=False)
class SupportExplanation:
    """Segment scores of one support.

    Attributes
    ----------
    labels : np.ndarray [shape=(n_mels, n_frames), dtype=int32]
        Segments ``0 .. K-1``.
    sizes : np.ndarray [shape=(K,), dtype=int64]
        ``|R_i|``.
    fill : float
        Level (dB) of filled pixels.
    v : float
        Similarity of the query to the unperturbed support (from the cache).
    u_empty : float
        Similarity of the query to the all-filled support.
    u : np.ndarray [shape=(K,), dtype=float64]
        SINEX: ``u_i``; SINEXC: mean over segment ``i``'s coalitions.
    h : np.ndarray [shape=(K,), dtype=float64]
        ``(v - u_i) / |R_i|``.
    n_perturbations : int
        Perturbed copies embedded (the all-filled one included).
    ranking : str
        What :attr:`relevance` (and so ``rank``, ``top_segments``, the maps) is: ``"rho"`` or ``"u"``.
    """

    labels: np.ndarray
    sizes: np.ndarray
    fill: float
    v: float
    u_empty: float
    u: np.ndarray
    h: np.ndarray
    n_perturbations: int
    ranking: str = "rho"

    @property
    def n_segments(self) -> int:
        return int(self.sizes.shape[0])

    @property
    def rho(self) -> np.ndarray:
        """Relevance ``-h`` [shape=(K,)]: high means the segment alone keeps the match."""
        return -self.h

    @property
    def relevance(self) -> np.ndarray:
        """The ranking's score [shape=(K,)]: ``rho`` or ``u - v`` (high: the segment alone keeps the match)."""
        return self.rho if self.ranking == "rho" else self.u - self.v

    @property
    def rank(self) -> np.ndarray:
        """Rank of each segment by decreasing relevance (0: most relevant; ties by label) [shape=(K,)]."""
        order = np.argsort(-self.relevance, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        return rank

    def top_segments(self, k: int) -> np.ndarray:
        """Labels of the ``k`` most relevant segments (fewer when the support has fewer)."""
        return np.argsort(-self.relevance, kind="stable")[:k]

    def h_map(self) -> np.ndarray:
        """``h`` of every pixel [shape=(n_mels, n_frames), dtype=float32]."""
        return self.h.astype(np.float32)[self.labels]

    def rho_map(self) -> np.ndarray:
        """``rho`` of every pixel [shape=(n_mels, n_frames), dtype=float32]."""
        return (-self.h).astype(np.float32)[self.labels]

    def relevance_map(self) -> np.ndarray:
        """:attr:`relevance` of every pixel [shape=(n_mels, n_frames), dtype=float32]."""
        return self.relevance.astype(np.float32)[self.labels]


def _check_labels(labels: Sequence[np.ndarray], supports: np.ndarray) -> None:
    if len(labels) != supports.shape[0]:
        raise EvaluationError(f"Expected one label image per support ({supports.shape[0]}). Got {len(labels)}.")
    for lab in labels:
        if lab.shape != supports.shape[1:]:
            raise EvaluationError(f"Expected labels of shape {supports.shape[1:]}. Got {lab.shape}.")
        sizes = segment_sizes(lab)
        if lab.min() < 0 or (sizes == 0).any():
            raise EvaluationError("Expected segment labels 0..K-1, each with at least one pixel.")


def plan_jobs(
    labels: Sequence[np.ndarray], config: MethodConfig, rngs: Sequence[np.random.Generator | None],
) -> list[Job]:
    """One job per support: its :func:`keep_matrix` over its segments."""
    return [Job(support=c, masks=SegmentMasks(labels=lab, keep=keep_matrix(int(lab.max()) + 1, config, rng)))
            for c, (lab, rng) in enumerate(zip(labels, rngs))]


def finish(labels: np.ndarray, fill: float, v: float, scores: np.ndarray, config: MethodConfig) -> SupportExplanation:
    """Reduce one support's perturbation scores (in :func:`keep_matrix` order) to its explanation."""
    sizes = segment_sizes(labels)
    k = sizes.size
    per_segment = scores[:-1].astype(np.float64)
    u = per_segment if config.method == "sinex" else per_segment.reshape(k, config.alpha).mean(axis=1)
    h = (float(v) - u) / sizes
    return SupportExplanation(labels=labels.astype(np.int32, copy=False), sizes=sizes, fill=float(fill), v=float(v),
                              u_empty=float(scores[-1]), u=u, h=h, n_perturbations=int(scores.size),
                              ranking=config.ranking)


def explain_supports(
    embedder: Embedder, query_embedding: np.ndarray, supports: np.ndarray, v: Sequence[float],
    labels: Sequence[np.ndarray], fills: Sequence[float], config: MethodConfig, *,
    rngs: Sequence[np.random.Generator | None] | None = None, batch_size: int = 64, local: bool = True,
) -> list[SupportExplanation]:
    """Explain every support of one task, batched (one queue across the supports).

    Parameters
    ----------
    embedder : Embedder
    query_embedding : np.ndarray [shape=(D,)]
        Cached; the query is embedded once.
    supports : np.ndarray [shape=(C, n_mels, n_frames)]
    v : sequence of float
        Cached similarity of the query to each support.
    labels : sequence of np.ndarray [shape=(n_mels, n_frames)]
        Segments of each support.
    fills : sequence of float
        Fill level of each support (:func:`~evaluation.explain.perturb.fill_level`).
    config : MethodConfig
    rngs : sequence of numpy Generator, optional
        SINEXC: one per support (:func:`coalition_rng`).
    batch_size : int
    local : bool
        Incremental embedding where the embedder offers it (``score_queue``'s ``local``).

    Returns
    -------
    list of SupportExplanation
    """
    supports = np.asarray(supports, dtype=np.float32)
    _check_labels(labels, supports)
    rngs = list(rngs) if rngs is not None else [None] * len(labels)
    jobs = plan_jobs(labels, config, rngs)
    scores = score_queue(embedder, query_embedding, supports, fills, jobs, batch_size=batch_size, local=local)
    return [finish(lab, fills[c], v[c], scores[c], config) for c, lab in enumerate(labels)]


def explain_supports_naive(
    embedder: Embedder, query: np.ndarray, supports: np.ndarray, labels: Sequence[np.ndarray],
    fills: Sequence[float], config: MethodConfig, *, rngs: Sequence[np.random.Generator | None] | None = None,
) -> list[SupportExplanation]:
    """The authors' loop, same perturbations: ``v`` and every ``u`` from embedding (query, support) pairs.

    Parameters
    ----------
    query : np.ndarray [shape=(n_mels, n_frames)]
        Re-embedded with every perturbation.
    """
    supports = np.asarray(supports, dtype=np.float32)
    _check_labels(labels, supports)
    rngs = list(rngs) if rngs is not None else [None] * len(labels)
    jobs = plan_jobs(labels, config, rngs)
    v = []
    for s in supports:
        emb = np.asarray(embedder.embed(np.stack([query, s]).astype(np.float32)))
        v.append(float(np.asarray(embedder.similarity(emb[:1], emb[1:]))[0]))
    scores = score_queue_naive(embedder, query, supports, fills, jobs)
    return [finish(lab, fills[c], v[c], scores[c], config) for c, lab in enumerate(labels)]

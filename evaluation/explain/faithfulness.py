"""Is an explanation faithful to the model? Deletion and insertion curves, AOPC, decision flips.

For one explained support ``s`` of a task (query ``x``), pixels are ordered by
relevance ``rho`` (most relevant first; pixels of one segment share a score and
are ordered among themselves, and against ties, by a seeded permutation). With
``N`` steps (default 20) and ``P`` pixels, step ``k`` covers the top
``floor(k * P / N)`` pixels:

* deletion curve ``d_k = f(x, s with the top k/N of pixels filled)``, ``k = 0..N``,
  and ``AOPC = mean_k (d_0 - d_k)`` (higher: the order finds what matters sooner);
* insertion curve ``i_k = f(x, fill everywhere but the top k/N)``, and its area
  (trapezoid over the fraction ``k/N`` in [0, 1]; higher is better).

The same curves are measured for ``R`` random segment orders (default 5, pixels
within a segment by the same tie permutation), for the reverse order (least
relevant first), for segment size alone (``size``: largest segment first;
``size_small``: smallest first) and, as a reference, for the order of ``u_i``
alone (the similarity with the segment alone kept, not divided by its size:
``rho_i |R_i|``). The per-pixel division makes ``rho`` rank segments that change
little by their size; the size orders show how much of ``rho`` that alone
explains, the ``u`` order what the same perturbations rank without it.

Per order, ``gap`` is the area between the insertion and the deletion curve
(insertion area minus deletion area, both trapezoids over ``k/N``; higher is
better). Per support: ``delta_aopc`` and ``delta_area`` against the mean of the
random orders; the win rate, the share of random orders whose AOPC is below the
``rho`` order's; ``win_size`` / ``win_size_small``, 1 when ``rho``'s AOPC is above
that size order's (ties count one half everywhere).

Decision flip (the task's positive support only): the smallest ``k/N`` at which
the deleted positive support no longer wins the task against the other supports'
unperturbed scores (first highest score wins, as in evaluation); NaN when it
wins to the end, 0 when the task was lost already.

Over tasks, every number is reported as its mean with a 95% percentile
bootstrap interval over the explained supports.

Every perturbation of a task's explained supports goes through one batched
queue (:func:`~evaluation.explain.engine.score_queue`):
``2 * (N + 1) * (R + 5)`` embeddings per explained support.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.explain.engine import Job, score_queue
from siamese_audio.evaluation.explain.methods import SupportExplanation
from siamese_audio.evaluation.explain.perturb import RankMasks, SegmentMasks

SCOPES = ("all", "positive", "none")

#: Orders measured besides the random ones, in this order.
ORDERS = ("rho", "reverse", "u", "size", "size_small")

#: Mixed into the seeds of tie permutations and random orders (streams distinct from SINEXC's coalitions).
TIE_STREAM = 0x7E5
ORDER_STREAM = 0x0DE5


@dataclass(frozen=True)
class FaithfulnessConfig:
    """What to measure.

    Attributes
    ----------
    scope : str
        ``"positive"`` (the positive support of each task), ``"all"`` (every support) or ``"none"``.
    steps : int
        ``N``, steps of the deletion and insertion curves (20).
    random_orders : int
        ``R``, random segment orders to compare with (5).
    n_boot : int
        Bootstrap resamples of the intervals over tasks (2000).
    """

    scope: str = "positive"
    steps: int = 20
    random_orders: int = 5
    n_boot: int = 2000

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise EvaluationError(f"Expected --faithfulness among {list(SCOPES)}. Got {self.scope!r}.")
        for name in ("steps", "random_orders", "n_boot"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise EvaluationError(f"Expected faithfulness {name} to be a positive integer. Got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "steps": self.steps, "random_orders": self.random_orders,
                "n_boot": self.n_boot, "aopc": "mean over k = 0..N of (d_0 - d_k)",
                "insertion_area": "trapezoid of i_k over k/N in [0, 1]"}


def _rng(seed: int, task: int, column: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(task), int(column), stream]))


def pixel_rank(labels: np.ndarray, segment_key: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Rank of every pixel: by ``segment_key`` of its segment (lowest first), then by ``tie``.

    Parameters
    ----------
    labels : np.ndarray [shape=(H, W), dtype=int]
    segment_key : np.ndarray [shape=(K,)]
    tie : np.ndarray [shape=(H * W,), dtype=int]
        A permutation of the pixels (flat), breaking ties.

    Returns
    -------
    np.ndarray [shape=(H, W), dtype=int64]
        A permutation of ``0 .. H*W-1``; 0 comes first.
    """
    order = np.lexsort((tie, np.asarray(segment_key)[labels.ravel()]))
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank.reshape(labels.shape)


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """Pixels covered at each step, ``floor(k * P / N)`` for ``k = 0..N`` [shape=(N+1,), dtype=int64]."""
    return (np.arange(steps + 1, dtype=np.int64) * int(n_pixels)) // int(steps)


def orders_of(explanation: SupportExplanation, *, n_random: int, seed: int, task: int, column: int
              ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pixel ranks of the named :data:`ORDERS` and of ``n_random`` random segment orders.

    Returns
    -------
    named : dict of str to np.ndarray [shape=(H, W)]
        ``rho`` (most relevant first), ``reverse``, ``u`` (highest ``u_i`` first),
        ``size`` (largest segment first), ``size_small`` (smallest first).
    random : np.ndarray [shape=(R, H, W)]
    """
    labels = explanation.labels
    tie = _rng(seed, task, column, TIE_STREAM).permutation(labels.size)
    rho = explanation.rho
    orders_rng = _rng(seed, task, column, ORDER_STREAM)
    random = np.stack([pixel_rank(labels, orders_rng.permutation(rho.size), tie) for _ in range(n_random)])
    # Segments of one size keep together, in a seeded order (a pixel-level tie would interleave them).
    k = rho.size
    tied = orders_rng.permutation(k).astype(np.float64)
    sizes = np.asarray(explanation.sizes, dtype=np.float64) * k
    keys = {"rho": -rho, "reverse": rho, "u": -explanation.u, "size": tied - sizes, "size_small": tied + sizes}
    return {name: pixel_rank(labels, keys[name], tie) for name in ORDERS}, random


def aopc(deletion: np.ndarray) -> np.ndarray:
    """``mean_k (d_0 - d_k)`` over the last axis."""
    deletion = np.asarray(deletion, dtype=np.float64)
    return (deletion[..., :1] - deletion).mean(axis=-1)


def insertion_area(insertion: np.ndarray) -> np.ndarray:
    """Trapezoid area of the insertion curve over ``k/N`` in [0, 1], over the last axis."""
    insertion = np.asarray(insertion, dtype=np.float64)
    n = insertion.shape[-1] - 1
    return (insertion[..., 1:] + insertion[..., :-1]).sum(axis=-1) / (2.0 * n)


def curve_gap(insertion: np.ndarray, deletion: np.ndarray) -> np.ndarray:
    """Area between the insertion and the deletion curve: ``area(insertion) - area(deletion)``, over the last axis."""
    return insertion_area(insertion) - insertion_area(deletion)


def flip_fraction(deletion: np.ndarray, scores: np.ndarray, column: int) -> float:
    """Smallest ``k/N`` at which support ``column`` (deleted along ``deletion``) stops winning; NaN if never.

    ``scores`` [shape=(C,)] are the task's unperturbed similarities; the first
    highest score wins, as in evaluation.
    """
    row = np.asarray(scores, dtype=np.float64).copy()
    n = deletion.shape[-1] - 1
    for k, d in enumerate(deletion):
        row[column] = d
        if int(np.argmax(row)) != column:
            return k / n
    return float("nan")


def _win(a, b):
    """1 where ``a > b``, 0.5 on ties, 0 otherwise (elementwise)."""
    return (np.greater(a, b) + 0.5 * np.equal(a, b)).astype(np.float64)


@dataclass(frozen=True, eq=False)
class SupportFaithfulness:
    """Curves and measures of one explained support.

    Curves have ``N + 1`` points (``k = 0..N``); the random ones ``(R, N + 1)``.
    ``flip_*`` are NaN for a support that is not the task's positive one.
    ``*_u``: the reference order by ``u_i`` (the segment alone, not per pixel);
    ``*_size`` / ``*_size_small``: segments by size, largest / smallest first.
    """

    task: int
    column: int
    positive: bool
    deletion_rho: np.ndarray
    deletion_reverse: np.ndarray
    deletion_random: np.ndarray
    insertion_rho: np.ndarray
    insertion_reverse: np.ndarray
    insertion_random: np.ndarray
    deletion_u: np.ndarray
    insertion_u: np.ndarray
    deletion_size: np.ndarray
    insertion_size: np.ndarray
    deletion_size_small: np.ndarray
    insertion_size_small: np.ndarray
    flip_rho: float
    flip_reverse: float
    flip_random: np.ndarray
    flip_u: float

    @property
    def fractions(self) -> np.ndarray:
        n = self.deletion_rho.shape[0] - 1
        return np.arange(n + 1) / n

    def measures(self) -> dict[str, float]:
        """One row of ``faithfulness.csv`` (without task and column)."""
        a_rho, a_rev, a_rand = float(aopc(self.deletion_rho)), float(aopc(self.deletion_reverse)), \
            aopc(self.deletion_random)
        i_rho, i_rev, i_rand = float(insertion_area(self.insertion_rho)), \
            float(insertion_area(self.insertion_reverse)), insertion_area(self.insertion_random)
        wins, wins_ins = float(np.mean(_win(a_rho, a_rand))), float(np.mean(_win(i_rho, i_rand)))
        flips = self.flip_random[np.isfinite(self.flip_random)]
        a_size, a_small = float(aopc(self.deletion_size)), float(aopc(self.deletion_size_small))
        return {
            "aopc_rho": a_rho, "aopc_random_mean": float(a_rand.mean()), "aopc_random_sd": float(a_rand.std()),
            "aopc_reverse": a_rev, "delta_aopc": a_rho - float(a_rand.mean()),
            "area_rho": i_rho, "area_random_mean": float(i_rand.mean()), "area_reverse": i_rev,
            "delta_area": i_rho - float(i_rand.mean()),
            "win_rate": wins, "win_rate_insertion": wins_ins,
            "flip_rho": self.flip_rho, "flip_reverse": self.flip_reverse,
            "flip_random_mean": float(flips.mean()) if flips.size else float("nan"),
            "flip_random_never": int(np.isnan(self.flip_random).sum()) if self.positive else 0,
            "aopc_u": float(aopc(self.deletion_u)), "area_u": float(insertion_area(self.insertion_u)),
            "flip_u": self.flip_u,
            "aopc_size": a_size, "area_size": float(insertion_area(self.insertion_size)),
            "aopc_size_small": a_small, "area_size_small": float(insertion_area(self.insertion_size_small)),
            "win_size": float(_win(a_rho, a_size)), "win_size_small": float(_win(a_rho, a_small)),
            "gap_rho": float(curve_gap(self.insertion_rho, self.deletion_rho)),
            "gap_random_mean": float(curve_gap(self.insertion_random, self.deletion_random).mean()),
            "gap_reverse": float(curve_gap(self.insertion_reverse, self.deletion_reverse)),
            "gap_u": float(curve_gap(self.insertion_u, self.deletion_u)),
            "gap_size": float(curve_gap(self.insertion_size, self.deletion_size)),
            "gap_size_small": float(curve_gap(self.insertion_size_small, self.deletion_size_small)),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "column": self.column, "positive": self.positive, **self.measures(),
                "curves": {"fractions": self.fractions.tolist(),
                           "deletion_rho": self.deletion_rho.tolist(),
                           "deletion_reverse": self.deletion_reverse.tolist(),
                           "deletion_random": self.deletion_random.tolist(),
                           "insertion_rho": self.insertion_rho.tolist(),
                           "insertion_reverse": self.insertion_reverse.tolist(),
                           "insertion_random": self.insertion_random.tolist(),
                           "deletion_u": self.deletion_u.tolist(), "insertion_u": self.insertion_u.tolist(),
                           "deletion_size": self.deletion_size.tolist(),
                           "insertion_size": self.insertion_size.tolist(),
                           "deletion_size_small": self.deletion_size_small.tolist(),
                           "insertion_size_small": self.insertion_size_small.tolist()}}


def measure_faithfulness(
    embedder: Embedder, query_embedding: np.ndarray, supports: np.ndarray, scores: np.ndarray,
    explanations: Sequence[SupportExplanation], columns: Sequence[int], *, positive: int, task: int, seed: int,
    config: FaithfulnessConfig, batch_size: int = 64,
) -> list[SupportFaithfulness]:
    """Deletion and insertion curves of the ``columns`` supports of one task, in one batched queue.

    Parameters
    ----------
    embedder : Embedder
    query_embedding : np.ndarray [shape=(D,)]
    supports : np.ndarray [shape=(C, n_mels, n_frames)]
    scores : np.ndarray [shape=(C,)]
        Cached similarities of the query to each support (for the decision flip).
    explanations : sequence of SupportExplanation
        One per support (``C``); their ``rho``, labels and fills are used.
    columns : sequence of int
        Supports to measure.
    positive : int
        Column of the positive support.
    task, seed : int
        Seed the tie permutations and random orders of each support.
    config : FaithfulnessConfig
    batch_size : int
    """
    n = config.steps
    jobs: list[Job] = []
    for c in columns:
        named, rand_ranks = orders_of(explanations[c], n_random=config.random_orders, seed=seed, task=task, column=c)
        counts = step_counts(explanations[c].labels.size, n)
        for rank in (*(named[name] for name in ORDERS), *rand_ranks):
            jobs.append(Job(c, RankMasks(rank=rank, counts=counts, insert=False)))
            jobs.append(Job(c, RankMasks(rank=rank, counts=counts, insert=True)))
    fills = [e.fill for e in explanations]
    curves = score_queue(embedder, query_embedding, supports, fills, jobs, batch_size=batch_size)
    n_named = len(ORDERS)
    per = 2 * (config.random_orders + n_named)
    out = []
    for i, c in enumerate(columns):
        mine = curves[i * per:(i + 1) * per]
        deletion, insertion = mine[0::2], mine[1::2]
        dele = dict(zip(ORDERS, deletion[:n_named]))
        ins = dict(zip(ORDERS, insertion[:n_named]))
        is_pos = c == positive

        def flip(curve: np.ndarray, c: int = c, is_pos: bool = is_pos) -> float:
            return flip_fraction(curve, scores, c) if is_pos else float("nan")

        out.append(SupportFaithfulness(
            task=task, column=int(c), positive=bool(is_pos),
            deletion_rho=dele["rho"], deletion_reverse=dele["reverse"], deletion_random=np.stack(deletion[n_named:]),
            insertion_rho=ins["rho"], insertion_reverse=ins["reverse"],
            insertion_random=np.stack(insertion[n_named:]),
            deletion_u=dele["u"], insertion_u=ins["u"],
            deletion_size=dele["size"], insertion_size=ins["size"],
            deletion_size_small=dele["size_small"], insertion_size_small=ins["size_small"],
            flip_rho=flip(dele["rho"]), flip_reverse=flip(dele["reverse"]),
            flip_random=np.array([flip(d) for d in deletion[n_named:]], dtype=np.float64), flip_u=flip(dele["u"]),
        ))
    return out


def top_k_scores(embedder: Embedder, query_embedding: np.ndarray, supports: np.ndarray,
                 explanations: Sequence[SupportExplanation], top_k: int, *, batch_size: int = 64) -> np.ndarray:
    """Similarity of the query to each support with only its top-k segments kept, and with them removed.

    The before/after a figure reports: ``v`` (cached) against these two.

    Returns
    -------
    np.ndarray [shape=(C, 2), dtype=float64]
        Column 0: only the ``top_k`` most relevant segments kept (the rest filled);
        column 1: those segments filled, the rest kept.
    """
    jobs = []
    for c, e in enumerate(explanations):
        keep = np.zeros((2, e.n_segments), dtype=bool)
        keep[0, e.top_segments(top_k)] = True
        keep[1] = ~keep[0]
        jobs.append(Job(c, SegmentMasks(labels=e.labels, keep=keep)))
    fills = [e.fill for e in explanations]
    curves = score_queue(embedder, query_embedding, supports, fills, jobs, batch_size=batch_size)
    return np.stack([np.asarray(c, dtype=np.float64) for c in curves]) if curves else np.zeros((0, 2))


def bootstrap_mean(values: Sequence[float], *, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean of the finite ``values`` with a 95% percentile bootstrap interval.

    Returns
    -------
    dict
        ``{"mean", "ci95": [low, high], "n"}``; mean and interval None when no value is finite.
    """
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))
    means = array[rng.integers(0, array.size, size=(n_boot, array.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(array.mean()), "ci95": [float(low), float(high)], "n": int(array.size)}


#: Measures summarised over tasks, as named in ``faithfulness.csv``.
SUMMARISED = ("aopc_rho", "aopc_random_mean", "aopc_reverse", "delta_aopc", "area_rho", "area_random_mean",
              "area_reverse", "delta_area", "win_rate", "win_rate_insertion", "aopc_u", "area_u",
              "aopc_size", "area_size", "aopc_size_small", "area_size_small", "win_size", "win_size_small",
              "gap_rho", "gap_random_mean", "gap_reverse", "gap_u", "gap_size", "gap_size_small")
FLIPS = ("flip_rho", "flip_random_mean", "flip_reverse", "flip_u")


def summarize_faithfulness(rows: Sequence[SupportFaithfulness], *, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean and 95% bootstrap interval over the explained supports of every measure.

    Flips are summarised over positive supports where they happened; ``*_never``
    counts the positive supports that still won with everything deleted.
    """
    measures = [r.measures() for r in rows]
    out: dict[str, Any] = {"n_supports": len(rows), "bootstrap": f"95% percentile interval, {n_boot} resamples"}
    for name in SUMMARISED:
        out[name] = bootstrap_mean([m[name] for m in measures], n_boot=n_boot, seed=seed)
    positives = [m for r, m in zip(rows, measures) if r.positive]
    out["n_positive"] = len(positives)
    for name in FLIPS:
        out[name] = bootstrap_mean([m[name] for m in positives], n_boot=n_boot, seed=seed)
    out["flip_rho_never"] = int(sum(np.isnan(m["flip_rho"]) for m in positives))
    out["flip_reverse_never"] = int(sum(np.isnan(m["flip_reverse"]) for m in positives))
    return out

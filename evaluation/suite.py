"""Everything the evaluation reports for one set of evaluating classes, from one embedding pass.

The network's C-way accuracy, the same tasks scored by the no-learning baseline,
and accuracy as C goes from 2 to the number of classes (Figure 2.6), all scored
from embeddings computed once per clip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.baseline import BASELINE_NAME, RawCosineEmbedder
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.evaluator import (
    OneShotResult,
    ReadFn,
    check_batch_size,
    embed_pool,
    score_cached,
    summarize,
)
from siamese_audio.evaluation.tasks import check_runs, draw_tasks, make_pool, validate_ways_runs


@dataclass(frozen=True)
class EvaluationSettings:
    """What to evaluate (the CLI's options).

    Attributes
    ----------
    ways : int
        ``C`` of the headline C-way one-shot accuracy (report: 5).
    runs : int
        Tasks per evaluating class (report: 60 -> 300 tasks over 5 classes).
    seed : int
        Seeds the tasks; the same for every ``C`` of the curve and every split.
    batch_size : int
        Clips per read / embed call.
    curve : bool
        Also score C = 2 .. number of classes (Figure 2.6).
    baseline : bool
        Also score the same tasks with :class:`~evaluation.baseline.RawCosineEmbedder`.
    same_source_ok : bool
        Positive supports may come from the query's own source recording (the
        report's protocol). Default False: from another recording where the
        catalog knows the sources (:mod:`evaluation.tasks`).
    """

    ways: int = 5
    runs: int = 60
    seed: int = 0
    batch_size: int = 64
    curve: bool = True
    baseline: bool = True
    same_source_ok: bool = False

    def __post_init__(self) -> None:
        for name in ("ways", "runs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EvaluationError(f"Expected {name} to be a positive integer. Got {value!r}.")
        if self.ways < 2:
            raise EvaluationError(f"Expected ways (C) >= 2. Got {self.ways}.")
        check_runs(self.runs)
        check_batch_size(self.batch_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise EvaluationError(f"Expected seed to be a non-negative integer. Got {self.seed!r}.")
        if not isinstance(self.same_source_ok, bool):
            raise EvaluationError(f"Expected same_source_ok to be True or False. Got {self.same_source_ok!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {"ways": self.ways, "runs": self.runs, "seed": self.seed, "batch_size": self.batch_size,
                "curve": self.curve, "baseline": self.baseline, "same_source_ok": self.same_source_ok}


@dataclass(frozen=True, eq=False)
class ClassesEvaluation:
    """Results on one set of evaluating classes.

    Attributes
    ----------
    result : OneShotResult
        The network, ``settings.ways``-way.
    baseline : OneShotResult or None
        The baseline on the very same tasks.
    curve : tuple[OneShotResult, ...]
        The network for C = 2 .. K (empty when the curve is off). The entry with
        ``C == settings.ways`` scores the same tasks as ``result``.
    baseline_curve : tuple[OneShotResult, ...]
    baseline_name : str
    """

    result: OneShotResult
    baseline: OneShotResult | None
    curve: tuple[OneShotResult, ...] = ()
    baseline_curve: tuple[OneShotResult, ...] = ()
    baseline_name: str = field(default=BASELINE_NAME)

    def curve_dict(self) -> list[dict[str, Any]]:
        """``[{ways, accuracy, ci95, n_tasks, baseline_accuracy, baseline_ci95}, ...]``."""
        rows = []
        for i, point in enumerate(self.curve):
            row: dict[str, Any] = {"ways": point.ways, "accuracy": point.accuracy, "ci95": list(point.ci95),
                                   "n_tasks": point.n_tasks, "chance": point.chance}
            if self.baseline_curve:
                base = self.baseline_curve[i]
                row.update(baseline_accuracy=base.accuracy, baseline_ci95=list(base.ci95))
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.result.to_dict(),
            "baseline": None if self.baseline is None else {"name": self.baseline_name, **self.baseline.to_dict()},
            "baseline_accuracy": None if self.baseline is None else self.baseline.accuracy,
            "curve": self.curve_dict(),
        }


def evaluate_classes(
    embedder: Embedder, read: ReadFn, class_rows: Mapping[str, np.ndarray], settings: EvaluationSettings,
    class_sources: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
) -> ClassesEvaluation:
    """Score the network (and the baseline, and the C-curve) on ``class_rows``.

    Each clip the tasks use is read once and embedded once by the network and
    once by the baseline; every task of every C is scored from those caches.
    The tasks of each C are :func:`evaluation.tasks.evaluation_tasks` of these
    classes, sources, ``settings.runs``, ``settings.seed`` and ``settings.same_source_ok``.

    Parameters
    ----------
    embedder : Embedder
    read : callable
        ``read(rows) -> float32 [shape=(len(rows), n_mels, n_frames)]``.
    class_rows : mapping of str to np.ndarray [shape=(n_c,), dtype=int64]
    settings : EvaluationSettings
    class_sources : mapping of str to array-like, optional
        Source recording of each clip (aligned with ``class_rows``); None when unknown.

    Returns
    -------
    ClassesEvaluation
    """
    pool = make_pool(class_rows, class_sources)
    validate_ways_runs(settings.ways, settings.runs, len(pool.classes))
    embedders: list[Embedder] = [embedder]
    if settings.baseline:
        embedders.append(RawCosineEmbedder())
    all_ways = list(range(2, len(pool.classes) + 1)) if settings.curve else [settings.ways]
    tasks = {c: draw_tasks(pool, ways=c, runs=settings.runs, seed=settings.seed,
                           same_source_ok=settings.same_source_ok) for c in all_ways}
    caches = embed_pool(embedders, read, pool, list(tasks.values()), batch_size=settings.batch_size)
    scored = {c: [summarize(t, score_cached(e, cache, t)) for e, cache in zip(embedders, caches)]
              for c, t in tasks.items()}
    headline = scored[settings.ways]
    curve = [scored[c] for c in all_ways] if settings.curve else []
    return ClassesEvaluation(
        result=headline[0],
        baseline=headline[1] if settings.baseline else None,
        curve=tuple(point[0] for point in curve),
        baseline_curve=tuple(point[1] for point in curve) if settings.baseline else (),
    )

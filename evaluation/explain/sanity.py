"""Model-parameter randomisation sanity check (Adebayo et al., 2018) for SINEX.

An explanation should depend on what the network learned. The shell hands this
module a *cascade*: copies of the embedder with the top layer the forward pass
uses re-initialised, then also each layer below it (training's
``randomisation_cascade``; evaluation does not import training; layers the
similarity never calls are no stage). For every stage, SINEX is recomputed on
the same supports, segments and fills (query embedding and ``v`` recomputed with
that stage's weights), and the Spearman rank correlation of its segment scores
with the trained model's is reported twice: on ``h = (v - u_i) / |R_i|`` and on
``v - u_i`` alone. ``h`` carries the input-only factor ``1 / |R_i|``, so segment
size by itself can keep its correlation high whatever the weights; ``v - u_i``
has no such factor and is the stricter of the two.

Flags distinguish the sign. An explanation that *survives* randomisation
(Spearman > 0.5: the randomised network ranks the segments as the trained one
did) says more about the input than about the model and is flagged. A strongly
*inverted* one (Spearman < -0.5) did change with the weights; it is counted, not
flagged. A stage *passes* when the upper end of the 95% bootstrap interval of
its mean Spearman on ``v - u_i`` is at most 0.5.

The Spearman correlation is Pearson's on average ranks; it is NaN when either
side is constant (e.g. a stage whose every segment scores the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.explain.faithfulness import bootstrap_mean
from siamese_audio.evaluation.explain.methods import MethodConfig, SupportExplanation, explain_supports

#: Spearman above which an explanation survives randomisation (flagged); below minus it, inverted.
FLAG_THRESHOLD = 0.5


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties sharing their average rank (``scipy.stats.rankdata``'s default)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]]))
    ends = np.concatenate([starts[1:], [x.size]])
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


@dataclass(frozen=True)
class SanityTask:
    """What the check needs of one explained task: spectrograms, segments, fills, the trained scores."""

    task: int
    query: np.ndarray
    supports: np.ndarray
    columns: tuple[int, ...]
    labels: tuple[np.ndarray, ...]
    fills: tuple[float, ...]
    trained_h: tuple[np.ndarray, ...]
    trained_vu: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class SanityRow:
    """One (stage, task, support) comparison: Spearman on ``h`` and on ``v - u_i``."""

    stage: int
    stage_name: str
    task: int
    column: int
    spearman: float
    spearman_vu: float = float("nan")

    @property
    def flagged(self) -> bool:
        """The explanation survived: Spearman on ``h`` above the threshold (a negative one does not count)."""
        return bool(np.isfinite(self.spearman) and self.spearman > FLAG_THRESHOLD)

    @property
    def inverted(self) -> bool:
        """Spearman on ``h`` below minus the threshold: the ranking flipped with the weights."""
        return bool(np.isfinite(self.spearman) and self.spearman < -FLAG_THRESHOLD)

    @property
    def flagged_vu(self) -> bool:
        return bool(np.isfinite(self.spearman_vu) and self.spearman_vu > FLAG_THRESHOLD)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "randomised_down_to": self.stage_name, "task": self.task,
                "column": self.column, "spearman": self.spearman, "spearman_vu": self.spearman_vu,
                "flagged": self.flagged, "inverted": self.inverted, "flagged_vu": self.flagged_vu}


def sinex_on(embedder: Embedder, task: SanityTask, *, batch_size: int) -> list[SupportExplanation]:
    """SINEX of ``task``'s supports under ``embedder`` (query and ``v`` embedded with it)."""
    clips = np.concatenate([task.query[None], task.supports[list(task.columns)]]).astype(np.float32)
    emb = np.asarray(embedder.embed(clips))
    n = len(task.columns)
    v = np.asarray(embedder.similarity(np.repeat(emb[:1], n, axis=0), emb[1:]), dtype=np.float64)
    return explain_supports(embedder, emb[0], clips[1:], v, task.labels, task.fills, MethodConfig("sinex"),
                            batch_size=batch_size)


def run_sanity(
    cascade: Iterable[tuple[str, Embedder]], tasks: Sequence[SanityTask], *, batch_size: int = 64,
    on_stage: Callable[[str], None] | None = None,
) -> list[SanityRow]:
    """Recompute SINEX at every stage of ``cascade`` and correlate it with the trained scores.

    Parameters
    ----------
    cascade : iterable of (str, Embedder)
        Stages in order (name of the layer randomised last, embedder). A stage's
        embedder is used before the next stage is drawn, so a cascade may
        randomise one copy further at each step.
    tasks : sequence of SanityTask
    batch_size : int
    on_stage : callable, optional
        Called with each stage's name (progress).

    Returns
    -------
    list of SanityRow
    """
    rows = []
    for stage, (name, embedder) in enumerate(cascade):
        if on_stage is not None:
            on_stage(name)
        for task in tasks:
            trained_vu = task.trained_vu or (None,) * len(task.columns)
            for c, expl, trained, vu in zip(task.columns, sinex_on(embedder, task, batch_size=batch_size),
                                            task.trained_h, trained_vu):
                rows.append(SanityRow(stage=stage, stage_name=name, task=task.task, column=int(c),
                                      spearman=spearman(trained, expl.h),
                                      spearman_vu=float("nan") if vu is None else spearman(vu, expl.v - expl.u)))
    return rows


def summarize_sanity(rows: Sequence[SanityRow], *, n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Per stage: mean Spearman on ``h`` and on ``v - u_i`` with 95% bootstrap intervals, counts, a verdict.

    Returns
    -------
    list of dict
        One per stage, top down: ``spearman_mean`` / ``_min`` / ``_max`` (on ``h``), ``spearman_h`` and
        ``spearman_vu`` (``{"mean", "ci95", "n"}``), ``n_constant``, ``n_flagged`` (survived, on ``h``),
        ``n_inverted``, ``n_flagged_vu`` and ``passes`` (the interval on ``v - u_i`` ends at or below the
        threshold; None when no value is finite).
    """
    out = []
    for stage in sorted({r.stage for r in rows}):
        mine = [r for r in rows if r.stage == stage]
        values = np.array([r.spearman for r in mine], dtype=np.float64)
        finite = values[np.isfinite(values)]
        vu = bootstrap_mean([r.spearman_vu for r in mine], n_boot=n_boot, seed=seed + stage)
        out.append({
            "stage": stage, "randomised_down_to": mine[0].stage_name, "n": len(mine),
            "spearman_mean": float(finite.mean()) if finite.size else None,
            "spearman_min": float(finite.min()) if finite.size else None,
            "spearman_max": float(finite.max()) if finite.size else None,
            "spearman_h": bootstrap_mean(values, n_boot=n_boot, seed=seed + stage),
            "spearman_vu": vu,
            "n_constant": int((~np.isfinite(values)).sum()),
            "n_flagged": int(sum(r.flagged for r in mine)),
            "n_inverted": int(sum(r.inverted for r in mine)),
            "n_flagged_vu": int(sum(r.flagged_vu for r in mine)),
            "passes": None if vu["ci95"] is None else bool(vu["ci95"][1] <= FLAG_THRESHOLD),
        })
    return out

"""Explain one one-shot task: segment its supports, score them (SINEX/SINEXC), measure faithfulness."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.explain.faithfulness import (
    ORDERS,
    FaithfulnessConfig,
    SupportFaithfulness,
    measure_faithfulness,
    top_k_scores,
)
from siamese_audio.evaluation.explain.methods import MethodConfig, SupportExplanation, coalition_rng, explain_supports
from siamese_audio.evaluation.explain.perturb import Fill, fill_level
from siamese_audio.evaluation.explain.segments import SegmenterConfig, segment


@dataclass(frozen=True)
class TaskInputs:
    """One task as the explainer sees it: spectrograms, cached embeddings and scores.

    Attributes
    ----------
    task : int
        Index of the task in evaluation's draw (``draw_tasks``), so ``task`` 17
        is the 17th task ``evaluate`` scores with the same classes, C, runs and seed.
    query : np.ndarray [shape=(n_mels, n_frames)]
    supports : np.ndarray [shape=(C, n_mels, n_frames)]
    query_embedding : np.ndarray [shape=(D,)]
    v : np.ndarray [shape=(C,)]
        Similarity of the query to each support, from the cached embeddings.
    positive : int
        Column of the positive support.
    """

    task: int
    query: np.ndarray
    supports: np.ndarray
    query_embedding: np.ndarray
    v: np.ndarray
    positive: int

    @property
    def chosen(self) -> int:
        """The support evaluation chooses: the first highest score."""
        return int(np.argmax(self.v))


@dataclass(frozen=True, eq=False)
class TaskExplanation:
    """What one task's explanation found."""

    inputs: TaskInputs
    explanations: tuple[SupportExplanation, ...]
    faithfulness: tuple[SupportFaithfulness, ...]
    embeddings: int
    seconds: float
    top_k_scores: np.ndarray | None = None
    """[shape=(C, 2)]: similarity with only the top-k segments kept, and with them removed."""


def faithfulness_columns(scope: str, ways: int, positive: int) -> list[int]:
    """Supports whose faithfulness is measured: ``positive``, ``all`` or ``none``."""
    if scope == "all":
        return list(range(ways))
    if scope == "positive":
        return [int(positive)]
    return []


def explain_task(
    embedder: Embedder, inputs: TaskInputs, *, method: MethodConfig, segmenter: SegmenterConfig, fill: Fill,
    top_db: float, faithfulness: FaithfulnessConfig, seed: int, batch_size: int = 64, top_k: int = 3,
) -> TaskExplanation:
    """Explain every support of one task, then measure the faithfulness of the chosen supports.

    Parameters
    ----------
    embedder : Embedder
    inputs : TaskInputs
    method : MethodConfig
    segmenter : SegmenterConfig
    fill : "floor" or float
    top_db : float
        The feature config's floor depth (for ``fill="floor"``).
    faithfulness : FaithfulnessConfig
    seed : int
        With the task index and the support's column, seeds SINEXC's
        coalitions and the faithfulness orders.
    batch_size : int
    top_k : int
        Segments kept / removed for the before-after scores (``TaskExplanation.top_k_scores``).
    """
    t0 = time.perf_counter()
    supports = np.asarray(inputs.supports, dtype=np.float32)
    if supports.ndim != 3 or supports.shape[0] != inputs.v.shape[0]:
        raise EvaluationError(f"Expected supports of shape (C, n_mels, n_frames) with C = {inputs.v.shape[0]}. "
                              f"Got {supports.shape}.")
    labels = [segment(s, segmenter) for s in supports]
    fills = [fill_level(s, fill, top_db=top_db) for s in supports]
    rngs = [coalition_rng(seed, inputs.task, c) if method.method == "sinexc" else None
            for c in range(supports.shape[0])]
    explanations = explain_supports(embedder, inputs.query_embedding, supports, inputs.v, labels, fills, method,
                                    rngs=rngs, batch_size=batch_size)
    columns = faithfulness_columns(faithfulness.scope, supports.shape[0], inputs.positive)
    faith = measure_faithfulness(
        embedder, inputs.query_embedding, supports, inputs.v, explanations, columns, positive=inputs.positive,
        task=inputs.task, seed=seed, config=faithfulness, batch_size=batch_size) if columns else []
    after = top_k_scores(embedder, inputs.query_embedding, supports, explanations, top_k, batch_size=batch_size)
    n_faith = 2 * supports.shape[0] + len(columns) * 2 * (faithfulness.steps + 1) * (faithfulness.random_orders + len(ORDERS))
    embeddings = sum(e.n_perturbations for e in explanations) + n_faith
    return TaskExplanation(inputs=inputs, explanations=tuple(explanations), faithfulness=tuple(faith),
                           embeddings=int(embeddings), seconds=time.perf_counter() - t0, top_k_scores=after)

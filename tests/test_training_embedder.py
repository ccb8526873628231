"""The network as an evaluation Embedder: scores to rank by are logits (or minus a distance), never saturated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamese_audio.errors import TrainingError
from siamese_audio.evaluation.evaluator import evaluate_one_shot
from siamese_audio.training.config import preset
from siamese_audio.training.embedder import TorchEmbedder
from siamese_audio.training.model import build_model

torch.set_num_threads(2)
SHAPE = (16, 20)


def _saturating_model():
    """A tiny network whose head gives logits near 40: a float32 sigmoid of any of them is exactly 1.0."""
    model = build_model(preset("tiny")[0], SHAPE, seed=0).eval()
    with torch.no_grad():
        model.head.bias.fill_(40.0)
    return model


def test_similarity_is_the_logit_and_does_not_saturate():
    model = _saturating_model()
    embedder = TorchEmbedder(model, torch.device("cpu"))
    x = np.random.default_rng(0).standard_normal((6, *SHAPE)).astype(np.float32)
    emb = embedder.embed(x)
    a, b = emb[[0] * 5], emb[1:]
    sim = embedder.similarity(a, b)
    with torch.no_grad():
        logits = model.logits(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert sim.dtype == np.float32 and sim.shape == (5,)
    np.testing.assert_allclose(sim, logits, rtol=1e-6)
    assert sim.min() > 17 and len(np.unique(sim)) == 5  # far above where a float32 sigmoid is 1.0, all distinct
    # The probability is still there for display, and there it saturates: why ranking uses the logit.
    assert np.all(embedder.probability(a, b) == 1.0)


def test_distance_similarity_does_not_saturate_for_close_pairs():
    model = build_model(preset("tiny")[0], SHAPE, seed=0).eval()
    embedder = TorchEmbedder(model, torch.device("cpu"), similarity_kind="distance")
    a = np.zeros((4, model.config.fc_units), dtype=np.float32)
    b = a.copy()
    b[:, 0] = 1e-7 * np.arange(1, 5)  # 1 / (1 + d) is exactly 1.0 in float32 for all four
    sim = embedder.similarity(a, b)
    assert np.all(np.diff(sim) < 0)  # farther pairs score strictly lower
    with pytest.raises(TrainingError, match="no probability head"):
        embedder.probability(a, b)


def test_evaluation_of_a_saturating_network_has_no_tied_top_scores():
    model = _saturating_model()
    embedder = TorchEmbedder(model, torch.device("cpu"))
    rng = np.random.default_rng(1)
    data = rng.standard_normal((20, *SHAPE)).astype(np.float32)
    rows = {f"c{k}": np.arange(4 * k, 4 * k + 4) for k in range(5)}
    result = evaluate_one_shot(embedder, read=lambda r: data[np.asarray(r)], class_rows=rows, ways=5, runs=20, seed=0)
    assert result.scores.min() > 17
    assert result.n_tied_top == 0 and result.tied_top_share == 0.0
    # The same tasks scored by the float32 sigmoid (the old similarity) are all ties.
    saturated = 1.0 / (1.0 + np.exp(-result.scores.astype(np.float32)))
    assert np.all(saturated == 1.0)


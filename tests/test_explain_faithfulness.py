"""Faithfulness measures and the randomisation sanity check, on hand-made curves and generated data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.explain.faithfulness import (
    ORDERS,
    FaithfulnessConfig,
    aopc,
    bootstrap_mean,
    curve_gap,
    flip_fraction,
    insertion_area,
    orders_of,
    pixel_rank,
    step_counts,
)
from siamese_audio.evaluation.explain.sanity import SanityTask, run_sanity, sinex_on, spearman, summarize_sanity
from tests.explain_helpers import SHAPE, ProjectionEmbedder, make_task


def test_step_counts_cover_zero_to_every_pixel():
    np.testing.assert_array_equal(step_counts(10, 4), [0, 2, 5, 7, 10])
    assert step_counts(768, 20)[-1] == 768


def test_pixel_rank_orders_segments_then_breaks_ties():
    labels = np.array([[0, 0, 1], [1, 2, 2]])
    tie = np.array([5, 4, 3, 2, 1, 0])
    rank = pixel_rank(labels, np.array([1.0, 0.0, 2.0]), tie)  # segment 1 first, then 0, then 2
    np.testing.assert_array_equal(rank, [[3, 2, 1], [0, 5, 4]])
    assert sorted(rank.ravel().tolist()) == list(range(6))


def test_aopc_and_insertion_area_formulas():
    deletion = np.array([1.0, 0.5, 0.0])
    assert aopc(deletion) == pytest.approx((0.0 + 0.5 + 1.0) / 3)
    assert insertion_area(np.array([0.0, 0.5, 1.0])) == pytest.approx(0.5)
    assert insertion_area(np.ones(21)) == pytest.approx(1.0)
    # the area between insertion and deletion: a perfect order inserts to 1 at once and deletes to 0 at once
    assert curve_gap(np.array([0.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0])) == pytest.approx(0.75 - 0.25)
    assert curve_gap(np.ones(5), np.ones(5)) == pytest.approx(0.0)


def test_named_orders_rank_whole_segments_by_rho_reverse_u_and_size():
    from siamese_audio.evaluation.explain.methods import SupportExplanation

    labels = np.array([[0, 0, 0, 1], [1, 2, 3, 3], [3, 3, 3, 3]])  # sizes 3, 2, 1, 6
    sizes = np.array([3, 2, 1, 6])
    u = np.array([0.1, 0.9, 0.5, 0.2])
    h = (1.0 - u) / sizes
    expl = SupportExplanation(labels=labels, sizes=sizes, fill=-80.0, v=1.0, u_empty=0.0, u=u, h=h,
                              n_perturbations=5)
    named, random = orders_of(expl, n_random=3, seed=0, task=0, column=0)
    assert tuple(named) == ORDERS and random.shape == (3, *labels.shape)

    def segment_sequence(rank):
        flat = labels.ravel()[np.argsort(rank.ravel())]
        return [int(x) for i, x in enumerate(flat) if i == 0 or x != flat[i - 1]]  # contiguous runs

    assert segment_sequence(named["rho"]) == list(np.argsort(-expl.rho, kind="stable"))
    assert segment_sequence(named["reverse"]) == segment_sequence(named["rho"])[::-1]
    assert segment_sequence(named["u"]) == [1, 2, 3, 0]
    assert segment_sequence(named["size"]) == [3, 0, 1, 2]
    assert segment_sequence(named["size_small"]) == [2, 1, 0, 3]
    for r in random:  # random orders move whole segments too
        assert len(segment_sequence(r)) == 4


def test_equal_sized_segments_keep_together_in_the_size_orders():
    from siamese_audio.evaluation.explain.methods import SupportExplanation

    labels = np.repeat(np.arange(4), 3).reshape(3, 4)  # four segments of 3 pixels
    expl = SupportExplanation(labels=labels, sizes=np.full(4, 3), fill=-80.0, v=1.0, u_empty=0.0,
                              u=np.zeros(4), h=np.ones(4) / 3, n_perturbations=5)
    named, _ = orders_of(expl, n_random=1, seed=1, task=2, column=0)
    for name in ("size", "size_small"):
        flat = labels.ravel()[np.argsort(named[name].ravel())]
        assert (np.diff(flat) != 0).sum() == 3, name  # 4 contiguous runs


def test_decision_flip_is_the_first_step_another_support_wins():
    scores = np.array([0.6, 0.9, 0.5])  # positive: column 1
    assert flip_fraction(np.array([0.9, 0.8, 0.6, 0.55, 0.1]), scores, 1) == pytest.approx(0.5)
    assert np.isnan(flip_fraction(np.array([0.9, 0.8, 0.7, 0.65, 0.61]), scores, 1))
    assert flip_fraction(np.array([0.9, 0.8, 0.7, 0.65, 0.6]), scores, 1) == 1.0  # a tie goes to column 0
    assert np.isnan(flip_fraction(np.array([0.9, 0.9]), scores, 1))
    assert flip_fraction(np.array([0.1, 0.1]), scores, 1) == 0.0  # lost already


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(1.0, 0.5, 40)
    a = bootstrap_mean(values, n_boot=500, seed=3)
    assert a == bootstrap_mean(values, n_boot=500, seed=3)
    assert a["ci95"][0] < a["mean"] < a["ci95"][1] and a["n"] == 40
    assert bootstrap_mean([np.nan], n_boot=10, seed=0) == {"mean": None, "ci95": None, "n": 0}


def test_faithfulness_config_refusals():
    with pytest.raises(EvaluationError, match="--faithfulness"):
        FaithfulnessConfig("some")
    with pytest.raises(EvaluationError, match="steps"):
        FaithfulnessConfig(steps=0)


def test_spearman():
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 25.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1.0, 2.0]), np.array([4.0, 4.0])))


def _sanity_task(embedder):
    query, supports, labels, fills = make_task(seed=2)
    task = SanityTask(task=4, query=query, supports=supports, columns=(0, 2), labels=(labels[0], labels[2]),
                      fills=(fills[0], fills[2]), trained_h=())
    trained = sinex_on(embedder, task, batch_size=16)
    return dataclasses.replace(task, trained_h=tuple(e.h for e in trained), trained_vu=tuple(e.v - e.u for e in trained))


def test_sanity_check_gives_correlation_one_for_identical_weights():
    embedder = ProjectionEmbedder(seed=0)
    task = _sanity_task(embedder)
    rows = run_sanity([("same weights", embedder), ("other weights", ProjectionEmbedder(seed=9))], [task])
    same = [r for r in rows if r.stage == 0]
    assert [r.column for r in same] == [0, 2]
    assert all(r.spearman == pytest.approx(1.0) and r.flagged for r in same)
    other = [r for r in rows if r.stage == 1]
    assert all(r.spearman < 0.999 for r in other)
    assert all(r.spearman_vu == pytest.approx(1.0) and r.flagged_vu for r in same)
    summary = summarize_sanity(rows, n_boot=200)
    assert summary[0]["randomised_down_to"] == "same weights" and summary[0]["n_flagged"] == 2
    assert summary[0]["spearman_vu"]["mean"] == pytest.approx(1.0) and summary[0]["passes"] is False
    low, high = summary[1]["spearman_vu"]["ci95"]
    assert low <= summary[1]["spearman_vu"]["mean"] <= high


def test_sanity_flags_distinguish_the_sign_and_the_verdict_reads_v_minus_u():
    from siamese_audio.evaluation.explain.sanity import SanityRow

    def row(stage, h, vu):
        return SanityRow(stage=stage, stage_name=f"s{stage}", task=0, column=0, spearman=h, spearman_vu=vu)

    survived, inverted, unrelated = row(0, 0.9, 0.8), row(0, -0.9, -0.8), row(0, 0.1, float("nan"))
    assert survived.flagged and not survived.inverted and survived.flagged_vu
    assert inverted.inverted and not inverted.flagged and not inverted.flagged_vu
    assert not unrelated.flagged and not unrelated.inverted and not unrelated.flagged_vu
    # h survives through segment size while v - u changed: the stage passes, and the h flags are still counted
    rows = [row(0, 0.8, v) for v in (-0.2, 0.0, 0.1, 0.2)] + [row(1, 0.9, v) for v in (0.7, 0.8, 0.9, 0.95)]
    first, second = summarize_sanity(rows, n_boot=500)
    assert first["passes"] is True and first["n_flagged"] == 4 and first["n_inverted"] == 0
    assert second["passes"] is False and second["n_flagged_vu"] == 4
    assert summarize_sanity([row(0, float("nan"), float("nan"))])[0]["passes"] is None


def test_training_randomisation_cascade_goes_top_down_and_leaves_the_model_alone():
    torch = pytest.importorskip("torch")
    from siamese_audio.training.config import preset
    from siamese_audio.training.embedder import TorchEmbedder, randomisation_cascade
    from siamese_audio.training.model import build_model

    torch.set_num_threads(1)
    model_config, _ = preset("tiny")
    model = build_model(model_config, SHAPE, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    embedder = TorchEmbedder(model, torch.device("cpu"), precision="fp32")
    x = np.random.default_rng(0).normal(-40, 10, (2, *SHAPE)).astype(np.float32)
    trained = embedder.embed(x)
    names, outputs = [], []
    for name, stage in randomisation_cascade(embedder, seed=1):
        names.append(name)
        outputs.append(stage.embed(x))
        assert stage.model is not model
    assert names == ["head", "encoder.layers.7", "encoder.layers.3", "encoder.layers.0"]
    np.testing.assert_array_equal(outputs[0], trained)  # the head does not change embeddings
    assert not np.allclose(outputs[-1], trained)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = [stage.embed(x) for _, stage in randomisation_cascade(embedder, seed=1)]
    np.testing.assert_array_equal(again[-1], outputs[-1])  # seeded


def test_cascade_order_follows_the_forward_pass_not_registration():
    pytest.importorskip("torch")
    from siamese_audio.training.config import preset
    from siamese_audio.training.embedder import parametrised_layers, unused_layers
    from siamese_audio.training.model import build_model

    model = build_model(preset("cpu-esc50")[0], (32, 64), seed=0)
    names = [name for name, _ in parametrised_layers(model)]
    # the projection is registered after the convolutions but applied after them: it is the encoder's top
    assert names[0] == "encoder.project.0" and names[-1] == "encoder.layers.0"
    # the cosine similarity never calls the difference head: it is no stage of the cascade
    assert "head" in unused_layers(model) and "head" not in names
    assert len(names) + len(unused_layers(model)) == len(
        {n for n, m in model.named_modules() if n and list(m.parameters(recurse=False))})


def test_every_stage_of_a_cosine_cascade_changes_the_similarity():
    """Stage 0 of a cpu-esc50 cascade used to re-initialise the unused head and change nothing."""
    torch = pytest.importorskip("torch")
    from siamese_audio.training.config import preset
    from siamese_audio.training.embedder import TorchEmbedder, randomisation_cascade
    from siamese_audio.training.model import build_model

    torch.set_num_threads(1)
    model = build_model(preset("cpu-esc50")[0], (32, 64), seed=0)
    embedder = TorchEmbedder(model, torch.device("cpu"), precision="fp32")
    x = np.random.default_rng(0).normal(-40, 10, (4, 32, 64)).astype(np.float32)
    emb = embedder.embed(x)
    trained = embedder.similarity(emb[:2], emb[2:])
    stages = 0
    for _, stage in randomisation_cascade(embedder, seed=1):
        e = stage.embed(x)
        assert not np.allclose(stage.similarity(e[:2], e[2:]), trained, rtol=0, atol=1e-7)
        stages += 1
    assert stages >= 2

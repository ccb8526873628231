"""SINEX / SINEXC on generated spectrograms: batched == naive, the oracle, fills, segments, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.explain.engine import Job, score_queue, score_queue_naive
from siamese_audio.evaluation.explain.faithfulness import FaithfulnessConfig, measure_faithfulness
from siamese_audio.evaluation.explain.methods import (
    MethodConfig,
    coalition_rng,
    explain_supports,
    explain_supports_naive,
    keep_matrix,
)
from siamese_audio.evaluation.explain.perturb import RankMasks, SegmentMasks, fill_level, parse_fill
from siamese_audio.evaluation.explain.segments import SegmenterConfig, renumber, segment
from tests.explain_helpers import SEG, SHAPE, ProjectionEmbedder, make_task, spectrogram


class RegionOracle:
    """Similarity depends on one region only: minus the mean squared difference of its pixels."""

    def __init__(self, region):
        self.region = region

    def embed(self, x):
        x = np.asarray(x, dtype=np.float32)
        return x[:, self.region[0], self.region[1]].reshape(x.shape[0], -1)

    def similarity(self, a, b):
        return (-((a - b) ** 2).mean(axis=1)).astype(np.float32)


class IgnoresSupport:
    """A model whose embedding of anything is the same: the support never matters."""

    def embed(self, x):
        return np.ones((np.asarray(x).shape[0], 4), dtype=np.float32)

    def similarity(self, a, b):
        return np.full(a.shape[0], 0.25, dtype=np.float32)


def grid_labels(shape=SHAPE, block=(6, 8)) -> np.ndarray:
    rows = np.arange(shape[0])[:, None] // block[0]
    cols = np.arange(shape[1])[None, :] // block[1]
    return (rows * (shape[1] // block[1]) + cols).astype(np.int32)


# --- batched == naive --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sinex", "sinexc"])
def test_batched_equals_naive_loop(method):
    embedder = ProjectionEmbedder()
    query, supports, labels, fills = make_task()
    config = MethodConfig(method, alpha=7, beta=0.3)
    q = embedder.embed(query[None])[0]
    v = embedder.similarity(np.repeat(q[None], len(supports), axis=0), embedder.embed(supports))

    def rngs():
        return [coalition_rng(3, 11, c) for c in range(len(supports))] if method == "sinexc" else None

    fast = explain_supports(embedder, q, supports, v, labels, fills, config, rngs=rngs(), batch_size=5)
    slow = explain_supports_naive(embedder, query, supports, labels, fills, config, rngs=rngs())
    for a, b in zip(fast, slow):
        assert a.n_perturbations == b.n_perturbations == (a.n_segments * (1 if method == "sinex" else 7) + 1)
        np.testing.assert_allclose(a.h_map(), b.h_map(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(a.u, b.u, atol=1e-6, rtol=1e-5)
        assert a.u_empty == pytest.approx(b.u_empty, abs=1e-6, rel=1e-5)


def test_batched_equals_naive_with_the_torch_embedder():
    """The checkpoint's own wrapper: batches of 8 on the CPU against pairs of 2."""
    torch = pytest.importorskip("torch")
    from siamese_audio.training.config import preset
    from siamese_audio.training.embedder import TorchEmbedder
    from siamese_audio.training.model import build_model

    torch.set_num_threads(1)
    model_config, _ = preset("tiny")
    model_config = dataclasses.replace(model_config, conv_filters=(4,), conv_kernels=(3,), fc_units=16)
    model = build_model(model_config, SHAPE, seed=0)
    model.set_input_stats(-40.0, 15.0)
    embedder = TorchEmbedder(model, torch.device("cpu"))
    query, supports, labels, fills = make_task(seed=5)
    q = embedder.embed(query[None])[0]
    v = embedder.similarity(np.repeat(q[None], len(supports), axis=0), embedder.embed(supports))
    config = MethodConfig("sinexc", alpha=4, beta=0.2)
    fast = explain_supports(embedder, q, supports, v, labels, fills, config, batch_size=64,
                            rngs=[coalition_rng(0, 1, c) for c in range(3)])
    slow = explain_supports_naive(embedder, query, supports, labels, fills, config,
                                  rngs=[coalition_rng(0, 1, c) for c in range(3)])
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a.h_map(), b.h_map(), atol=1e-6, rtol=0)


def test_queue_fills_full_batches_across_supports():
    calls = []

    class Recording(ProjectionEmbedder):
        def embed(self, x):
            calls.append(len(x))
            return super().embed(x)

    embedder = Recording()
    _, supports, labels, fills = make_task()
    jobs = [Job(c, SegmentMasks(labels[c], keep_matrix(int(labels[c].max()) + 1, MethodConfig()))) for c in range(3)]
    total = sum(len(j.masks) for j in jobs)
    q = embedder.embed(supports[:1])[0]
    calls.clear()
    out = score_queue(embedder, q, supports, fills, jobs, batch_size=4)
    assert calls[:-1] == [4] * (len(calls) - 1) and sum(calls) == total
    naive = score_queue_naive(embedder, supports[0], supports, fills, jobs)
    for a, b in zip(out, naive):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # float32 rounding of batch shapes


# --- the oracle --------------------------------------------------------------------------------


def test_oracle_region_is_found_and_faithfulness_beats_random():
    labels = grid_labels()  # 4 x 4 blocks of 6 x 8 pixels
    region = (slice(4, 10), slice(5, 13))  # touches blocks 0, 1, 4, 5
    touching = {0, 1, 4, 5}
    oracle = RegionOracle(region)
    support = spectrogram(7)
    support[region] = support.max() - np.random.default_rng(0).uniform(0, 20, (6, 8))  # loud: nothing at the floor
    query = support.copy()  # the region matches exactly: v is the best possible score
    fill = fill_level(support, "floor", top_db=80.0)
    q = oracle.embed(query[None])[0]
    v = oracle.similarity(q[None], oracle.embed(support[None]))
    (expl,) = explain_supports(oracle, q, support[None], v, [labels], [fill], MethodConfig("sinex"))
    others = [i for i in range(expl.n_segments) if i not in touching]
    np.testing.assert_array_equal(expl.u[others], np.full(len(others), expl.u_empty))
    assert set(expl.top_segments(len(touching)).tolist()) == touching
    assert (expl.rank[list(touching)] < len(touching)).all()

    config = FaithfulnessConfig("positive", steps=20, random_orders=40)
    (faith,) = measure_faithfulness(oracle, q, support[None], np.asarray(v), [expl], [0], positive=0, task=0,
                                    seed=0, config=config)
    m = faith.measures()
    from siamese_audio.evaluation.explain.faithfulness import aopc

    random_aopc = aopc(faith.deletion_random)
    assert m["aopc_rho"] > np.percentile(random_aopc, 95)
    assert m["aopc_reverse"] < random_aopc.mean()
    assert m["aopc_u"] == pytest.approx(m["aopc_rho"])  # equal-sized segments: dividing by |R_i| changes no rank
    assert m["win_rate"] > 0.95 and m["delta_area"] > 0
    # equal sizes: the size orders are segment orders no better than chance, and rho beats both
    assert m["win_size"] == m["win_size_small"] == 1.0
    assert m["gap_rho"] > m["gap_random_mean"] > m["gap_reverse"]
    # before/after: keeping the four region blocks keeps the match, removing them leaves the all-filled score
    from siamese_audio.evaluation.explain.faithfulness import top_k_scores

    after = top_k_scores(oracle, q, support[None], [expl], len(touching))
    assert after.shape == (1, 2)
    assert after[0, 0] == pytest.approx(float(np.asarray(v).ravel()[0]), rel=1e-5)
    assert after[0, 1] == pytest.approx(expl.u_empty, rel=1e-5, abs=1e-6)


def test_a_model_that_ignores_its_support_gives_aopc_zero():
    embedder = IgnoresSupport()
    query, supports, labels, fills = make_task()
    q = embedder.embed(query[None])[0]
    v = np.full(3, 0.25, dtype=np.float32)
    expls = explain_supports(embedder, q, supports, v, labels, fills, MethodConfig("sinex"))
    assert all((e.h == 0).all() for e in expls)
    rows = measure_faithfulness(embedder, q, supports, v, expls, [0, 1, 2], positive=1, task=0, seed=0,
                                config=FaithfulnessConfig("all", steps=10, random_orders=3))
    for r in rows:
        m = r.measures()
        assert m["aopc_rho"] == m["aopc_reverse"] == m["aopc_random_mean"] == 0.0
        assert m["delta_aopc"] == 0.0 and m["win_rate"] == 0.5 and m["aopc_u"] == 0.0
        assert m["aopc_size"] == m["aopc_size_small"] == m["gap_rho"] == 0.0 and m["win_size"] == 0.5
    # Ties go to the first column: the positive support (column 1) never wins, so the "flip" is at 0.
    assert rows[1].flip_rho == 0.0 and np.isnan(rows[0].flip_rho)


# --- fills, segments, determinism --------------------------------------------------------------


def test_floor_fill_is_the_clips_floor_and_never_below_its_minimum():
    clipped = spectrogram(1)  # reaches its floor: max - 80
    assert clipped.min() == pytest.approx(clipped.max() - 80.0)
    assert fill_level(clipped, "floor", top_db=80.0) == pytest.approx(clipped.max() - 80.0)
    narrow = np.linspace(-30.0, -10.0, 600, dtype=np.float32).reshape(20, 30)  # a 20 dB range
    assert fill_level(narrow, "floor", top_db=80.0) == pytest.approx(-30.0)
    for seed in range(5):
        s = spectrogram(seed) + np.float32(seed * 7)
        assert fill_level(s, "floor", top_db=80.0) >= s.min()
    assert fill_level(clipped, parse_fill("-80"), top_db=80.0) == -80.0
    assert parse_fill("FLOOR") == "floor"
    with pytest.raises(EvaluationError, match="floor' or a level in dB"):
        parse_fill("quiet")
    with pytest.raises(EvaluationError, match="finite"):
        parse_fill(float("nan"))


def test_perturbed_pixels_hold_the_fill_and_kept_ones_the_support():
    _, supports, labels, fills = make_task()
    keep = np.zeros((2, int(labels[0].max()) + 1), dtype=bool)
    keep[0, 0] = True
    masks = SegmentMasks(labels[0], keep).masks(0, 2)
    out = np.empty((2, *SHAPE), dtype=np.float32)
    from siamese_audio.evaluation.explain.perturb import apply_masks

    apply_masks(supports[0], fills[0], masks, out)
    inside = labels[0] == 0
    np.testing.assert_array_equal(out[0][inside], supports[0][inside])
    assert (out[0][~inside] == np.float32(fills[0])).all() and (out[1] == np.float32(fills[0])).all()


@pytest.mark.parametrize("config", [SegmenterConfig("slic", sigma=1.0, n_segments=15, compactness=10.0), SEG])
def test_segment_labels_partition_the_image(config):
    image = spectrogram(3)
    labels = segment(image, config)
    assert labels.shape == image.shape and labels.dtype == np.int32
    k = int(labels.max()) + 1
    np.testing.assert_array_equal(np.unique(labels), np.arange(k))  # 0..K-1, every label used
    assert k >= 2
    # every label would be perturbed: SINEX keeps each one once, and all of them cover every pixel once
    keep = keep_matrix(k, MethodConfig("sinex"))[:-1]
    np.testing.assert_array_equal(SegmentMasks(labels, keep).masks(0, k).sum(axis=0), np.ones(image.shape))


def test_renumber_starts_at_zero_in_order_of_appearance():
    np.testing.assert_array_equal(renumber(np.array([[5, 5, 1], [9, 1, 5]])), [[0, 0, 1], [2, 1, 0]])


def test_segmenter_defaults_follow_the_authors():
    assert SegmenterConfig.defaults("sinex").to_dict() == {"method": "felzenszwalb", "scale": 50.0, "sigma": 1.5,
                                                           "min_size": 150}
    assert SegmenterConfig.defaults("sinexc").min_size == 900
    assert SegmenterConfig.defaults("sinex", "slic").to_dict() == {"method": "slic", "n_segments": 15,
                                                                   "compactness": 10.0, "sigma": 1.0}
    with pytest.raises(EvaluationError, match="segmenter among"):
        SegmenterConfig("watershed")
    with pytest.raises(EvaluationError, match="min_size"):
        SegmenterConfig(min_size=0)


def test_sinexc_is_seeded_per_seed_task_and_support():
    embedder = ProjectionEmbedder()
    query, supports, labels, fills = make_task()
    q = embedder.embed(query[None])[0]
    v = embedder.similarity(np.repeat(q[None], 3, axis=0), embedder.embed(supports))
    config = MethodConfig("sinexc", alpha=5, beta=0.15)

    def run(seed, task):
        return explain_supports(embedder, q, supports, v, labels, fills, config, batch_size=7,
                                rngs=[coalition_rng(seed, task, c) for c in range(3)])

    a, b = run(1, 4), run(1, 4)
    assert all(x.h.tobytes() == y.h.tobytes() and x.u.tobytes() == y.u.tobytes() for x, y in zip(a, b))
    k = int(labels[0].max()) + 1
    draws = {(s, t, c): keep_matrix(k, config, coalition_rng(s, t, c)).tobytes()
             for s, t, c in [(1, 4, 0), (1, 4, 1), (1, 5, 0), (2, 4, 0)]}
    assert len(set(draws.values())) == 4
    keep = keep_matrix(k, config, coalition_rng(1, 4, 0))
    assert keep.shape == (k * 5 + 1, k) and not keep[-1].any()
    for i in range(k):
        assert keep[i * 5:(i + 1) * 5, i].all()  # bit i forced on in segment i's coalitions


def test_method_config_refusals():
    with pytest.raises(EvaluationError, match="--method"):
        MethodConfig("lime")
    with pytest.raises(EvaluationError, match="--alpha"):
        MethodConfig("sinexc", alpha=0)
    with pytest.raises(EvaluationError, match="--beta"):
        MethodConfig("sinexc", beta=1.5)


def test_rank_masks_delete_and_insert_the_top_pixels():
    rank = np.arange(12).reshape(3, 4)
    counts = np.array([0, 5, 12])
    deleted = RankMasks(rank, counts, insert=False).masks(0, 3)
    inserted = RankMasks(rank, counts, insert=True).masks(0, 3)
    assert deleted[0].all() and not deleted[2].any() and deleted[1].sum() == 7
    assert not inserted[0].any() and inserted[2].all() and inserted[1].ravel()[:5].all()


# --- the ranking -------------------------------------------------------------------------------


def test_the_u_ranking_orders_segments_by_u_not_by_u_per_pixel():
    from siamese_audio.evaluation.explain.methods import SupportExplanation

    labels = np.array([[0, 0, 0, 1], [1, 2, 3, 3], [3, 3, 3, 3]])  # sizes 3, 2, 1, 6
    sizes = np.array([3, 2, 1, 6])
    u = np.array([0.5, 0.9, 0.2, 0.8])
    h = (1.0 - u) / sizes  # rho = -h: segment 1 (-0.05), then 3 (-0.033) ... size reorders it
    by_rho = SupportExplanation(labels=labels, sizes=sizes, fill=-80.0, v=1.0, u_empty=0.0, u=u, h=h,
                                n_perturbations=5)
    by_u = dataclasses.replace(by_rho, ranking="u")
    np.testing.assert_allclose(by_u.relevance, u - 1.0)
    assert by_u.top_segments(4).tolist() == [1, 3, 0, 2]
    assert by_rho.top_segments(4).tolist() == list(np.argsort(h, kind="stable"))
    assert by_rho.top_segments(4).tolist() != by_u.top_segments(4).tolist()
    assert by_u.rank.tolist() == [2, 0, 3, 1]
    np.testing.assert_array_equal(by_u.relevance_map(), (u - 1.0).astype(np.float32)[labels])
    np.testing.assert_array_equal(by_rho.relevance_map(), by_rho.rho_map())


def test_ranking_is_validated_recorded_and_the_cli_choices_match():
    import argparse

    from siamese_audio.cli.explain import add_parser
    from siamese_audio.evaluation.explain.methods import DEFAULT_RANKING, RANKINGS

    with pytest.raises(EvaluationError, match="--ranking"):
        MethodConfig("sinex", ranking="size")
    assert MethodConfig("sinex", ranking="u").to_dict() == {"method": "sinex", "ranking": "u"}
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    action = next(a for a in parser._subparsers._group_actions[0].choices["explain"]._actions
                  if a.dest == "ranking")
    assert tuple(action.choices) == RANKINGS and action.default == DEFAULT_RANKING

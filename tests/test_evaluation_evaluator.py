"""The evaluator (Algorithm 3): right and constant scorers, caching, determinism, per-pair agreement."""

from __future__ import annotations

import numpy as np
import pytest

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.baseline import RawCosineEmbedder
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.evaluator import evaluate_one_shot, evaluate_one_shot_per_pair
from siamese_audio.evaluation.metrics import wilson_interval
from siamese_audio.evaluation.suite import EvaluationSettings, evaluate_classes

N_MELS, N_FRAMES = 4, 6


def make_data(n_classes: int = 5, clips: int = 4, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Store-like array whose element [0, 0] holds the class index; rows shuffled across classes."""
    rng = np.random.default_rng(seed)
    n = n_classes * clips
    data = rng.standard_normal((n + 3, N_MELS, N_FRAMES)).astype(np.float32)
    order = rng.permutation(n) + 3  # rows 0..2 belong to no evaluating class
    rows = {}
    for k in range(n_classes):
        own = np.sort(order[k * clips:(k + 1) * clips])
        data[own, 0, 0] = k
        rows[f"class{k}"] = own.astype(np.int64)
    return data, rows


class Reader:
    """``read`` over an in-memory array that records every row it is asked for."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.calls: list[np.ndarray] = []

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(np.asarray(rows).copy())
        return self.data[rows]


class OracleEmbedder:
    """Right by construction: one-hot of the class index hidden in element [0, 0]."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.embedded = 0

    def embed(self, x: np.ndarray) -> np.ndarray:
        self.embedded += x.shape[0]
        return np.eye(self.n_classes, dtype=np.float32)[x[:, 0, 0].astype(int)]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(axis=1).astype(np.float32)


class ConstantEmbedder:
    """Scores every pair the same: every task is a full tie."""

    def embed(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((x.shape[0], 3), dtype=np.float32)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.full(a.shape[0], 0.5, dtype=np.float32)


class MeanEmbedder:
    """Row-wise deterministic (no cross-row arithmetic), so batching cannot change a bit."""

    def embed(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=2)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return -((a - b) ** 2).sum(axis=1)


def test_test_embedders_satisfy_the_protocol():
    for e in (OracleEmbedder(2), ConstantEmbedder(), MeanEmbedder(), RawCosineEmbedder()):
        assert isinstance(e, Embedder)


def test_right_scorer_gives_accuracy_one_and_a_diagonal_confusion():
    data, rows = make_data()
    res = evaluate_one_shot(OracleEmbedder(5), read=Reader(data), class_rows=rows, ways=5, runs=12, seed=0)
    assert res.accuracy == 1.0
    assert res.n_tasks == 60 and res.n_correct == 60
    assert res.per_class == {f"class{k}": 1.0 for k in range(5)}
    assert np.array_equal(res.confusion, np.diag([12] * 5))
    assert res.classes == tuple(rows)
    assert res.correct.all() and res.correct.shape == (60,)
    low, high = res.ci95
    assert high == 1.0 and 0.9 < low < 1.0
    assert (low, high) == wilson_interval(60, 60)


def test_constant_scorer_picks_the_first_support_so_chance_is_one_in_c():
    data, rows = make_data(n_classes=6, clips=3)
    res = evaluate_one_shot(ConstantEmbedder(), read=Reader(data), class_rows=rows, ways=4, runs=300, seed=5)
    # Documented tie rule: the first support wins, and the positive sits at a random column.
    assert (res.chosen == 0).all()
    assert np.array_equal(res.correct, res.tasks.positive == 0)
    assert abs(res.accuracy - 0.25) < 0.03
    assert res.ci95[0] < 0.25 < res.ci95[1]


def test_tied_top_scores_are_counted_and_reported():
    data, rows = make_data(n_classes=5, clips=3)
    tied = evaluate_one_shot(ConstantEmbedder(), read=Reader(data), class_rows=rows, ways=3, runs=10, seed=0)
    assert tied.n_tied_top == tied.n_tasks == 50 and tied.tied_top_share == 1.0
    right = evaluate_one_shot(OracleEmbedder(5), read=Reader(data), class_rows=rows, ways=3, runs=10, seed=0)
    assert right.n_tied_top == 0
    assert tied.to_dict()["n_tied_top"] == 50 and right.to_dict()["tied_top_share"] == 0.0


def test_each_clip_is_read_and_embedded_once_in_batches():
    data, rows = make_data(n_classes=5, clips=4)
    reader, embedder = Reader(data), OracleEmbedder(5)
    evaluate_one_shot(embedder, read=reader, class_rows=rows, ways=3, runs=50, seed=1, batch_size=8)
    read_rows = np.concatenate(reader.calls)
    assert sorted(read_rows.tolist()) == sorted(np.concatenate(list(rows.values())).tolist())
    assert [len(c) for c in reader.calls] == [8, 8, 4]
    assert embedder.embedded == 20


def test_same_seed_same_numbers():
    data, rows = make_data()
    a = evaluate_one_shot(MeanEmbedder(), read=Reader(data), class_rows=rows, ways=3, runs=10, seed=11)
    b = evaluate_one_shot(MeanEmbedder(), read=Reader(data), class_rows=rows, ways=3, runs=10, seed=11, batch_size=3)
    assert a.accuracy == b.accuracy
    assert np.array_equal(a.correct, b.correct)
    assert np.array_equal(a.scores, b.scores)
    assert np.array_equal(a.confusion, b.confusion)


@pytest.mark.parametrize("embedder", [MeanEmbedder(), RawCosineEmbedder()], ids=["mean", "raw-cosine"])
def test_cached_and_per_pair_scoring_agree_exactly(embedder):
    data, rows = make_data(n_classes=4, clips=3, seed=2)
    cached = evaluate_one_shot(embedder, read=Reader(data), class_rows=rows, ways=4, runs=6, seed=4, batch_size=5)
    naive = evaluate_one_shot_per_pair(embedder, read=Reader(data), class_rows=rows, ways=4, runs=6, seed=4)
    assert np.array_equal(cached.scores, naive.scores)
    assert np.array_equal(cached.correct, naive.correct)
    assert cached.accuracy == naive.accuracy


def test_per_pair_path_does_one_read_per_pair():
    data, rows = make_data(n_classes=3, clips=2)
    reader = Reader(data)
    evaluate_one_shot_per_pair(ConstantEmbedder(), read=reader, class_rows=rows, ways=3, runs=2, seed=0)
    assert len(reader.calls) == 3 * 2 * 3 and all(len(c) == 2 for c in reader.calls)


def test_confusion_rows_are_query_classes_and_columns_chosen_classes():
    data, rows = make_data(n_classes=3, clips=3)

    class AlwaysClassZero(OracleEmbedder):
        def similarity(self, a, b):  # prefers supports of class 0, whatever the query
            return b[:, 0].astype(np.float32)

    res = evaluate_one_shot(AlwaysClassZero(3), read=Reader(data), class_rows=rows, ways=3, runs=10, seed=0)
    assert np.array_equal(res.confusion, np.array([[10, 0, 0], [10, 0, 0], [10, 0, 0]]))
    assert res.per_class == {"class0": 1.0, "class1": 0.0, "class2": 0.0}
    assert res.accuracy == pytest.approx(1 / 3)


def test_refuses_non_finite_clips_naming_rows():
    data, rows = make_data(n_classes=3, clips=2)
    bad = int(rows["class1"][0])
    data[bad] = np.nan
    with pytest.raises(EvaluationError, match=rf"rows \[{bad}\] hold NaN"):
        evaluate_one_shot(MeanEmbedder(), read=Reader(data), class_rows=rows, ways=2, runs=2, seed=0)


def test_refuses_embedder_with_wrong_output_shape():
    data, rows = make_data(n_classes=3, clips=2)

    class Flat(MeanEmbedder):
        def similarity(self, a, b):
            return np.zeros((a.shape[0], 1), dtype=np.float32)

    with pytest.raises(EvaluationError, match=r"similarity to return shape \(\d+,\)"):
        evaluate_one_shot(Flat(), read=Reader(data), class_rows=rows, ways=2, runs=2, seed=0)


def test_suite_curve_reuses_the_cache_and_matches_the_headline():
    data, rows = make_data(n_classes=5, clips=4)
    embedder = OracleEmbedder(5)
    settings = EvaluationSettings(ways=3, runs=8, seed=2, batch_size=64)
    out = evaluate_classes(embedder, Reader(data), rows, settings)
    assert embedder.embedded == 20  # one embedding pass for every C
    assert [p.ways for p in out.curve] == [2, 3, 4, 5]
    assert out.curve[1] is out.result
    assert all(p.accuracy == 1.0 for p in out.curve)
    # The baseline scores the very same tasks.
    assert out.baseline is not None
    assert np.array_equal(out.baseline.tasks.support, out.result.tasks.support)
    assert [p.ways for p in out.baseline_curve] == [2, 3, 4, 5]
    plain = evaluate_one_shot(OracleEmbedder(5), read=Reader(data), class_rows=rows, ways=3, runs=8, seed=2)
    assert np.array_equal(plain.correct, out.result.correct)


def test_baseline_separates_separable_classes_and_is_bounded():
    data, rows = make_data(n_classes=4, clips=4)
    for k, own in enumerate(rows.values()):
        data[own] += 5.0 * np.random.default_rng(k).standard_normal((N_MELS, N_FRAMES)).astype(np.float32)
    res = evaluate_one_shot(RawCosineEmbedder(), read=Reader(data), class_rows=rows, ways=4, runs=20, seed=0)
    assert res.accuracy > 0.9
    assert (res.scores <= 1.0 + 1e-6).all() and (res.scores >= -1.0 - 1e-6).all()


def test_only_clips_that_tasks_use_are_read():
    data, rows = make_data(n_classes=2, clips=40)
    reader = Reader(data)
    res = evaluate_one_shot(MeanEmbedder(), read=reader, class_rows=rows, ways=2, runs=1, seed=0)
    used = np.unique(np.concatenate([res.tasks.query_rows(), res.tasks.support_rows().ravel()]))
    read_rows = np.concatenate(reader.calls)
    assert sorted(read_rows.tolist()) == used.tolist() and len(used) <= 6 < 80

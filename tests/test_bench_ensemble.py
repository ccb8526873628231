"""The paired comparison benchmarks/bench_ensemble.py reports (an ensemble against its best member)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ensemble.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_ensemble", BENCH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH.parent))


def test_paired_gain_is_the_mean_difference_with_a_normal_interval(bench):
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1], dtype=bool)
    b = np.array([1, 0, 1, 0, 0, 0, 1, 1], dtype=bool)
    gain, low, high = bench.paired_gain(a, b)
    d = a.astype(float) - b.astype(float)
    assert gain == pytest.approx(0.25)
    assert high - gain == pytest.approx(gain - low)
    assert high - gain == pytest.approx(1.96 * d.std(ddof=1) / np.sqrt(d.size))


def test_paired_gain_of_identical_scores_is_exactly_zero(bench):
    a = np.random.default_rng(0).random(500) < 0.6
    assert bench.paired_gain(a, a) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("b", [np.ones(7, bool), np.ones((8, 1), bool)])
def test_paired_gain_refuses_vectors_of_other_shapes(bench, b):
    with pytest.raises(ValueError, match="expected two per-task vectors"):
        bench.paired_gain(np.ones(8, bool), b)


def test_ensemble_cosine_is_the_mean_of_its_members_cosines(bench):
    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))

    class Member:
        def __init__(self, w):
            self.w = w

        def embed(self, x):
            return x @ self.w

    x, y = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    ens = bench.Ensemble([Member(w1), Member(w2)])

    def cos(u, v):
        return (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)

    want = (cos(x @ w1, y @ w1) + cos(x @ w2, y @ w2)) / 2
    np.testing.assert_allclose(ens.similarity(ens.embed(x), ens.embed(y)), want, rtol=1e-5)

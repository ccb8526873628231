"""One-shot task construction (Algorithm 4): structure, determinism, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.tasks import draw_tasks, make_pool


def class_rows(n_classes: int = 6, clips: int = 4, start: int = 100) -> dict[str, np.ndarray]:
    rows = {}
    for k in range(n_classes):
        rows[f"c{k}"] = np.arange(start + k * clips, start + (k + 1) * clips, dtype=np.int64)
    return rows


@pytest.mark.parametrize("ways", [2, 3, 6])
def test_every_task_has_one_positive_and_distinct_negative_classes(ways):
    pool = make_pool(class_rows())
    tasks = draw_tasks(pool, ways=ways, runs=25, seed=3)
    assert tasks.n_tasks == 6 * 25
    assert tasks.support.shape == (tasks.n_tasks, ways)
    qc = tasks.query_class
    # One positive: exactly one support of the query's class, at the recorded column.
    same = tasks.support_class == qc[:, None]
    assert (same.sum(axis=1) == 1).all()
    assert (np.argmax(same, axis=1) == tasks.positive).all()
    # C - 1 distinct negative classes (all support classes distinct).
    for row in tasks.support_class:
        assert len(set(row.tolist())) == ways
    # Supports are clips of the class recorded for them.
    assert (pool.labels[tasks.support] == tasks.support_class).all()
    # The positive support is another clip than the query.
    positive_clip = tasks.support[np.arange(tasks.n_tasks), tasks.positive]
    assert (positive_clip != tasks.query).all()
    # runs tasks per class, class after class.
    assert np.array_equal(qc, np.repeat(np.arange(6), 25))


def test_rows_map_back_to_store_rows():
    rows = class_rows(n_classes=3, clips=3, start=40)
    tasks = draw_tasks(make_pool(rows), ways=3, runs=5, seed=0)
    for t in range(tasks.n_tasks):
        c = tasks.pool.classes[tasks.query_class[t]]
        assert tasks.query_rows()[t] in rows[c]
        for j in range(3):
            assert tasks.support_rows()[t, j] in rows[tasks.pool.classes[tasks.support_class[t, j]]]


def test_two_clips_per_class_pairs_them():
    tasks = draw_tasks(make_pool(class_rows(n_classes=3, clips=2)), ways=2, runs=20, seed=1)
    positive_clip = tasks.support[np.arange(tasks.n_tasks), tasks.positive]
    assert set(zip(tasks.query.tolist(), positive_clip.tolist())) <= {(0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4)}


def test_same_seed_same_tasks_other_seed_other_tasks():
    pool = make_pool(class_rows())
    a = draw_tasks(pool, ways=4, runs=10, seed=7)
    b = draw_tasks(make_pool(class_rows()), ways=4, runs=10, seed=7)
    c = draw_tasks(pool, ways=4, runs=10, seed=8)
    for name in ("query", "support", "support_class", "positive"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.support, c.support)


def test_positive_column_is_uniform():
    tasks = draw_tasks(make_pool(class_rows()), ways=5, runs=400, seed=0)
    freq = np.bincount(tasks.positive, minlength=5) / tasks.n_tasks
    assert np.allclose(freq, 0.2, atol=0.03)


@pytest.mark.parametrize(
    ("rows", "ways", "match"),
    [
        ({"a": [1, 2]}, 2, "at least 2 evaluating classes"),
        ({"a": [1, 2], "b": [3]}, 2, "Class 'b' has 1"),
        ({"a": [1, 2], "b": [2, 3]}, 2, r"Rows \[2\] appear more than once"),
        ({"a": [1.0, 2.0], "b": [3, 4]}, 2, "1-D array of integers"),
        ({"a": [1, 2], "b": [3, 4]}, 3, "from 2 to the number of evaluating classes \\(2\\). Got 3"),
        ({"a": [1, 2], "b": [3, 4]}, 1, "Got 1"),
    ],
)
def test_refuses_what_cannot_form_tasks(rows, ways, match):
    with pytest.raises(EvaluationError, match=match):
        draw_tasks(make_pool(rows), ways=ways, runs=1, seed=0)


def test_refuses_zero_runs():
    with pytest.raises(EvaluationError, match="runs"):
        draw_tasks(make_pool(class_rows()), ways=2, runs=0, seed=0)

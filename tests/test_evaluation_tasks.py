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


# --- positives from another source recording (issue 11) -------------------------------------------


def _recordings() -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Class a: 3 recordings (r1 x3, r2 x2, r3 x1); b: one recording only; c: unknown sources ("")."""
    rows = {"a": np.arange(0, 6), "b": np.arange(6, 10), "c": np.arange(10, 13)}
    sources = {"a": ["r1", "r1", "r2", "r1", "r3", "r2"], "b": ["x", "x", "x", "x"], "c": ["", "", ""]}
    return rows, sources


def test_positive_comes_from_another_recording_when_one_exists():
    rows, sources = _recordings()
    pool = make_pool(rows, sources)
    tasks = draw_tasks(pool, ways=3, runs=600, seed=0)
    positive_clip = tasks.support[np.arange(tasks.n_tasks), tasks.positive]
    code = pool.sources
    in_a = tasks.query_class == 0
    assert (code[positive_clip[in_a]] != code[tasks.query[in_a]]).all()
    # Uniform over the other recordings' clips: query 0 (r1) takes clips 2, 4 and 5 (r2, r3, r2).
    picked = positive_clip[tasks.query == 0]
    assert set(picked.tolist()) == {2, 4, 5}
    assert np.bincount(picked, minlength=6)[[2, 4, 5]].min() > 0.2 * picked.size
    # Clips of unknown source count as recordings of their own.
    in_c = tasks.query_class == 2
    assert not tasks.positive_same_recording[in_c].any()
    assert (positive_clip != tasks.query).all()


def test_class_from_one_recording_is_counted_not_hidden():
    rows, sources = _recordings()
    tasks = draw_tasks(make_pool(rows, sources), ways=2, runs=50, seed=1)
    summary = tasks.positives_summary()
    assert summary["rule"] == "other_recording" and summary["applied"] is True
    # Class b has one recording: all its 50 tasks keep a same-recording positive, flagged and counted.
    assert summary["n_without_other_recording"] == 50 and summary["classes_without_other_recording"] == ["b"]
    assert summary["n_positive_same_recording"] == 50
    assert np.array_equal(tasks.no_other_recording, tasks.query_class == 1)


def test_same_source_ok_reproduces_the_report_draw_and_counts_same_recording_positives():
    rows, sources = _recordings()
    report = draw_tasks(make_pool(rows), ways=3, runs=200, seed=4)  # no sources: the report's protocol
    allowed = draw_tasks(make_pool(rows, sources), ways=3, runs=200, seed=4, same_source_ok=True)
    for name in ("query", "support", "support_class", "positive"):
        assert np.array_equal(getattr(report, name), getattr(allowed, name))
    summary = allowed.positives_summary()
    assert summary["rule"] == "any_clip" and summary["applied"] is False
    assert 200 < summary["n_positive_same_recording"] < 600  # b always, a sometimes, c never
    unknown = report.positives_summary()
    assert unknown["sources_known"] is False and unknown["applied"] is False
    assert unknown["n_without_other_recording"] is None


def test_evaluation_tasks_is_deterministic_and_is_what_draw_tasks_gives():
    from siamese_audio.evaluation.tasks import evaluation_tasks

    rows, sources = _recordings()
    a = evaluation_tasks(rows, ways=3, runs=20, seed=9, class_sources=sources)
    b = evaluation_tasks(rows, ways=3, runs=20, seed=9, class_sources=sources)
    c = draw_tasks(make_pool(rows, sources), ways=3, runs=20, seed=9)
    for name in ("query", "support", "support_class", "positive", "no_other_recording"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert np.array_equal(getattr(a, name), getattr(c, name))


def test_sources_that_do_not_line_up_are_refused():
    rows, sources = _recordings()
    with pytest.raises(EvaluationError, match="one source per clip of class 'b' \\(4\\). Got 3"):
        make_pool(rows, {**sources, "b": ["x", "x", "x"]})
    with pytest.raises(EvaluationError, match="sources for exactly the evaluating classes"):
        make_pool(rows, {"a": sources["a"]})

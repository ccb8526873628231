"""Re-evaluating checkpoints: refusals, several splits, regenerated splits, report contents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.checks import check_feature_config, check_overlap, feature_config_differences
from siamese_audio.evaluation.metrics import spread, wilson_interval
from siamese_audio.evaluation.reevaluate import SplitSource, evaluate_checkpoint, regenerate_splits
from siamese_audio.evaluation.report import write_report
from siamese_audio.evaluation.suite import EvaluationSettings
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import open_version
from siamese_audio.manifests.splits import Split

CLASSES = [f"{i:02d}" for i in range(1, 13)]  # 12 "speakers"
TRAIN = CLASSES[:6]
SETTINGS = EvaluationSettings(ways=3, runs=4, seed=1, batch_size=16)


class MeanEmbedder:
    def embed(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=2)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return -((a - b) ** 2).sum(axis=1)


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    return open_version(make_synthetic_version(root, classes=CLASSES, clips_per_class=4, shape=(8, 10), seed=0))


def meta_for(version, training=TRAIN, **changes):
    meta = {"feature_config": dict(version.feature_config), "feature_version_id": version.version_id,
            "split_id": "abc123", "training_classes": list(training), "dataset": version.dataset,
            "input_shape": list(version.shape)}
    meta.update(changes)
    return meta


def split_of(test, validation=()):
    rest = [c for c in CLASSES if c not in test and c not in validation]
    return Split("audiomnist", "file", None, {"train": rest, "validation": list(validation), "test": list(test)})


# --- pure checks -------------------------------------------------------------------------------


def test_wilson_interval_matches_a_known_value():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0


def test_spread_of_split_accuracies():
    s = spread([0.5, 0.7, 0.9])
    assert (s.n, s.mean, s.min, s.max) == (3, pytest.approx(0.7), 0.5, 0.9)
    assert s.sd == pytest.approx(0.2)
    assert spread([0.4]).sd == 0.0


def test_overlap_is_refused_naming_the_classes():
    with pytest.raises(EvaluationError, match=r"training classes.*\['02', '05'\].*--allow-overlap"):
        check_overlap(["02", "05", "09"], ["01", "02", "05"])
    assert check_overlap(["02", "09"], ["02"], allow_overlap=True) == ["02"]
    assert check_overlap(["09"], ["02"]) == []


def test_feature_mismatch_is_refused_naming_the_settings():
    ckpt = {"name": "a", "n_mels": 64, "hop_length": 256, "n_fft": 1024}
    other = {"name": "b", "n_mels": 128, "hop_length": 256, "n_fft": 2048}
    with pytest.raises(EvaluationError, match=r"n_fft: checkpoint 1024, version 2048; n_mels: checkpoint 64"):
        check_feature_config(ckpt, other)
    assert set(check_feature_config(ckpt, other, allow_feature_mismatch=True)) == {"n_fft", "n_mels"}
    assert feature_config_differences(ckpt, {**ckpt, "name": "renamed"}) == {}


# --- evaluate_checkpoint -----------------------------------------------------------------------


def test_refuses_evaluating_training_classes_before_any_work(version):
    source = SplitSource(split_of(test=["03", "07", "08"]), "x.parquet")
    with pytest.raises(EvaluationError, match=r"\['03'\]"):
        evaluate_checkpoint(MeanEmbedder(), meta_for(version), version, [source], SETTINGS, checkpoint="c.pt")
    report = evaluate_checkpoint(MeanEmbedder(), meta_for(version), version, [source], SETTINGS,
                                 checkpoint="c.pt", allow_overlap=True)
    assert report.runs[0].overlap == ("03",)
    assert any("['03']" in n and "not one-shot" in n for n in report.notes)


def test_refuses_feature_version_with_other_settings(version):
    meta = meta_for(version, feature_config={**version.feature_config, "hop_length": 999})
    source = SplitSource(split_of(test=["07", "08", "09"]))
    with pytest.raises(EvaluationError, match=r"hop_length: checkpoint 999, version 64"):
        evaluate_checkpoint(MeanEmbedder(), meta, version, [source], SETTINGS, checkpoint="c.pt")
    report = evaluate_checkpoint(MeanEmbedder(), meta, version, [source], SETTINGS, checkpoint="c.pt",
                                 allow_feature_mismatch=True)
    assert any("hop_length" in n for n in report.notes)


def test_refuses_unusable_input_shape_and_other_dataset(version):
    source = SplitSource(split_of(test=["07", "08", "09"]))
    with pytest.raises(EvaluationError, match=r"\(8, 12\).*\(8, 10\)"):
        evaluate_checkpoint(MeanEmbedder(), meta_for(version, input_shape=[8, 12]), version, [source], SETTINGS,
                            checkpoint="c.pt", allow_feature_mismatch=True)
    with pytest.raises(EvaluationError, match="dataset 'esc50'"):
        evaluate_checkpoint(MeanEmbedder(), meta_for(version, dataset="esc50"), version, [source], SETTINGS,
                            checkpoint="c.pt")


def test_several_splits_give_per_split_results_and_their_spread(version):
    sources = [SplitSource(split_of(test=["07", "08", "09"]), "a.parquet"),
               SplitSource(split_of(test=["10", "11", "12", "09"]), "b.parquet")]
    report = evaluate_checkpoint(MeanEmbedder(), meta_for(version), version, sources, SETTINGS, checkpoint="c.pt")
    assert [len(r.evaluation.result.classes) for r in report.runs] == [3, 4]
    accs = [r.evaluation.result.accuracy for r in report.runs]
    dist = report.distribution()["accuracy"]
    assert dist.n == 2 and dist.mean == pytest.approx(np.mean(accs)) and dist.min == min(accs)
    pooled = report.pooled()
    assert pooled["n_tasks"] == 3 * 4 + 4 * 4
    assert pooled["per_class"].keys() == {"07", "08", "09", "10", "11", "12"}
    # Separable synthetic classes: the mean-spectrum scorer does far better than chance.
    assert pooled["accuracy"] > 0.8


def test_validation_subset_is_evaluated_when_asked(version):
    source = SplitSource(split_of(test=["07", "08"], validation=["10", "11", "12"]))
    report = evaluate_checkpoint(MeanEmbedder(), meta_for(version), version, [source], SETTINGS,
                                 checkpoint="c.pt", subset="validation")
    assert report.runs[0].evaluation.result.classes == ("10", "11", "12")


def test_regenerated_splits_avoid_training_classes_and_say_when_they_cannot(version):
    sources, notes = regenerate_splits(version, TRAIN, k=3, seed=5, n_classes=3)
    assert notes == [] and len(sources) == 3
    tests = [s.split.classes["test"] for s in sources]
    assert all(len(t) == 3 and not set(t) & set(TRAIN) for t in tests)
    assert len({tuple(t) for t in tests}) > 1  # different seeds, different splits
    assert all(s.split.all_classes() == CLASSES for s in sources)
    again, _ = regenerate_splits(version, TRAIN, k=3, seed=5, n_classes=3)
    assert [s.split.split_id for s in again] == [s.split.split_id for s in sources]

    too_many = CLASSES[:9]  # 3 classes remain; 3 test classes need 5
    with pytest.raises(EvaluationError, match=r"Cannot draw splits that avoid.*3 of the 12 .*needs at least 5"):
        regenerate_splits(version, too_many, k=2, seed=0, n_classes=3)
    sources, notes = regenerate_splits(version, too_many, k=2, seed=0, n_classes=3, allow_overlap=True)
    assert len(sources) == 2 and "Drew from every stored class" in notes[0]


# --- report ------------------------------------------------------------------------------------


def test_report_files_and_contents(version, tmp_path):
    sources = [SplitSource(split_of(test=["07", "08", "09", "10"]), "a.parquet")]
    drawn, _ = regenerate_splits(version, TRAIN, k=1, seed=2, n_classes=3)
    report = evaluate_checkpoint(MeanEmbedder(), meta_for(version), version, sources + drawn, SETTINGS,
                                 checkpoint="runs/x/best.pt")
    written = write_report(report, tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["checkpoint"] == "runs/x/best.pt"
    assert data["feature_version_id"] == version.version_id
    assert data["seed"] == 1 and data["checkpoint_split_id"] == "abc123"
    assert data["split_ids"] == [r.split_id for r in report.runs]
    assert "Wilson" in data["ci_method"]
    assert {"accuracy", "ci95", "n_tasks", "per_class", "baseline_accuracy", "distribution"} <= data.keys()
    first = data["splits"][0]
    assert first["n_tasks"] == 16 and first["classes"] == ["07", "08", "09", "10"]
    assert np.array(first["confusion"]).sum() == 16
    assert [p["ways"] for p in first["curve"]] == [2, 3, 4]
    assert first["curve"][1]["accuracy"] == first["accuracy"]  # C = ways scores the headline tasks
    assert first["baseline"]["n_tasks"] == 16
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| network |" in md and "## Across splits" in md and "Wilson" in md
    assert "| 07 |" in md and "query \\ chosen" in md
    folder = tmp_path / "rep" / report.runs[0].split_id
    for name in ("per_class.csv", "confusion.csv", "curve.csv", "tasks.csv", "confusion.png", "accuracy_vs_ways.png"):
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    confusion = (folder / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "query_class,07,08,09,10"
    # A regenerated split is written so it can be reused with --split.
    assert (tmp_path / "rep" / drawn[0].split.split_id / "split.parquet").is_file()
    assert not (folder / "split.parquet").exists()
    assert written["report.json"] == tmp_path / "rep" / "report.json"

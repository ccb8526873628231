"""Re-evaluating checkpoints: refusals, several splits, regenerated splits, report contents."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.checks import check_feature_config, check_overlap, feature_config_differences
from siamese_audio.evaluation.metrics import spread, wilson_interval
from siamese_audio.evaluation.planning import SplitSource, regenerate_splits
from siamese_audio.evaluation.reevaluate import evaluate_checkpoint
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
    assert report.runs[0].overlap == {"03": "training"}
    assert any("03 (training)" in n and "not one-shot" in n for n in report.notes)


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
    assert len(sources) == 3 and notes[0] == (
        "Regenerated splits: 3 test classes drawn from the 6 unseen classes (6 of the 12 stored classes are "
        "neither among the checkpoint's 6 training classes (6 stored) nor its 0 validation classes (0 stored)).")
    # Seed 7 repeats an earlier split's test classes: skipped, so the 3 splits are distinct (seeds 5, 6, 8).
    assert notes[1] == "Seeds 5..8 drew 3 distinct splits; seeds that repeated an earlier split's test classes were skipped."
    assert [s.split.seed for s in sources] == [5, 6, 8]
    tests = [s.split.classes["test"] for s in sources]
    assert all(len(t) == 3 and not set(t) & set(TRAIN) for t in tests)
    assert len({tuple(t) for t in tests}) == 3
    # Fewer distinct sets than asked: all of them, and a note.
    few, few_notes = regenerate_splits(version, CLASSES[:8], k=5, seed=0, n_classes=3)  # 4 classes: 4 sets of 3
    assert len({tuple(s.split.classes["test"]) for s in few}) == len(few) == 4
    assert "Only 4 distinct sets of 3 test classes could be drawn from the 4 classes (4 exist)" in few_notes[1]
    assert all(s.split.all_classes() == CLASSES for s in sources)
    again, _ = regenerate_splits(version, TRAIN, k=3, seed=5, n_classes=3)
    assert [s.split.split_id for s in again] == [s.split.split_id for s in sources]

    too_many = CLASSES[:10]  # 2 classes remain; 3 test classes need 3
    with pytest.raises(EvaluationError, match=r"never saw: 2 of the 12 stored classes .*need at least 3"):
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
    assert "t-interval" in data["ci_method"] and "Wilson" in data["pooled"]["ci_method"]
    assert {"accuracy", "ci95", "n_tasks", "per_class", "baseline_accuracy", "distribution", "headline", "pooled",
            "positives", "n_tied_top", "overlap"} <= data.keys()
    first = data["splits"][0]
    assert first["n_tasks"] == 16 and first["classes"] == ["07", "08", "09", "10"]
    assert np.array(first["confusion"]).sum() == 16
    assert [p["ways"] for p in first["curve"]] == [2, 3, 4]
    assert first["curve"][1]["accuracy"] == first["accuracy"]  # C = ways scores the headline tasks
    assert first["baseline"]["n_tasks"] == 16
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| network |" in md and "## Accuracy across splits (headline)" in md and "Wilson" in md
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


# --- issue 11: validation classes, positives from other recordings, intervals across splits --------

VALIDATION = CLASSES[6:9]  # the checkpoint's validation classes: they chose its best weights


def test_regenerated_splits_never_test_the_checkpoints_validation_classes(version):
    sources, notes = regenerate_splits(version, TRAIN, validation_classes=VALIDATION, k=10, seed=0, n_classes=2)
    tests = [s.split.classes["test"] for s in sources]
    assert all(len(t) == 2 and not set(t) & (set(TRAIN) | set(VALIDATION)) for t in tests)
    assert set().union(*map(set, tests)) <= set(CLASSES[9:])
    assert all(s.split.classes["validation"] == sorted(VALIDATION) for s in sources)
    assert "3 of the 12 stored classes are neither among the checkpoint's 6 training classes" in notes[0]
    # Three unseen classes cannot make splits of four: refused, saying how many remain.
    with pytest.raises(EvaluationError, match=r"3 of the 12 stored classes .*\['10', '11', '12'\].*need at least 4"):
        regenerate_splits(version, TRAIN, validation_classes=VALIDATION, k=2, seed=0, n_classes=4)
    drawn, notes = regenerate_splits(version, TRAIN, validation_classes=VALIDATION, k=2, seed=0, n_classes=4,
                                     allow_overlap=True)
    assert "Drew from every stored class" in notes[0]


def test_explicit_split_with_validation_classes_is_refused_naming_them(version, tmp_path):
    meta = meta_for(version, validation_classes=VALIDATION)
    source = SplitSource(split_of(test=["07", "08", "10", "11"]), "x.parquet")
    with pytest.raises(EvaluationError, match=r"validation classes \['07', '08'\].*--allow-overlap"):
        evaluate_checkpoint(MeanEmbedder(), meta, version, [source], SETTINGS, checkpoint="c.pt")
    mixed = SplitSource(split_of(test=["03", "07", "10"]), "y.parquet")
    with pytest.raises(EvaluationError, match=r"training classes \['03'\]; validation classes \['07'\]"):
        evaluate_checkpoint(MeanEmbedder(), meta, version, [mixed], SETTINGS, checkpoint="c.pt")
    report = evaluate_checkpoint(MeanEmbedder(), meta, version, [mixed], SETTINGS, checkpoint="c.pt",
                                 allow_overlap=True)
    write_report(report, tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    split_id = report.runs[0].split_id
    assert data["overlap"] == {split_id: {"03": "training", "07": "validation"}}
    assert data["splits"][0]["overlap_with_validation"] == ["07"]
    assert data["splits"][0]["overlap_with_training"] == ["03"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "03 (training), 07 (validation)" in md and "not one-shot" in md


def test_positives_from_another_recording_are_recorded_in_the_report(tmp_path):
    classes = [f"k{i}" for i in range(8)]
    # Two recordings of 2 clips per class, except k7: all four clips cut from one recording.
    sources = {c: [f"{c}-a", f"{c}-a", f"{c}-b", f"{c}-b"] for c in classes[:7]} | {"k7": ["k7-a"] * 4}
    esc = open_version(make_synthetic_version(tmp_path / "store", dataset="esc50", classes=classes,
                                              clips_per_class=4, shape=(8, 10), seed=2, sources=sources))
    meta = meta_for(esc, training=classes[:3], dataset="esc50", validation_classes=[])
    split = Split("esc50", "file", None, {"train": classes[:3], "validation": [], "test": classes[3:]})
    report = evaluate_checkpoint(MeanEmbedder(), meta, esc, [SplitSource(split)], SETTINGS, checkpoint="c.pt")
    positives = report.to_dict()["positives"]
    assert positives["rule"] == "other_recording" and positives["applied"] is True
    assert positives["source_column"] == "src_file"
    # k7's 4 tasks had no other recording: counted, named, and said in the notes.
    assert positives["n_without_other_recording"] == 4 and positives["classes_without_other_recording"] == ["k7"]
    assert positives["n_positive_same_recording"] == 4
    assert any("4 of 20 tasks had no clip of the query's class from another recording (classes k7)" in n
               for n in report.notes)
    tasks = report.runs[0].evaluation.result.tasks
    other = ~tasks.no_other_recording
    assert not tasks.positive_same_recording[other].any()
    # --same-source-ok: the report's protocol, recorded as such.
    allowed = evaluate_checkpoint(MeanEmbedder(), meta, esc, [SplitSource(split)],
                                  dataclasses.replace(SETTINGS, same_source_ok=True), checkpoint="c.pt")
    assert allowed.to_dict()["positives"]["rule"] == "any_clip"
    assert allowed.to_dict()["settings"]["same_source_ok"] is True
    # AudioMNIST-like catalogs have no source column: behaviour kept, recorded as not applied.
    plain = evaluate_checkpoint(MeanEmbedder(), meta_for(version_of_plain(tmp_path)), version_of_plain(tmp_path),
                                [SplitSource(split_of(test=["07", "08", "09"]))], SETTINGS, checkpoint="c.pt")
    p = plain.to_dict()["positives"]
    assert p["applied"] is False and p["source_column"] is None and "not controlled" in p["description"]


def version_of_plain(tmp_path):
    return open_version(make_synthetic_version(tmp_path / "plain", classes=CLASSES, clips_per_class=4, shape=(8, 10),
                                               seed=0))


def test_headline_across_splits_is_the_mean_with_a_t_interval_next_to_the_pooled_wilson(version, tmp_path):
    from scipy import stats

    drawn, notes = regenerate_splits(version, TRAIN, k=4, seed=3, n_classes=3)
    noisy = dataclasses.replace(SETTINGS, runs=6)
    report = evaluate_checkpoint(NoisyEmbedder(), meta_for(version), version, drawn, noisy, checkpoint="c.pt",
                                 notes=notes)
    accs = np.array([r.evaluation.result.accuracy for r in report.runs])
    assert accs.std() > 0  # the splits differ
    half = stats.t.ppf(0.975, df=3) * accs.std(ddof=1) / np.sqrt(4)
    write_report(report, tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    head = data["headline"]
    assert head["kind"] == "mean_over_splits" and head["n_splits"] == 4
    assert head["accuracy"] == pytest.approx(accs.mean()) and data["accuracy"] == head["accuracy"]
    assert head["ci95"] == pytest.approx([accs.mean() - half, accs.mean() + half])
    assert data["ci95"] == head["ci95"] and "t-interval" in data["ci_method"]
    assert (head["sd"], head["min"], head["max"]) == pytest.approx((accs.std(ddof=1), accs.min(), accs.max()))
    pooled = data["pooled"]
    n_correct = sum(r.evaluation.result.n_correct for r in report.runs)
    assert pooled["ci95"] == pytest.approx(list(wilson_interval(n_correct, 4 * 18)))
    assert pooled["ci_method"].startswith("pooled")
    assert data["distribution"]["accuracy"]["ci95"] == head["ci95"]
    assert [s["ci95"] for s in data["splits"]] == [list(r.evaluation.result.ci95) for r in report.runs]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Accuracy across splits (headline)" in md and "95% t-interval" in md
    assert "## Pooled over all splits' tasks (not the headline)" in md and "pooled Wilson" in md
    # One split: the headline is that split's Wilson interval.
    single = evaluate_checkpoint(NoisyEmbedder(), meta_for(version), version, drawn[:1], noisy, checkpoint="c.pt")
    assert single.headline()["kind"] == "single_split"
    assert single.headline()["ci95"] == list(single.runs[0].evaluation.result.ci95)


def test_t_interval_matches_a_known_value():
    from siamese_audio.evaluation.metrics import t_interval

    low, high = t_interval([0.5, 0.7, 0.9])  # mean 0.7, sd 0.2, t(0.975, 2) = 4.3027
    assert low == pytest.approx(0.7 - 4.302653 * 0.2 / 3 ** 0.5) and high == pytest.approx(0.7 + 4.302653 * 0.2 / 3 ** 0.5)
    assert t_interval([0.4]) is None


class NoisyEmbedder:
    """Mean spectrum plus seeded noise in the score: accuracy varies between splits."""

    def embed(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=2)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = -((a - b) ** 2).sum(axis=1)
        noise = np.random.default_rng(int(abs(a[:, 0].sum() * 1000)) % 2**32).normal(0, 60, size=d.shape)
        return (d + noise).astype(np.float32)

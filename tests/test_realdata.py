"""Integration on the real samples in ../shared/data (skipped when absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import librosa
import numpy as np
import pytest

from siamese_audio.features.config import preset
from siamese_audio.features.store import open_version
from siamese_audio.manifests.dummies import write_esc50_csv

pytestmark = pytest.mark.realdata


def _reference(path: Path, dataset: str, pad: int, crop: bool = False) -> np.ndarray:
    cfg = preset(dataset)
    y, _ = librosa.load(path, sr=cfg.sample_rate, res_type="scipy")
    y = y[: cfg.n_samples] if crop else y
    y = np.pad(y, (pad, cfg.n_samples - len(y) - pad))
    S = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                       hop_length=cfg.hop_length, n_mels=cfg.n_mels)
    return librosa.power_to_db(S, ref=1.0)


def test_real_audiomnist_matches_the_report_pipeline(shared_data, tmp_path, run_build):
    result = run_build("audiomnist", shared_data / "audiomnist", tmp_path / "s", clips_per_shard=32)
    v = open_version(result.path)
    assert result.n_stored == 115 and result.n_rejected == 0
    assert v.shape == (224, 224)
    assert v.stored()["class"].value_counts()[["04", "27"]].tolist() == [50, 50]
    for rec in v.stored().sample(4, random_state=0).itertuples():
        ref = _reference(shared_data / "audiomnist" / rec.source_path, "audiomnist", rec.pad_offset)
        assert np.abs(v.read([rec.row])[0] - ref).max() < 0.05


def test_real_esc50_matches_the_report_pipeline(shared_data, tmp_path, run_build):
    result = run_build("esc50", shared_data / "esc50", tmp_path / "s", clips_per_shard=16)
    v = open_version(result.path)
    assert result.n_stored == 100 and len(v.classes()) == 50
    for rec in v.stored().sample(3, random_state=0).itertuples():
        ref = _reference(shared_data / "esc50" / rec.source_path, "esc50", rec.pad_offset)
        assert np.abs(v.read([rec.row])[0] - ref).max() < 0.05


def _v1_as_release_layout(shared_data: Path, root: Path) -> Path:
    """The odd ESC-50 v1 .ogg files (stereo, 48 kHz, 7.24 s, 3.64 s) placed in the release layout."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = []
    for i, path in enumerate(sorted((shared_data / "esc50-v1-odd").rglob("*.ogg"))):
        category = path.parent.name.split(" - ", 1)[1].lower().replace(" ", "_")
        name = f"1-{700 + i}-A-{i}.ogg"
        shutil.copy(path, root / "audio" / name)
        rows.append({"filename": name, "fold": 1, "target": i, "category": category, "esc10": "False",
                     "src_file": str(700 + i), "take": "A"})
    write_esc50_csv(root / "meta" / "esc50.csv", rows)
    return root


def test_odd_esc50_v1_files_are_decoded_resampled_and_long_ones_handled(shared_data, tmp_path, run_build):
    root = _v1_as_release_layout(shared_data, tmp_path / "v1")
    strict = run_build("esc50", root, tmp_path / "s", clips_per_shard=2)
    long = [r for r in strict.rejected if "longer than the preset" in r["reason"]]
    assert long, "the 7.24 s clip should be rejected by default"
    cropped = run_build("esc50", root, tmp_path / "s", clips_per_shard=2, crop_long=True)
    v = open_version(cropped.path)
    cat = v.stored()
    assert cropped.n_rejected == 0 and len(cat) == 6
    assert {48_000, 44_100} <= set(cat["sample_rate"]) and 2 in set(cat["channels"])
    for rec in cat.itertuples():
        ref = _reference(root / rec.source_path, "esc50", rec.pad_offset, crop=bool(rec.cropped))
        assert np.abs(v.read([rec.row])[0] - ref).max() < 0.05, rec.source_path


def test_real_esc50_positives_avoid_the_querys_recording(shared_data, tmp_path, run_build):
    """On the real catalog (src_file), tasks of classes whose two clips share a recording are counted, not hidden."""
    import csv
    from collections import defaultdict

    from siamese_audio.evaluation.tasks import evaluation_tasks
    from siamese_audio.manifests.split_catalog import clip_sources

    result = run_build("esc50", shared_data / "esc50", tmp_path / "s", clips_per_shard=16)
    v = open_version(result.path)
    recordings = defaultdict(set)
    with open(shared_data / "esc50" / "meta" / "esc50.csv", newline="") as f:
        for row in csv.DictReader(f):
            recordings[row["category"]].add(row["src_file"])
    one_recording = sorted(c for c, s in recordings.items() if len(s) == 1)
    stored = v.stored()
    rows = {c: np.sort(stored.loc[stored["class"] == c, "row"].to_numpy()) for c in sorted(recordings)}
    sources = clip_sources(v, rows)
    assert sources is not None and sorted(set(sources["hand_saw"])) == ["102844"]
    tasks = evaluation_tasks(rows, ways=5, runs=4, seed=0, class_sources=sources)
    summary = tasks.positives_summary()
    assert summary["applied"] and summary["classes_without_other_recording"] == one_recording
    assert summary["n_without_other_recording"] == summary["n_positive_same_recording"] == 4 * len(one_recording)

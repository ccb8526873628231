"""Every kind of bad input: a clear reason naming the file, the rest still built."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from siamese_audio.errors import AudioDecodeError, DatasetLayoutError
from siamese_audio.features.store import open_version
from siamese_audio.manifests.dummies import make_audiomnist, make_esc50, synth_clip, write_esc50_csv


def rejected(result) -> dict[str, str]:
    return {r["source_path"] or r["clip_id"]: r["reason"] for r in result.rejected}


@pytest.fixture
def messy_audiomnist(tmp_path: Path) -> Path:
    root = make_audiomnist(tmp_path / "am", speakers=("01", "02", "03"), digits=2, reps=2)
    d = root / "data"
    (d / "01" / "0_01_0.wav").write_bytes(b"")                                   # empty file
    good = (d / "01" / "1_01_0.wav").read_bytes()
    (d / "01" / "1_01_0.wav").write_bytes(good[: len(good) // 3])               # truncated
    (d / "01" / "1_01_1.wav").write_bytes(good[:30])                            # corrupt header
    (d / "02" / "0_02_0.wav").write_bytes(b"this is not audio at all" * 50)    # not audio
    y = synth_clip(np.random.default_rng(0), class_index=1, sr=48_000, seconds=0.5)
    y[100] = np.nan
    sf.write(d / "02" / "1_02_0.wav", y, 48_000, subtype="FLOAT")               # NaN samples
    (d / "03" / "0_03_9.wav").mkdir()                                           # unreadable
    (d / "03" / "hello.wav").write_bytes(good)                                  # bad name
    (d / "03" / "0_04_0.wav").write_bytes(good)                                 # wrong folder
    shutil.copy(d / "03" / "1_03_1.wav", d / "03" / "1_03_1.flac")              # duplicate id
    long = synth_clip(np.random.default_rng(1), class_index=2, sr=48_000, seconds=1.5)
    sf.write(d / "03" / "1_03_5.wav", long, 48_000, subtype="PCM_16")           # too long
    return root


def test_bad_audiomnist_files_are_rejected_with_reasons_and_the_rest_built(messy_audiomnist, tmp_path, run_build):
    result = run_build("audiomnist", messy_audiomnist, tmp_path / "s")
    reasons = rejected(result)
    assert "empty file" in reasons["data/01/0_01_0.wav"]
    assert "truncated: the WAV header declares" in reasons["data/01/1_01_0.wav"]
    assert "not decodable" in reasons["data/01/1_01_1.wav"]
    assert "not decodable" in reasons["data/02/0_02_0.wav"]
    assert "NaN or Inf" in reasons["data/02/1_02_0.wav"]
    assert "cannot read" in reasons["data/03/0_03_9.wav"]
    assert "does not fit the layout" in reasons["data/03/hello.wav"]
    assert "speaker 04 in the name but the file is in folder 03" in reasons["data/03/0_04_0.wav"]
    assert "duplicate clip id" in reasons["data/03/1_03_1.wav"]
    assert "longer than the preset" in reasons["data/03/1_03_5.wav"]
    for path, reason in reasons.items():
        if "fit the layout" not in reason and "duplicate" not in reason and "folder" not in reason:
            assert path.split("/")[-1] in reason, reason  # decode reasons name the file
    v = open_version(result.path)
    cat = v.catalog
    assert result.n_stored == 7 and (cat["status"] == "stored").sum() == 7
    assert (cat.loc[cat["status"] == "rejected", "row"] == -1).all()
    assert np.isfinite(v.read(v.stored()["row"])).all()


def test_crop_long_keeps_the_start_and_records_it(messy_audiomnist, tmp_path, run_build):
    result = run_build("audiomnist", messy_audiomnist, tmp_path / "s", crop_long=True)
    cat = open_version(result.path).catalog.set_index("clip_id")
    assert cat.loc["1_03_5", "status"] == "stored" and bool(cat.loc["1_03_5", "cropped"])
    assert "cropped from 66150 to 44100" in cat.loc["1_03_5", "reason"]


def test_strict_fails_before_anything_is_written(messy_audiomnist, tmp_path, run_build):
    with pytest.raises(AudioDecodeError, match="--strict: .* would be rejected; nothing was written") as err:
        run_build("audiomnist", messy_audiomnist, tmp_path / "s", strict=True)
    assert "0_01_0.wav" in str(err.value) and "NaN or Inf" in str(err.value)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.json"))


def test_class_with_fewer_than_two_clips_warns(tmp_path, run_build):
    root = make_audiomnist(tmp_path / "am", speakers=("01", "02"), digits=1, reps=2)
    (root / "data" / "02" / "0_02_1.wav").unlink()
    result = run_build("audiomnist", root, tmp_path / "s")
    assert result.warnings == ["class '02' has 1 stored clip(s); one-shot needs at least 2"]


def test_empty_dataset_is_an_error(tmp_path, run_build):
    (tmp_path / "am" / "data" / "01").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="Found none"):
        run_build("audiomnist", tmp_path / "am", tmp_path / "s")
    with pytest.raises(DatasetLayoutError, match="Found no folder"):
        run_build("audiomnist", tmp_path, tmp_path / "s")


def test_all_clips_rejected_is_an_error_and_keeps_nothing(tmp_path, run_build):
    root = tmp_path / "am"
    (root / "data" / "01").mkdir(parents=True)
    (root / "data" / "01" / "0_01_0.wav").write_bytes(b"junk" * 100)
    with pytest.raises(AudioDecodeError, match="every clip was rejected"):
        run_build("audiomnist", root, tmp_path / "s")
    assert not any(p.is_dir() and not p.name.startswith(".") for p in (tmp_path / "s" / "audiomnist").iterdir())


def test_malformed_audiomnist_meta_is_an_error(tmp_path, run_build):
    root = make_audiomnist(tmp_path / "am", speakers=("01",), digits=1, reps=2)
    (root / "data" / "audioMNIST_meta.txt").write_text("{not json")
    with pytest.raises(DatasetLayoutError, match="audioMNIST_meta.txt: expected AudioMNIST's meta file"):
        run_build("audiomnist", root, tmp_path / "s")


def test_bad_esc50_rows_and_files(tmp_path, run_build):
    root = make_esc50(tmp_path / "esc", classes=("dog", "rain"), clips_per_class=3, seconds=1.0)
    csv_path = root / "meta" / "esc50.csv"
    import csv
    rows = list(csv.DictReader(open(csv_path)))
    (root / "audio" / rows[0]["filename"]).unlink()                                      # row without file
    shutil.copy(root / "audio" / rows[1]["filename"], root / "audio" / "5-999999-A-1.wav")  # file without row
    rows.append(dict(rows[2]))                                                           # duplicate row
    rows.append({**rows[3], "filename": "5-888-A-1.wav", "fold": "five"})              # bad value
    shutil.copy(root / "audio" / rows[3]["filename"], root / "audio" / "5-888-A-1.wav")
    (root / "audio" / "notes.txt").write_text("hello")                                  # bad name
    write_esc50_csv(csv_path, rows)
    result = run_build("esc50", root, tmp_path / "s")
    reasons = rejected(result)
    assert "lists it but there is no such file" in reasons[f"audio/{rows[0]['filename']}"]
    assert "no row for this file in meta/esc50.csv" in reasons["audio/5-999999-A-1.wav"]
    assert any("duplicate of line" in r for r in reasons.values())
    assert any("expected integer fold and target" in r for r in reasons.values())
    assert "does not fit the layout" in reasons["audio/notes.txt"]
    assert result.n_stored == 5


@pytest.mark.parametrize("content,match", [
    (None, "meta/esc50.csv. It is missing"),
    ("filename,fold\n1-1-A-0.wav,1\n", r"Missing \['target', 'category'"),
])
def test_missing_or_malformed_esc50_csv_is_an_error(tmp_path, run_build, content, match):
    root = make_esc50(tmp_path / "esc", classes=("dog",), clips_per_class=2, seconds=1.0)
    if content is None:
        (root / "meta" / "esc50.csv").unlink()
    else:
        (root / "meta" / "esc50.csv").write_text(content)
    with pytest.raises(DatasetLayoutError, match=match):
        run_build("esc50", root, tmp_path / "s")


def test_stereo_and_other_rates_are_downmixed_and_resampled(tmp_path, run_build):
    import librosa

    root = make_esc50(tmp_path / "esc", classes=("dog", "rain"), clips_per_class=2, seconds=1.0)
    rng = np.random.default_rng(3)
    name = "3-555-A-0.wav"
    y = synth_clip(rng, class_index=0, sr=48_000, seconds=3.6, channels=2)
    sf.write(root / "audio" / name, y, 48_000, subtype="PCM_16")
    import csv
    rows = list(csv.DictReader(open(root / "meta" / "esc50.csv")))
    rows.append({**rows[0], "filename": name, "src_file": "555"})
    write_esc50_csv(root / "meta" / "esc50.csv", rows)
    v = open_version(run_build("esc50", root, tmp_path / "s").path)
    rec = v.catalog.set_index("clip_id").loc["3-555-A-0"]
    assert rec["status"] == "stored" and rec["sample_rate"] == 48_000 and rec["channels"] == 2
    ref, _ = librosa.load(root / "audio" / name, sr=44_100, res_type="scipy")
    ref = np.pad(ref, (rec["pad_offset"], 220_500 - len(ref) - rec["pad_offset"]))
    S = librosa.power_to_db(librosa.feature.melspectrogram(y=ref, sr=44_100, n_fft=2048, hop_length=512,
                                                           n_mels=128), ref=1.0)
    assert np.abs(v.read([rec["row"]])[0] - S).max() < 0.05


def test_cli_reports_bad_input_on_stderr_with_nonzero_exit(tmp_path, capsys):
    from siamese_audio.cli import main

    code = main(["build", "esc50", str(tmp_path / "absent"), "--store", str(tmp_path / "s"), "--json"])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "does not exist" in captured.err

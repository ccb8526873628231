"""The feature build end to end: values, determinism, sealing, verify, resume, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import pytest

from siamese_audio.cli import main
from siamese_audio.errors import StoreError
from siamese_audio.features import store
from siamese_audio.features.config import preset
from siamese_audio.features.store import open_version
from tests.conftest import tree_bytes


def reference_features(path: Path, dataset: str, pad: int) -> np.ndarray:
    """The report's way: librosa.load at the preset rate (scipy resampler), pad, log-mel."""
    cfg = preset(dataset)
    y, _ = librosa.load(path, sr=cfg.sample_rate, res_type="scipy")
    y = np.pad(y, (pad, cfg.n_samples - len(y) - pad))
    S = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                       hop_length=cfg.hop_length, n_mels=cfg.n_mels)
    return librosa.power_to_db(S, ref=1.0)


@pytest.mark.parametrize("dataset", ["audiomnist", "esc50"])
def test_build_stores_librosa_features_and_a_full_catalog(dataset, audiomnist_dir, esc50_dir, tmp_path, run_build):
    source = audiomnist_dir if dataset == "audiomnist" else esc50_dir
    result = run_build(dataset, source, tmp_path / "store")
    assert result.path == tmp_path.resolve() / "store" / dataset / result.version_id
    assert result.n_rejected == 0
    assert result.n_stored == (12 if dataset == "audiomnist" else 6)
    v = open_version(result.path)
    assert v.version_id == result.version_id and v.dataset == dataset
    assert v.shape == preset(dataset).shape
    cat = v.catalog
    expected_cols = {"row", "clip_id", "class", "source_path", "source_hash", "sample_rate", "n_samples",
                     "pad_offset", "status", "reason"}
    assert expected_cols <= set(cat.columns)
    if dataset == "audiomnist":
        assert {"digit", "rep"} <= set(cat.columns)
        assert sorted(cat["class"].unique()) == ["01", "02", "03"]
        assert (cat["sample_rate"] == 48_000).all()
    else:
        assert {"fold", "target", "esc10", "src_file", "take"} <= set(cat.columns)
    for rec in cat.head(3).itertuples():
        ours = v.read([rec.row])[0]
        ref = reference_features(source / rec.source_path, dataset, rec.pad_offset)
        assert np.abs(ours - ref).max() < 0.05, rec.clip_id
    assert v.verify() == []


def test_same_inputs_give_same_id_and_bytes_whatever_the_workers(audiomnist_dir, tmp_path, run_build):
    a = run_build("audiomnist", audiomnist_dir, tmp_path / "a", workers=1)
    b = run_build("audiomnist", audiomnist_dir, tmp_path / "b", workers=2)
    c = run_build("audiomnist", audiomnist_dir, tmp_path / "c")
    assert a.version_id == b.version_id == c.version_id
    assert tree_bytes(a.path) == tree_bytes(b.path) == tree_bytes(c.path)


def test_version_id_changes_with_seed_and_source_bytes(audiomnist_dir, tmp_path, run_build):
    a = run_build("audiomnist", audiomnist_dir, tmp_path / "s")
    b = run_build("audiomnist", audiomnist_dir, tmp_path / "s", seed=1)
    assert a.version_id != b.version_id
    pads_a = open_version(a.path).catalog.set_index("clip_id")["pad_offset"]
    pads_b = open_version(b.path).catalog.set_index("clip_id")["pad_offset"]
    assert (pads_a != pads_b).any()
    victim = audiomnist_dir / "data" / "01" / "0_01_0.wav"
    y, sr = librosa.load(victim, sr=None)
    import soundfile as sf
    sf.write(victim, y * 0.5, sr, subtype="PCM_16")
    c = run_build("audiomnist", audiomnist_dir, tmp_path / "s")
    assert c.version_id not in (a.version_id, b.version_id)


def test_building_a_sealed_version_again_is_a_noop(audiomnist_dir, tmp_path, run_build, capsys):
    from siamese_audio.logs import configure

    a = run_build("audiomnist", audiomnist_dir, tmp_path / "s")
    before = tree_bytes(a.path)
    configure()  # the tool's messages on (captured) stderr, as the console script has them
    again = run_build("audiomnist", audiomnist_dir, tmp_path / "s")
    assert again.already_sealed and again.version_id == a.version_id
    assert "already built and sealed" in capsys.readouterr().err
    assert tree_bytes(a.path) == before


def test_sealed_version_is_read_only_and_verify_names_changes(audiomnist_dir, tmp_path, run_build):
    a = run_build("audiomnist", audiomnist_dir, tmp_path / "s")
    shard = store.shard_path(a.path, 0)
    assert not os.access(shard, os.W_OK) or os.geteuid() == 0
    assert not (shard.stat().st_mode & 0o222)
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.chmod(0o644)
    shard.write_bytes(bytes(data))
    problems = store.verify(a.path)
    assert problems == ["logmel/c/0/0/0: content changed (checksum differs)"]
    (a.path / "catalog.parquet").chmod(0o644)
    (a.path / "catalog.parquet").unlink()
    (a.path / "extra.txt").write_text("x")
    problems = store.verify(a.path)
    assert "catalog.parquet: missing" in problems
    assert "extra.txt: not part of the sealed version" in problems
    with pytest.raises(StoreError, match=r"the sealed version was altered \(catalog.parquet: missing"):
        open_version(a.path)


def test_readers_refuse_an_unsealed_version(audiomnist_dir, tmp_path, run_build):
    a = run_build("audiomnist", audiomnist_dir, tmp_path / "s")
    (a.path / store.SEAL).unlink()
    with pytest.raises(StoreError, match="not sealed"):
        open_version(a.path)
    with pytest.raises(StoreError, match="does not exist"):
        open_version(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="expected a feature version directory"):
        open_version(tmp_path)


def test_read_returns_requested_rows_in_order(audiomnist_dir, tmp_path, run_build):
    v = open_version(run_build("audiomnist", audiomnist_dir, tmp_path / "s").path)
    whole = v.read(np.arange(v.n_rows))
    np.testing.assert_array_equal(v.read([5, 0, 5]), whole[[5, 0, 5]])
    with pytest.raises(StoreError, match="expected rows in 0..11"):
        v.read([12])


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "siamese_audio.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[1])


@pytest.mark.slow
def test_build_killed_with_sigkill_resumes_to_identical_bytes(tmp_path, run_build):
    from siamese_audio.manifests.dummies import make_audiomnist

    src = make_audiomnist(tmp_path / "am", speakers=("01", "02", "03", "04"), digits=6, reps=4)
    reference = run_build("audiomnist", src, tmp_path / "ref", clips_per_shard=1)
    args = ("build", "audiomnist", str(src), "--store", str(tmp_path / "s"), "--workers", "1",
            "--clips-per-shard", "1", "--no-progress")
    proc = _cli(*args)
    markers = tmp_path / "s" / "audiomnist" / reference.version_id / store.MARKERS
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if markers.is_dir() and len(list(markers.glob("*.json"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = tmp_path / "s" / "audiomnist" / reference.version_id
    assert not store.is_sealed(partial)
    with pytest.raises(StoreError, match="not sealed"):
        open_version(partial)
    resumed = _cli(*args, "--json")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "Resuming feature version" in err
    assert json.loads(out)["version_id"] == reference.version_id
    assert tree_bytes(partial) == tree_bytes(reference.path)


def test_cli_build_json_inspect_and_verify(audiomnist_dir, tmp_path, scheduler_address, capsys):
    code = main(["build", "audiomnist", str(audiomnist_dir), "--store", str(tmp_path / "s"),
                 "--scheduler", scheduler_address, "--clips-per-shard", "4", "--json"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    info = json.loads(out[0])
    assert {"version_id", "path", "n_stored", "n_rejected"} <= set(info)
    assert info["n_stored"] == 12 and info["n_rejected"] == 0
    assert main(["inspect", info["path"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["sealed"] and shown["class_counts"] == {"01": 4, "02": 4, "03": 4}
    assert shown["feature_config"]["hop_length"] == 197
    assert main(["verify", info["path"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "expected a feature version directory" in capsys.readouterr().err

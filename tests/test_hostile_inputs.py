"""Issue 15, items 5-9: inputs that hung, exhausted memory or crashed a whole build are rejected by name.

One build per dataset layout holds every kind; the rest of the dataset is still built and every
stored spectrogram is finite. A watchdog ends the test run (with tracebacks) should a build hang.
"""

from __future__ import annotations

import csv
import faulthandler
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from siamese_audio.features.store import open_version
from siamese_audio.manifests.dummies import make_audiomnist, make_esc50, synth_clip, write_esc50_csv
from tests.hostile import wav_bytes

HANG_LIMIT_S = 300


@pytest.fixture(scope="module")
def watchdog():
    """A build that hangs (a FIFO opened for reading) must not hang CI: dump tracebacks and exit."""
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _bomb() -> bytes:
    """An 80 KB PCM16 WAV whose header says 1 Hz: 1.76e9 samples once resampled to 44.1 kHz (6.57 GiB)."""
    return wav_bytes(rate=1, data=np.zeros(40_000, "<i2").tobytes())


def _long() -> bytes:
    """A rate in bounds, a length that is not: 400,000 frames at 1 kHz are 17.6 M samples at 44.1 kHz."""
    return wav_bytes(rate=1_000, data=np.zeros(400_000, "<i2").tobytes())


def _huge_floats(sr: int) -> np.ndarray:
    return synth_clip(np.random.default_rng(5), class_index=1, sr=sr, seconds=0.5) * np.float32(1e20)


@pytest.fixture(scope="module")
def audiomnist(tmp_path_factory, scheduler_address, watchdog):
    from siamese_audio.features.store import StoreLayout
    from siamese_audio.pipeline.build import BuildConfig, build

    tmp = tmp_path_factory.mktemp("am")
    root = make_audiomnist(tmp / "am", speakers=("01", "02", "03"), digits=2, reps=2)
    d = root / "data"
    os.mkfifo(d / "01" / "0_01_7.wav")                                             # 5: a FIFO
    os.symlink("/dev/zero", d / "02" / "0_02_7.wav")                               # 5: /dev/zero
    (d / "03" / "0_03_7.wav").write_bytes(_bomb())                                 # 6: rate bomb
    (d / "03" / "1_03_7.wav").write_bytes(_long())                                 # 6: length bomb
    sf.write(d / "01" / "1_01_7.wav", _huge_floats(48_000), 48_000, subtype="FLOAT")  # 7: 1e20 samples
    (d / "02" / "1_02_99999999999999999999.wav").write_bytes((d / "02" / "1_02_0.wav").read_bytes())  # 8
    (d / "01" / "0_01_0\n.wav").write_bytes((d / "01" / "0_01_1.wav").read_bytes())  # 9: newline
    (d / "01" / os.fsdecode(b"0_01_\xff.wav")).write_bytes(b"x")                   # a name that is not UTF-8
    result = build(BuildConfig(dataset="audiomnist", source_dir=root, store_root=tmp / "s", progress=False,
                               scheduler=scheduler_address, layout=StoreLayout(clips_per_shard=4)))
    return result, {r["source_path"]: r["reason"] for r in result.rejected}


def test_fifo_and_device_named_wav_are_rejected_by_name_without_being_opened(audiomnist):
    result, reasons = audiomnist
    assert "0_01_7.wav: cannot read: not a regular file (a FIFO (named pipe))" in reasons["data/01/0_01_7.wav"]
    assert "0_02_7.wav: cannot read: not a regular file (a character device)" in reasons["data/02/0_02_7.wav"]


def test_sample_rate_and_length_bombs_are_rejected_before_decoding(audiomnist):
    result, reasons = audiomnist
    assert "0_03_7.wav: the header declares a sample rate of 1 Hz; expected 1000..768000 Hz" \
        in reasons["data/03/0_03_7.wav"]
    assert "1_03_7.wav: 400000 frames at 1000 Hz would be 17640000 samples at 44100 Hz; expected at most" \
        in reasons["data/03/1_03_7.wav"]


def test_huge_float_samples_are_rejected_and_every_stored_clip_is_finite(audiomnist):
    result, reasons = audiomnist
    assert "1_01_7.wav: its log-mel is not finite (peak sample" in reasons["data/01/1_01_7.wav"]
    version = open_version(result.path)
    assert np.isfinite(version.read(version.stored()["row"])).all()


def test_a_number_past_int64_in_a_file_name_is_a_layout_rejection(audiomnist):
    result, reasons = audiomnist
    assert reasons["data/02/1_02_99999999999999999999.wav"] == \
        "repetition 99999999999999999999 in the name does not fit a 64-bit integer"


def test_names_ending_in_a_newline_or_not_utf8_are_rejected_and_the_rest_built(audiomnist):
    result, reasons = audiomnist
    assert reasons["data/01/0_01_0\\n.wav"] == "the file name holds control or non-printable characters"
    assert reasons["data/01/0_01_\\xff.wav"] == "the file name is not valid UTF-8"
    catalog = open_version(result.path).catalog
    assert sorted(catalog.loc[catalog["status"] == "stored", "clip_id"]) == sorted(
        f"{d}_{s}_{r}" for d in range(2) for s in ("01", "02", "03") for r in range(2))
    assert result.n_stored == 12 and result.n_rejected == 8


@pytest.fixture(scope="module")
def esc50(tmp_path_factory, scheduler_address, watchdog):
    from siamese_audio.features.store import StoreLayout
    from siamese_audio.pipeline.build import BuildConfig, build

    tmp = tmp_path_factory.mktemp("esc")
    root = make_esc50(tmp / "esc", classes=("dog", "rain"), clips_per_class=2, seconds=1.0)
    rows = list(csv.DictReader(open(root / "meta" / "esc50.csv")))
    good = (root / "audio" / rows[0]["filename"]).read_bytes()
    base = {**rows[0], "category": "dog", "target": "0"}
    extra = {
        "5-900-A-0.wav": ({"fold": "99999999999999999999"}, None),           # 8: a row with no file
        "5-901-A-0.wav": ({"target": "-99999999999999999999"}, good),        # 8: a row with a file
        "5-902-A-0.wav": ({}, "fifo"),                                       # 5
        "5-903-A-0.wav": ({}, "zero"),                                       # 5
        "5-904-A-0.wav": ({}, _bomb()),                                      # 6
        "5-905-A-0.wav": ({}, _huge_floats(44_100)),                         # 7
        "5-906-A-0\n.wav": ({}, good),                                       # 9
    }
    for name, (change, content) in extra.items():
        rows.append({**base, "filename": name, "src_file": "9", **change})
        path = root / "audio" / name
        if isinstance(content, str) and content == "fifo":
            os.mkfifo(path)
        elif isinstance(content, str) and content == "zero":
            os.symlink("/dev/zero", path)
        elif isinstance(content, np.ndarray):
            sf.write(path, content, 44_100, subtype="FLOAT")
        elif content is not None:
            path.write_bytes(content)
    write_esc50_csv(root / "meta" / "esc50.csv", rows)
    result = build(BuildConfig(dataset="esc50", source_dir=root, store_root=tmp / "s", progress=False,
                               scheduler=scheduler_address, layout=StoreLayout(clips_per_shard=4)))
    return result, [f"{r['source_path']} | {r['clip_id']} | {r['reason']}" for r in result.rejected]


def _one(reasons: list[str], text: str) -> str:
    found = [r for r in reasons if text in r]
    assert len(found) == 1, (text, reasons)
    return found[0]


def test_esc50_rows_with_numbers_past_int64_are_rejected_up_front(esc50):
    result, reasons = esc50
    _one(reasons, "5-900-A-0 | esc50.csv line 6: expected integer fold and target within 64 bits "
                  "(got fold '99999999999999999999', target '0')")
    _one(reasons, "5-901-A-0 | esc50.csv line 7: expected integer fold and target within 64 bits")
    assert "audio/5-901-A-0.wav" not in "".join(r.split(" | ")[0] for r in reasons)  # its file: no row to use


def test_esc50_hostile_files_are_rejected_by_name(esc50):
    result, reasons = esc50
    _one(reasons, "audio/5-902-A-0.wav | 5-902-A-0 | ")
    assert "not a regular file (a FIFO (named pipe))" in _one(reasons, "audio/5-902-A-0.wav")
    assert "not a regular file (a character device)" in _one(reasons, "audio/5-903-A-0.wav")
    assert "sample rate of 1 Hz" in _one(reasons, "audio/5-904-A-0.wav")
    assert "its log-mel is not finite" in _one(reasons, "audio/5-905-A-0.wav")
    assert "control or non-printable" in _one(reasons, "audio/5-906-A-0\\n.wav")
    assert result.n_stored == 4
    version = open_version(result.path)
    assert np.isfinite(version.read(version.stored()["row"])).all()


def test_hashing_refuses_a_fifo_without_blocking(tmp_path):
    from siamese_audio.files import content_hash

    os.mkfifo(tmp_path / "pipe.wav")
    with pytest.raises(OSError, match="not a regular file"):
        content_hash(tmp_path / "pipe.wav")
    with pytest.raises(OSError, match="not a regular file"):
        content_hash(Path("/dev/zero"))

"""The pure transforms against librosa's own functions."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from siamese_audio.errors import FeatureConfigError
from siamese_audio.features.config import PRESETS, FeatureConfig, preset
from siamese_audio.features.transform import LogMel, logmel, pad_offset, pad_to, resample, to_mono


def librosa_logmel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    S = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                       hop_length=cfg.hop_length, n_mels=cfg.n_mels)
    return librosa.power_to_db(S, ref=1.0)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("kind", ["noise", "tone-with-silence", "quiet"])
def test_logmel_matches_librosa_within_0_05_db(name, kind):
    cfg = preset(name)
    rng = np.random.default_rng(1)
    n = cfg.n_samples
    if kind == "noise":
        y = rng.standard_normal(n).astype(np.float32) * 0.1
    elif kind == "tone-with-silence":
        y = np.zeros(n, np.float32)
        t = np.arange(n // 3) / cfg.sample_rate
        y[n // 3 : n // 3 + t.size] = 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t)
    else:
        y = (1e-4 * rng.standard_normal(n)).astype(np.float32)
    ours = logmel(y, cfg)
    ref = librosa_logmel(y, cfg)
    assert ours.shape == ref.shape == cfg.shape
    assert ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 0.05


@pytest.mark.parametrize("power", [1.0, 1.5])
def test_power_other_than_2_matches_librosa(power):
    import dataclasses

    cfg = dataclasses.replace(preset("esc50"), power=power)
    y = (np.random.default_rng(3).standard_normal(cfg.n_samples) * 0.1).astype(np.float32)
    S = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                       n_mels=cfg.n_mels, power=power)
    ref = librosa.power_to_db(S, ref=1.0)
    ours = logmel(y, cfg)
    assert np.abs(ours - ref).max() < 0.05
    assert np.abs(ours - logmel(y, preset("esc50"))).max() > 1.0  # the field is read


@pytest.mark.parametrize("field, value", [("power", 0), ("power", -1.0), ("power", float("nan")), ("power", True),
                                          ("top_db", 0), ("top_db", "80")])
def test_bad_power_or_top_db_is_refused(field, value):
    import dataclasses

    with pytest.raises(FeatureConfigError, match=f"expected {field} to be a positive number"):
        dataclasses.replace(preset("esc50"), **{field: value})


def test_preset_shapes_are_the_authors():
    assert preset("audiomnist").shape == (224, 224)
    assert preset("esc50").shape == (128, 431)


def test_logmel_extractor_reuses_buffers_without_leaking_state():
    cfg = preset("esc50")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(cfg.n_samples).astype(np.float32) for _ in range(2))
    extract = LogMel(cfg)
    first = extract(a)
    extract(b)
    np.testing.assert_array_equal(extract(a), first)


@pytest.mark.parametrize("n", [40_000, 39_989, 12_345])
def test_resample_equals_librosa_scipy(n):
    y = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    ours = resample(y, orig_sr=48_000, target_sr=44_100)
    ref = librosa.resample(y, orig_sr=48_000, target_sr=44_100, res_type="scipy")
    np.testing.assert_array_equal(ours, ref)


def test_to_mono_averages_channels_like_librosa():
    y = np.random.default_rng(0).standard_normal((1000, 2)).astype(np.float32)
    np.testing.assert_array_equal(to_mono(y), librosa.to_mono(y.T))


def test_pad_offset_depends_only_on_seed_and_clip():
    a = pad_offset(seed=0, clip_id="0_01_0", n=30_000, target=44_100)
    assert a == pad_offset(seed=0, clip_id="0_01_0", n=30_000, target=44_100)
    assert 0 <= a <= 14_100
    offsets = {pad_offset(seed=s, clip_id="0_01_0", n=30_000, target=44_100) for s in range(20)}
    assert len(offsets) > 15
    assert pad_offset(seed=0, clip_id="x", n=44_100, target=44_100) == 0


def test_pad_to_places_clip_at_offset():
    y = np.ones(3, np.float32)
    np.testing.assert_array_equal(pad_to(y, target=6, offset=2), [0, 0, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="at most 6 samples"):
        pad_to(np.ones(7, np.float32), target=6, offset=0)


def test_invalid_feature_config_is_rejected_with_reason():
    with pytest.raises(FeatureConfigError, match="hop_length to be a positive integer"):
        FeatureConfig(name="x", sample_rate=16000, n_samples=16000, n_fft=512, hop_length=0, n_mels=40)
    with pytest.raises(FeatureConfigError, match="n_mels"):
        FeatureConfig(name="x", sample_rate=16000, n_samples=16000, n_fft=64, hop_length=16, n_mels=40)
    with pytest.raises(FeatureConfigError, match="preset among"):
        preset("speechcommands")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_mel_filter_bank_is_librosas(name):
    from siamese_audio.features.mel import slaney_mel

    cfg = preset(name)
    ours = slaney_mel(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)
    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, dtype=np.float32)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("n,orig,target", [(40_000, 48_000, 44_100), (39_989, 48_000, 44_100),
                                           (12_345, 22_050, 44_100), (1_001, 44_100, 16_000)])
def test_resample_is_scipy_signal_resample(n, orig, target):
    import math

    import scipy.signal

    y = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    ref = scipy.signal.resample(y, int(math.ceil(n * target / orig))).astype(np.float32)
    np.testing.assert_array_equal(resample(y, orig_sr=orig, target_sr=target), ref)


def test_hann_window_is_scipys():
    import scipy.signal

    from siamese_audio.features.transform import hann_window

    np.testing.assert_allclose(hann_window(4096), scipy.signal.get_window("hann", 4096, fftbins=True), atol=1e-7)


@pytest.mark.parametrize("channels", [1, 2])
def test_pcm16_decoding_equals_libsndfile_floats(tmp_path, channels):
    import soundfile as sf

    from siamese_audio.features.audio import decode

    y = np.random.default_rng(0).uniform(-1, 1, (5000, channels)).astype(np.float32)
    sf.write(tmp_path / "a.wav", y, 44_100, subtype="PCM_16")
    ref, _ = sf.read(tmp_path / "a.wav", dtype="float32", always_2d=False)
    np.testing.assert_array_equal(decode(tmp_path / "a.wav").samples, to_mono(ref))

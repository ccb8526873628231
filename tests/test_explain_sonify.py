"""Sonification: inverse mel + Griffin-Lim to PCM16 WAVs, round-trip error, silence outside the kept region."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from siamese_audio.evaluation.explain.methods import SupportExplanation
from siamese_audio.evaluation.explain.perturb import fill_level
from siamese_audio.evaluation.explain.segments import segment_sizes
from siamese_audio.features.config import FeatureConfig
from siamese_audio.features.transform import logmel

pytest.importorskip("librosa")

CONFIG = FeatureConfig(name="sonify-test", sample_rate=16_000, n_samples=16_000, n_fft=512, hop_length=128,
                       n_mels=64)


def tone_bursts(first_hz: float, second_hz: float, seed: int) -> np.ndarray:
    """Two Gaussian-windowed tones, at 0.3 s and 0.7 s, over faint noise: two separate blobs."""
    rng = np.random.default_rng(seed)
    t = np.arange(CONFIG.n_samples) / CONFIG.sample_rate
    y = (0.5 * np.exp(-0.5 * ((t - 0.3) / 0.05) ** 2) * np.sin(2 * np.pi * first_hz * t)
         + 0.5 * np.exp(-0.5 * ((t - 0.7) / 0.05) ** 2) * np.sin(2 * np.pi * second_hz * t)
         + 1e-4 * rng.standard_normal(t.size))
    return logmel(y.astype(np.float32), CONFIG)


def burst_explanation(image: np.ndarray) -> SupportExplanation:
    """Three segments: the first burst (its pixels within 60 dB of its peak, widened by 6 pixels: the
    inversion spreads a loud tone over a few bands and frames), the rest of the first half, the second
    half; the first burst ranks first (a stand-in for SINEX scores)."""
    half = image.shape[1] // 2
    blob = np.zeros(image.shape, dtype=bool)
    blob[:, :half] = image[:, :half] > image[:, :half].max() - 60.0
    blob = binary_dilation(blob, iterations=6)
    blob[:, half:] = False
    labels = np.where(blob, 0, np.where(np.arange(image.shape[1])[None, :] < half, 1, 2)).astype(np.int32)
    sizes = segment_sizes(labels)
    h = np.array([-1.0, 0.0, 1.0]) / sizes
    return SupportExplanation(labels=labels, sizes=sizes, fill=fill_level(image, "floor", top_db=80.0), v=1.0,
                              u_empty=0.0, u=np.zeros(3), h=h, n_perturbations=4)


def test_wavs_round_trip_and_silence_outside_the_kept_segments(tmp_path):
    import soundfile as sf

    from siamese_audio.evaluation.explain.sonify import sonify_task

    query = tone_bursts(1000.0, 3000.0, 0)
    supports = np.stack([tone_bursts(1000.0, 3000.0, 1), tone_bursts(1500.0, 2500.0, 2)])
    explanations = [burst_explanation(s) for s in supports]
    records = sonify_task(tmp_path / "a", query, supports, explanations, top_k=1, config=CONFIG, seed=0, task=3)
    assert [r["file"] for r in records] == ["query.wav", "support0.wav", "support1.wav", "support0_top1.wav",
                                            "support1_top1.wav", "support0_minus_top1.wav", "support1_minus_top1.wav"]
    assert [r["kind"] for r in records] == ["query", "support", "support", "top_k", "top_k", "removed", "removed"]
    for r in records:
        info = sf.info(str(tmp_path / "a" / r["file"]))
        assert (info.subtype, info.samplerate, info.frames, info.channels) == ("PCM_16", 16_000, 16_000, 1)
        assert r["round_trip"]["median_db"] < 1.0, r
    for r in records[3:]:
        assert r["kept_segments"] == explanations[r["column"]].top_segments(1).tolist() and r["ramp_s"] == 0.05
        assert r["energy_outside_input_db"] <= -40.0  # the input itself: the floor is quiet, not silent
        assert r["energy_outside_db"] <= -40.0, r  # what Griffin-Lim put outside the kept region
    # The measure sees deleted content: the whole support's second burst lies outside the kept segment.
    from siamese_audio.evaluation.explain.sonify import decode, energy_ratio_db
    from siamese_audio.features.transform import LogMel

    whole = decode((tmp_path / "a" / "support0.wav").read_bytes()) / np.float32(records[1]["gain"])
    assert energy_ratio_db(LogMel(CONFIG)(whole), explanations[0].labels == 0) > -10.0
    again = sonify_task(tmp_path / "b", query, supports, explanations, top_k=1, config=CONFIG, seed=0, task=3)
    assert again == records
    assert all((tmp_path / "a" / r["file"]).read_bytes() == (tmp_path / "b" / r["file"]).read_bytes()
               for r in records)


def test_levels_are_normalised_to_one_rms_with_the_peak_limited():
    from siamese_audio.evaluation.explain.sonify import PEAK_DBFS, TARGET_RMS_DBFS, level_gain

    t = np.arange(16_000) / 16_000
    quiet = 0.001 * np.sin(2 * np.pi * 440 * t)
    level, gain = level_gain(quiet)
    assert level == pytest.approx(20 * np.log10(0.001 / np.sqrt(2)), abs=0.01)
    assert 20 * np.log10(np.sqrt(np.mean((gain * quiet) ** 2))) == pytest.approx(TARGET_RMS_DBFS, abs=0.01)
    click = np.zeros(16_000)
    click[100] = 0.5  # one loud sample: the peak limit wins over the RMS target
    _, gain = level_gain(click)
    assert 20 * np.log10(gain * 0.5) == pytest.approx(PEAK_DBFS, abs=1e-6)
    assert level_gain(np.zeros(10)) == (float("-inf"), 1.0)


def test_soft_mask_ramps_over_the_requested_seconds_and_is_complementary():
    from siamese_audio.evaluation.explain.sonify import soft_keep

    keep = np.zeros((4, 126), dtype=bool)
    keep[:, 63:] = True  # one edge in time, at frame 63
    frame_s = CONFIG.hop_length / CONFIG.sample_rate  # 8 ms
    for ramp_s in (0.05, 0.2):
        soft = soft_keep(keep, CONFIG, ramp_s=ramp_s)
        partial = ((soft[0] > 1e-9) & (soft[0] < 1 - 1e-9)).sum() * frame_s
        assert partial == pytest.approx(ramp_s, abs=2 * frame_s)
        assert soft[0, 0] == 0.0 and soft[0, -1] == 1.0 and (np.diff(soft[0]) >= -1e-12).all()
        np.testing.assert_allclose(soft_keep(~keep, CONFIG, ramp_s=ramp_s), 1.0 - soft, atol=1e-12)
    np.testing.assert_array_equal(soft_keep(keep, CONFIG, ramp_s=0.0), keep.astype(float))


def _rise_seconds(y: np.ndarray, start: int) -> float:
    """10% -> 90% rise time of the 2 ms RMS envelope of ``y`` after sample ``start``."""
    win = 32
    env = np.sqrt(np.convolve(y.astype(np.float64) ** 2, np.ones(win) / win, mode="same"))
    steady = np.median(env[-4000:-1000])
    tail = env[start:]
    low = int(np.argmax(tail > 0.1 * steady))
    high = int(np.argmax(tail > 0.9 * steady))
    return (high - low) / CONFIG.sample_rate


def test_a_kept_segment_fades_in_instead_of_clicking_on():
    from siamese_audio.evaluation.explain.sonify import blend, invert, soft_keep

    t = np.arange(CONFIG.n_samples) / CONFIG.sample_rate
    tone = logmel((0.3 * np.sin(2 * np.pi * 800 * t)).astype(np.float32), CONFIG)
    fill = float(tone.max() - 80.0)
    keep = np.zeros(tone.shape, dtype=bool)
    keep[:, tone.shape[1] // 2:] = True  # the segment starts at 0.5 s
    rises = {}
    for ramp_s in (0.0, 0.1):
        image = blend(tone, fill, soft_keep(keep, CONFIG, ramp_s=ramp_s))
        y = invert(image, CONFIG, rng=np.random.default_rng(0))
        rises[ramp_s] = _rise_seconds(y, int(0.3 * CONFIG.sample_rate))
    assert rises[0.1] >= 0.03, rises  # amplitude 10% -> 90% is about a third of a Hann ramp in power
    assert rises[0.0] < rises[0.1] / 2, rises  # the hard mask switches on within a window or two

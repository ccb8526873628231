"""Play back what the network relies on: log-mel -> audio (inverse mel, Griffin-Lim) -> PCM16 WAV.

For each explained task: the query and every whole support are re-synthesised,
every support with only its top-k segments by relevance kept (the rest filled)
and every support with those segments removed (filled, the rest kept), all the
same way so that they compare: ``librosa.db_to_power`` ->
``librosa.feature.inverse.mel_to_stft`` (the feature config's rate, n_fft,
Slaney mel, power) -> ``librosa.griffinlim`` (32 iterations, random initial
phase from a seeded generator, the config's hop and length).

No clicks at segment edges: the kept / removed mask is softened along time
with a Hann ramp of ``RAMP_S`` seconds (:func:`soft_keep`; the frame count is
``round(RAMP_S * sample_rate / hop_length)``) and the two sides are mixed in
power (:func:`blend`), so a segment fades in and out over about ``RAMP_S``
instead of switching on in one frame. Levels: every WAV is scaled to the same
RMS level (``TARGET_RMS_DBFS``) unless that would push its peak above
``PEAK_DBFS``; the gain and the level before scaling (``level_dbfs``) are
recorded, so loudness between the clips can still be compared.

Each WAV is decoded again and re-analysed with the feature pipeline's own
log-mel (:class:`~siamese_audio.features.transform.LogMel`), and compared with
the spectrogram it was made from: the round-trip error (median and 90th
percentile of |dB difference|) and, for a top-k or removed clip, the energy
outside the kept region relative to the energy inside (dB; the perturbed
input's own ratio is given beside it, since the filled floor is quiet but not
silent).

librosa is imported here only, when sonifying (about 3-5 s per clip on a CPU,
most of it in ``mel_to_stft``'s non-negative least squares, plus numba's
compilation on a first run): sonify the few tasks a person will listen to.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.explain.methods import SupportExplanation
from siamese_audio.features.config import FeatureConfig
from siamese_audio.features.transform import LogMel
from siamese_audio.files import write_atomic

#: Griffin-Lim iterations (the issue's setting).
GRIFFIN_LIM_ITERATIONS = 32
#: Highest peak of a WAV (dBFS).
PEAK_DBFS = -1.0
#: RMS level every WAV is scaled to, peak permitting (dBFS).
TARGET_RMS_DBFS = -20.0
#: Length of the fade at a segment's edge in time (seconds).
RAMP_S = 0.05
GL_STREAM = 0x50D


def soft_keep(keep: np.ndarray, config: FeatureConfig, *, ramp_s: float = RAMP_S) -> np.ndarray:
    """A kept-pixel mask with its edges in time faded over about ``ramp_s`` seconds.

    Parameters
    ----------
    keep : np.ndarray [shape=(n_mels, n_frames), dtype=bool]
    config : FeatureConfig
        Its rate and hop convert seconds to frames.
    ramp_s : float
        Fade length; 0 (or less than one frame) keeps the hard mask.

    Returns
    -------
    np.ndarray [shape=(n_mels, n_frames), dtype=float64]
        In [0, 1]: 1 well inside kept runs, 0 well outside, a Hann-shaped ramp
        of ``round(ramp_s * sample_rate / hop_length)`` frames across each edge.
        ``soft_keep(~keep) == 1 - soft_keep(keep)``.
    """
    from scipy.ndimage import convolve1d

    keep = np.asarray(keep, dtype=bool)
    frames = int(round(float(ramp_s) * config.sample_rate / config.hop_length))
    if frames < 2:
        return keep.astype(np.float64)
    window = np.hanning(frames + 2)[1:-1]
    window /= window.sum()
    soft = convolve1d(keep.astype(np.float64), window, axis=1, mode="nearest")
    soft[soft < 1e-9] = 0.0  # rounding: untouched runs stay exactly kept / filled
    soft[soft > 1.0 - 1e-9] = 1.0
    return soft


def blend(logmel: np.ndarray, fill: float, weight: np.ndarray) -> np.ndarray:
    """``weight * logmel + (1 - weight) * fill``, mixed in power, back in dB [shape=logmel.shape, float32]."""
    power = np.power(10.0, np.asarray(logmel, dtype=np.float64) / 10.0)
    floor = 10.0 ** (float(fill) / 10.0)
    return (10.0 * np.log10(weight * power + (1.0 - weight) * floor)).astype(np.float32)


def level_gain(y: np.ndarray) -> tuple[float, float]:
    """RMS level of ``y`` (dBFS) and the gain that brings it to ``TARGET_RMS_DBFS`` with its peak at most ``PEAK_DBFS``."""
    y = np.asarray(y, dtype=np.float64)
    rms = float(np.sqrt(np.mean(y ** 2))) if y.size else 0.0
    peak = float(np.abs(y).max()) if y.size else 0.0
    if rms <= 0.0 or peak <= 0.0:
        return float("-inf"), 1.0
    gain = min(10.0 ** (TARGET_RMS_DBFS / 20.0) / rms, 10.0 ** (PEAK_DBFS / 20.0) / peak)
    return float(20.0 * np.log10(rms)), float(gain)


def invert(logmel: np.ndarray, config: FeatureConfig, *, n_iter: int = GRIFFIN_LIM_ITERATIONS,
           rng: np.random.Generator) -> np.ndarray:
    """Audio whose log-mel approximates ``logmel``.

    Parameters
    ----------
    logmel : np.ndarray [shape=(n_mels, n_frames)]
        dB values (``power_to_db(ref=1.0)`` scale).
    config : FeatureConfig
        Rate, length, n_fft, hop, mels and power the log-mel was computed with.
    n_iter : int
        Griffin-Lim iterations.
    rng : numpy Generator
        Initial phases.

    Returns
    -------
    np.ndarray [shape=(config.n_samples,), dtype=float32]
    """
    import librosa

    if logmel.shape != config.shape:
        raise EvaluationError(f"Expected a log-mel of shape {config.shape} to invert. Got {logmel.shape}.")
    mel = librosa.db_to_power(np.asarray(logmel, dtype=np.float64))
    magnitude = librosa.feature.inverse.mel_to_stft(
        mel, sr=config.sample_rate, n_fft=config.n_fft, power=config.power, htk=False, norm="slaney")
    y = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=config.hop_length, win_length=config.n_fft,
                           n_fft=config.n_fft, window="hann", center=True, length=config.n_samples,
                           init="random", random_state=rng)
    return np.asarray(y, dtype=np.float32)


def encode_pcm16(y: np.ndarray, sample_rate: int) -> bytes:
    """WAV bytes, PCM 16-bit mono (samples clipped to [-1, 1])."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(y, -1.0, 1.0), int(sample_rate), format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Samples of WAV bytes as float32."""
    import soundfile as sf

    y, _ = sf.read(io.BytesIO(data), dtype="float32")
    return y


def energy_ratio_db(logmel: np.ndarray, keep: np.ndarray) -> float:
    """``10 log10(sum of power outside keep / sum of power inside keep)`` of a log-mel (dB)."""
    power = np.power(10.0, np.asarray(logmel, dtype=np.float64) / 10.0)
    inside, outside = power[keep].sum(), power[~keep].sum()
    if inside <= 0 or outside <= 0:
        return float("nan")
    return float(10.0 * np.log10(outside / inside))


def round_trip(reanalysed: np.ndarray, original: np.ndarray) -> dict[str, float]:
    """Median and 90th percentile of ``|reanalysed - original|`` in dB."""
    diff = np.abs(np.asarray(reanalysed, dtype=np.float64) - np.asarray(original, dtype=np.float64))
    return {"median_db": float(np.median(diff)), "p90_db": float(np.percentile(diff, 90))}


@dataclass(frozen=True)
class Clip:
    """One spectrogram to sonify: its file name, what it is, and (top-k only) the kept pixels."""

    name: str
    kind: str
    logmel: np.ndarray
    column: int | None = None
    keep: np.ndarray | None = None


def task_clips(query: np.ndarray, supports: np.ndarray, explanations: Sequence[SupportExplanation],
               top_k: int, config: FeatureConfig, *, ramp_s: float = RAMP_S) -> list[Clip]:
    """The query, each whole support, each support with only its top-k segments kept, and with them removed."""
    clips = [Clip("query.wav", "query", np.asarray(query, dtype=np.float32))]
    for c, s in enumerate(supports):
        clips.append(Clip(f"support{c}.wav", "support", np.asarray(s, dtype=np.float32), column=c))
    for kind, name in (("top_k", "top{k}"), ("removed", "minus_top{k}")):
        for c, (s, e) in enumerate(zip(supports, explanations)):
            top = np.isin(e.labels, e.top_segments(top_k))
            keep = top if kind == "top_k" else ~top
            clips.append(Clip(f"support{c}_{name.format(k=top_k)}.wav", kind,
                              blend(s, e.fill, soft_keep(keep, config, ramp_s=ramp_s)), column=c, keep=keep))
    return clips


def sonify_task(
    out_dir: Path, query: np.ndarray, supports: np.ndarray, explanations: Sequence[SupportExplanation], *,
    top_k: int, config: FeatureConfig, seed: int, task: int, n_iter: int = GRIFFIN_LIM_ITERATIONS,
    ramp_s: float = RAMP_S,
) -> list[dict[str, Any]]:
    """Write the WAVs of one task into ``out_dir`` and measure each round trip.

    Returns
    -------
    list of dict
        Per WAV: ``file, kind`` (query, support, top_k, removed), ``column, gain, level_dbfs,
        round_trip {median_db, p90_db}`` and, for top-k and removed clips,
        ``kept_segments`` (the top-k labels), ``ramp_s, energy_outside_db, energy_outside_input_db``
        (outside what the clip keeps).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = task_clips(query, supports, explanations, top_k, config, ramp_s=ramp_s)
    signals = [invert(clip.logmel, config, n_iter=n_iter,
                      rng=np.random.default_rng(np.random.SeedSequence([int(seed), int(task), i, GL_STREAM])))
               for i, clip in enumerate(clips)]
    analyse = LogMel(config)
    records = []
    for clip, y in zip(clips, signals):
        level, gain = level_gain(y)
        data = encode_pcm16(y * gain, config.sample_rate)
        write_atomic(out_dir / clip.name, data)
        again = analyse(decode(data).astype(np.float32) / np.float32(gain))
        record: dict[str, Any] = {"file": clip.name, "kind": clip.kind, "column": clip.column, "gain": gain,
                                  "level_dbfs": level, "round_trip": round_trip(again, clip.logmel)}
        if clip.keep is not None:
            record["kept_segments"] = explanations[clip.column].top_segments(top_k).tolist()
            record["ramp_s"] = float(ramp_s)
            record["energy_outside_db"] = energy_ratio_db(again, clip.keep)
            record["energy_outside_input_db"] = energy_ratio_db(clip.logmel, clip.keep)
        records.append(record)
    return records

"""Play back what the network relies on: log-mel -> audio (inverse mel, Griffin-Lim) -> PCM16 WAV.

For each explained task: the query and every whole support are re-synthesised,
and every support with only its top-k segments by relevance kept (the rest
filled), all the same way so that they compare: ``librosa.db_to_power`` ->
``librosa.feature.inverse.mel_to_stft`` (the feature config's rate, n_fft,
Slaney mel, power) -> ``librosa.griffinlim`` (32 iterations, random initial
phase from a seeded generator, the config's hop and length). One gain per task
(only ever attenuating, to keep the loudest signal at -1 dBFS) keeps their
levels comparable; it is recorded.

Each WAV is decoded again and re-analysed with the feature pipeline's own
log-mel (:class:`~siamese_audio.features.transform.LogMel`), and compared with
the spectrogram it was made from: the round-trip error (median and 90th
percentile of |dB difference|) and, for a top-k clip, the energy outside the
kept region relative to the energy inside (dB; the perturbed input's own ratio
is given beside it, since the filled floor is quiet but not silent).

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
#: Peak level of the loudest signal of a task when it would clip (dBFS).
PEAK_DBFS = -1.0
GL_STREAM = 0x50D


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
               top_k: int) -> list[Clip]:
    """The query, each whole support, and each support with only its top-k segments kept."""
    clips = [Clip("query.wav", "query", np.asarray(query, dtype=np.float32))]
    for c, s in enumerate(supports):
        clips.append(Clip(f"support{c}.wav", "support", np.asarray(s, dtype=np.float32), column=c))
    for c, (s, e) in enumerate(zip(supports, explanations)):
        keep = np.isin(e.labels, e.top_segments(top_k))
        clips.append(Clip(f"support{c}_top{top_k}.wav", "top_k", np.where(keep, s, e.fill).astype(np.float32),
                          column=c, keep=keep))
    return clips


def sonify_task(
    out_dir: Path, query: np.ndarray, supports: np.ndarray, explanations: Sequence[SupportExplanation], *,
    top_k: int, config: FeatureConfig, seed: int, task: int, n_iter: int = GRIFFIN_LIM_ITERATIONS,
) -> list[dict[str, Any]]:
    """Write the WAVs of one task into ``out_dir`` and measure each round trip.

    Returns
    -------
    list of dict
        Per WAV: ``file, kind, column, gain, round_trip {median_db, p90_db}`` and,
        for top-k clips, ``kept_segments, energy_outside_db, energy_outside_input_db``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = task_clips(query, supports, explanations, top_k)
    signals = [invert(clip.logmel, config, n_iter=n_iter,
                      rng=np.random.default_rng(np.random.SeedSequence([int(seed), int(task), i, GL_STREAM])))
               for i, clip in enumerate(clips)]
    peak = max(float(np.abs(y).max()) for y in signals)
    limit = 10.0 ** (PEAK_DBFS / 20.0)
    gain = min(1.0, limit / peak) if peak > 0 else 1.0
    analyse = LogMel(config)
    records = []
    for clip, y in zip(clips, signals):
        data = encode_pcm16(y * gain, config.sample_rate)
        write_atomic(out_dir / clip.name, data)
        again = analyse(decode(data).astype(np.float32) / np.float32(gain))
        record: dict[str, Any] = {"file": clip.name, "kind": clip.kind, "column": clip.column, "gain": gain,
                                  "round_trip": round_trip(again, clip.logmel)}
        if clip.keep is not None:
            record["kept_segments"] = explanations[clip.column].top_segments(top_k).tolist()
            record["energy_outside_db"] = energy_ratio_db(again, clip.keep)
            record["energy_outside_input_db"] = energy_ratio_db(clip.logmel, clip.keep)
        records.append(record)
    return records

"""One clip and one shard of clips, from source file to stored values: every decision that sets the bytes.

Decode → mono → resample → reject or crop what is too long → zero-pad at the
seeded offset → log-mel. The catalog fields of each clip (status, reason,
offsets) are decided here too. The Dask tasks of :mod:`siamese_audio.pipeline`
only call :func:`compute_block` and write what it returns; a change here
changes the stored bytes and must bump
:data:`~siamese_audio.features.fingerprint.FEATURE_FORMAT_VERSION`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from siamese_audio.errors import AudioDecodeError
from siamese_audio.features.config import FeatureConfig

# features.audio and features.transform (scipy.fft) are imported inside the functions:
# the client of a cluster build only pickles references to these and starts faster.


@dataclass(frozen=True)
class ClipTask:
    """One clip of a batch: its store row, id and absolute source path."""

    row: int
    clip_id: str
    path: str


def too_long_reason(n: int, config: FeatureConfig) -> str:
    """Why a clip of ``n`` samples (at the preset's rate) is rejected without ``--crop-long``."""
    return (
        f"{n} samples at {config.sample_rate} Hz ({n / config.sample_rate:.2f} s) is longer than the "
        f"preset's {config.n_samples} ({config.n_samples / config.sample_rate:.2f} s); "
        "rejected (use --crop-long to keep its start)"
    )


def empty_info(clip: ClipTask) -> dict[str, Any]:
    """Catalog fields of a clip before it is read (a rejection with no reason yet)."""
    return {"row": clip.row, "clip_id": clip.clip_id, "sample_rate": 0, "channels": 0, "n_samples": 0,
            "pad_offset": 0, "cropped": False, "status": "rejected", "reason": ""}


def prepare_clip(
    clip: ClipTask, config: FeatureConfig, seed: int, crop_long: bool
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Decode, resample and pad one clip.

    Returns
    -------
    y : np.ndarray [shape=(config.n_samples,), dtype=float32] or None when rejected
    info : dict
        Catalog fields: row, clip_id, sample_rate, channels, n_samples, pad_offset,
        cropped, status, reason.
    """
    from siamese_audio.features.audio import load_resampled
    from siamese_audio.features.transform import pad_offset, pad_to

    info = empty_info(clip)
    try:
        y, decoded = load_resampled(clip.path, target_sr=config.sample_rate)
    except AudioDecodeError as exc:
        info["reason"] = str(exc)
        return None, info
    info.update(sample_rate=decoded.sample_rate, channels=decoded.channels,
                n_samples=int(decoded.samples.shape[0]))
    if y.shape[0] > config.n_samples:
        if not crop_long:
            info["reason"] = f"{clip.path}: " + too_long_reason(int(y.shape[0]), config)
            return None, info
        info["cropped"] = True
        info["reason"] = f"cropped from {y.shape[0]} to {config.n_samples} samples (kept the start)"
        y = y[: config.n_samples]
    offset = pad_offset(seed=seed, clip_id=clip.clip_id, n=int(y.shape[0]), target=config.n_samples)
    info.update(pad_offset=offset, status="stored")
    return pad_to(y, target=config.n_samples, offset=offset), info


def compute_block(
    clips: tuple[ClipTask, ...], config: FeatureConfig, *, seed: int, crop_long: bool, first_row: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Log-mels of the clips of one shard, in row order.

    Parameters
    ----------
    clips : tuple of ClipTask
        Rows ``first_row .. first_row + len(clips) - 1``.

    Returns
    -------
    block : np.ndarray [shape=(len(clips), n_mels, n_frames), dtype=float32]
        NaN where a clip was rejected (the store's fill value: no chunk is written);
        every stored clip is finite (a clip whose log-mel is not is rejected).
    infos : list of dict
        Catalog fields of each clip (:func:`prepare_clip`).
    """
    from siamese_audio.features.transform import LogMel

    extract = LogMel(config)
    block = np.full((len(clips), config.n_mels, config.n_frames), np.nan, dtype=np.float32)
    infos = []
    for clip in clips:
        # Samples near float32's limits overflow the resampler's or the log-mel's sums: the result
        # is not finite and the clip rejected below, so numpy's warnings say nothing new.
        with np.errstate(over="ignore", invalid="ignore"):
            y, info = prepare_clip(clip, config, seed, crop_long)
            logmel = extract(y) if y is not None else None
        if logmel is not None:
            if np.isfinite(logmel).all():
                block[clip.row - first_row] = logmel
            else:  # samples so large (float WAVs can hold 1e20) that the power spectrum overflows
                info.update(status="rejected", pad_offset=0, cropped=False, reason=(
                    f"{clip.path}: its log-mel is not finite (peak sample {float(np.abs(y).max()):.3g}); "
                    "expected samples of audio magnitude"))
        infos.append(info)
    return block, infos

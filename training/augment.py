"""Training-time augmentation of a batch: level changes, crops, stretches, shifts and masks.

Two stages, both applied by the training loop to a batch in memory, never to the
store: :func:`augment_levels` works on the stored dB values (mixing with another
clip in the power domain, gain, spectral tilt) before the per-band
standardisation; :func:`augment` on the standardised batch (random time crops,
optionally stretched, mel-band shifts, SpecAugment masks). Every random choice
comes from the run's own seeded generator, so a run (and a resumed run) sees the
same augmented batches.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from siamese_audio.training.config import TrainConfig
from siamese_audio.training.sampler import ClassBatch


def with_views(x: torch.Tensor, batch: ClassBatch, views: int) -> tuple[torch.Tensor, ClassBatch]:
    """Repeat each clip of a class batch ``views`` times, so that each copy is augmented on its own draw.

    Parameters
    ----------
    x : torch.Tensor [shape=(N, n_mels, n_frames)]
        The clips of ``batch.rows``.
    views : int

    Returns
    -------
    x : torch.Tensor [shape=(N * views, n_mels, n_frames)]
        Each clip's copies next to each other (a class's rows stay consecutive).
    batch : ClassBatch
        Rows, labels and classes repeated the same way.
    """
    if views == 1:
        return x, batch
    classes = None if batch.classes is None else np.repeat(batch.classes, views)
    return x.repeat_interleave(views, dim=0), ClassBatch(rows=np.repeat(batch.rows, views),
                                                         labels=np.repeat(batch.labels, views), classes=classes)


def random_crop(x: torch.Tensor, frames: int, rng: np.random.Generator) -> torch.Tensor:
    """A random window of ``frames`` frames of each clip.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, n_mels, n_frames)]
    frames : int
        At most ``n_frames``.

    Returns
    -------
    torch.Tensor [shape=(B, n_mels, frames)]
    """
    batch, bands, total = x.shape
    if frames >= total:
        return x
    starts = torch.from_numpy(rng.integers(0, total - frames + 1, size=batch)).to(x.device)
    index = starts[:, None] + torch.arange(frames, device=x.device)[None, :]
    return torch.gather(x, 2, index[:, None, :].expand(batch, bands, frames))


def _band_mask(length: int, widths: np.ndarray, starts: np.ndarray, device: torch.device) -> torch.Tensor:
    """[shape=(B, length)] True inside ``[start, start + width)`` of each row."""
    positions = torch.arange(length, device=device)[None, :]
    low = torch.from_numpy(starts).to(device)[:, None]
    high = low + torch.from_numpy(widths).to(device)[:, None]
    return (positions >= low) & (positions < high)


def spec_masks(x: torch.Tensor, *, freq_masks: int, freq_width: int, time_masks: int, time_width: int,
               rng: np.random.Generator) -> torch.Tensor:
    """Set random bands and time spans of each clip to 0 (the band mean of standardised input).

    Each mask's width is drawn uniformly from ``0 .. width`` and its start
    uniformly over the clip, as in SpecAugment.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, n_mels, n_frames)]

    Returns
    -------
    torch.Tensor [shape=(B, n_mels, n_frames)]
    """
    batch, bands, frames = x.shape
    masked = torch.zeros((batch, bands, frames), dtype=torch.bool, device=x.device)
    for _ in range(freq_masks):
        widths = rng.integers(0, freq_width + 1, size=batch)
        starts = rng.integers(0, bands, size=batch)
        masked |= _band_mask(bands, widths, starts, x.device)[:, :, None]
    for _ in range(time_masks):
        widths = rng.integers(0, time_width + 1, size=batch)
        starts = rng.integers(0, frames, size=batch)
        masked |= _band_mask(frames, widths, starts, x.device)[:, None, :]
    return x.masked_fill(masked, 0.0)


_DB = 10.0 / math.log(10.0)  # dB per neper of power


def mix_power(x: torch.Tensor, other: torch.Tensor, attenuation_db: torch.Tensor) -> torch.Tensor:
    """dB spectrograms of ``x`` plus ``other`` attenuated, summed as powers.

    Parameters
    ----------
    x, other : torch.Tensor [shape=(B, n_mels, n_frames)]
        Log-mel power in dB.
    attenuation_db : torch.Tensor [shape=(B,)]
        How far below its own level ``other`` is mixed in (0: equal power).

    Returns
    -------
    torch.Tensor [shape=(B, n_mels, n_frames)]
        ``10 log10(10^(x/10) + 10^((other - a)/10))``, computed without overflow.
    """
    shifted = other - attenuation_db[:, None, None]
    return _DB * torch.logaddexp(x / _DB, shifted / _DB)


def augment_levels(x: torch.Tensor, labels: torch.Tensor | np.ndarray, config: TrainConfig,
                   rng: np.random.Generator) -> torch.Tensor:
    """Mix, gain and tilt a batch of stored (dB) log-mels as ``config`` says.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, n_mels, n_frames)]
        The batch as read from the store (dB).
    labels : array-like [shape=(B,)]
        Class of each row: a clip is only mixed with a clip of another class of the batch.
    config : TrainConfig
        ``mix_prob``, ``mix_db``, ``gain_db``, ``tilt_db``.
    rng : np.random.Generator

    Returns
    -------
    torch.Tensor [shape=(B, n_mels, n_frames)]
        A new tensor (``x`` is left as it is).
    """
    batch, bands, _ = x.shape
    labels = np.asarray(labels)
    if config.mix_prob:
        mixed = rng.random(batch) < config.mix_prob
        partners = np.arange(batch)
        for i in np.flatnonzero(mixed):
            others = np.flatnonzero(labels != labels[i])
            if others.size:
                partners[i] = others[rng.integers(others.size)]
            else:
                mixed[i] = False
        low, high = config.mix_db
        attenuation = torch.from_numpy(rng.uniform(low, high, size=batch).astype(np.float32)).to(x.device)
        blended = mix_power(x, x[torch.from_numpy(partners).to(x.device)], attenuation)
        x = torch.where(torch.from_numpy(mixed).to(x.device)[:, None, None], blended, x)
    if config.gain_db or config.tilt_db:
        gain = rng.uniform(-config.gain_db, config.gain_db, size=batch) if config.gain_db else np.zeros(batch)
        tilt = rng.uniform(-config.tilt_db, config.tilt_db, size=batch) if config.tilt_db else np.zeros(batch)
        ramp = np.linspace(-1.0, 1.0, bands)
        offset = (gain[:, None] + tilt[:, None] * ramp[None, :]).astype(np.float32)
        x = x + torch.from_numpy(offset).to(x.device)[:, :, None]
    return x


def stretched_crop(x: torch.Tensor, frames: int, stretch: float, rng: np.random.Generator) -> torch.Tensor:
    """A random window of each clip, stretched in time by a factor in ``1 +- stretch``, resampled to ``frames``.

    A factor ``f`` reads ``round(frames / f)`` stored frames (at most all of them) and
    resamples them linearly to ``frames``: ``f > 1`` slows the sound down.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, n_mels, n_frames)]
    frames : int
    stretch : float
        In [0, 1).

    Returns
    -------
    torch.Tensor [shape=(B, n_mels, frames)]
    """
    batch, _, total = x.shape
    factors = rng.uniform(1.0 - stretch, 1.0 + stretch, size=batch)
    spans = np.clip(np.round(frames / factors).astype(np.int64), 2, total)
    starts = [int(rng.integers(0, total - span + 1)) for span in spans]
    out = [F.interpolate(x[i:i + 1, :, s:s + span], size=frames, mode="linear", align_corners=False)
           for i, (s, span) in enumerate(zip(starts, spans.tolist()))]
    return torch.cat(out)


def shift_bands(x: torch.Tensor, most: int, rng: np.random.Generator) -> torch.Tensor:
    """Shift each clip up or down by up to ``most`` mel bands, repeating the edge band.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, n_mels, n_frames)]

    Returns
    -------
    torch.Tensor [shape=(B, n_mels, n_frames)]
    """
    batch, bands, frames = x.shape
    shifts = torch.from_numpy(rng.integers(-most, most + 1, size=batch)).to(x.device)
    source = (torch.arange(bands, device=x.device)[None, :] - shifts[:, None]).clamp(0, bands - 1)
    return torch.gather(x, 1, source[:, :, None].expand(batch, bands, frames))


def augment(x: torch.Tensor, config: TrainConfig, rng: np.random.Generator) -> torch.Tensor:
    """Crop (or stretch), shift, then mask a standardised batch as ``config`` says (unchanged when it says nothing)."""
    if config.crop_frames:
        if config.stretch:
            x = stretched_crop(x, config.crop_frames, config.stretch, rng)
        else:
            x = random_crop(x, config.crop_frames, rng)
    if config.shift_bands:
        x = shift_bands(x, config.shift_bands, rng)
    if config.freq_masks or config.time_masks:
        x = spec_masks(x, freq_masks=config.freq_masks, freq_width=config.freq_mask_bands,
                       time_masks=config.time_masks, time_width=config.time_mask_frames, rng=rng)
    return x

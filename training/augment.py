"""Training-time augmentation of a batch: random time crops and SpecAugment-style masks.

Applied by the training loop to the standardised batch, never to the store;
every random choice comes from the run's own seeded generator, so a run (and a
resumed run) sees the same augmented batches.
"""

from __future__ import annotations

import numpy as np
import torch

from siamese_audio.training.config import TrainConfig


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


def augment(x: torch.Tensor, config: TrainConfig, rng: np.random.Generator) -> torch.Tensor:
    """Crop, then mask, a standardised training batch as ``config`` says (unchanged when it says nothing)."""
    if config.crop_frames:
        x = random_crop(x, config.crop_frames, rng)
    if config.freq_masks or config.time_masks:
        x = spec_masks(x, freq_masks=config.freq_masks, freq_width=config.freq_mask_bands,
                       time_masks=config.time_masks, time_width=config.time_mask_frames, rng=rng)
    return x

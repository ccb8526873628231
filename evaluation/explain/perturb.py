"""Perturbed supports: the fill level, and lazy sets of keep-masks (segments kept, or pixels by rank).

A perturbation keeps some pixels of a support and sets the others to one fill
level. Sets of perturbations are described by small arrays (which segments each
one keeps, or how many top-ranked pixels) and turned into pixel masks only a
chunk at a time (:meth:`MaskSet.masks`), so that SINEXC's thousands of
perturbed spectrograms never exist at once.

The fill
--------
``"floor"`` (the default) fills with the support's own floor: its maximum minus
``top_db`` (80 dB), the value ``power_to_db`` clips to, so a filled pixel looks
like the quietest thing the feature pipeline can produce for that clip. A
stored log-mel holds nothing below that; for a clip whose range is narrower
than ``top_db`` (it never reaches its floor) the fill is the clip's own
minimum instead, so the fill is never below anything the clip holds. A number
(``--fill -80``) fills with that dB value, as the authors did; on ESC-50 that is
22-30 dB below any input the network saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from siamese_audio.errors import EvaluationError

FLOOR = "floor"

#: ``"floor"`` or a level in dB.
Fill = str | float


def parse_fill(value: str | float) -> Fill:
    """``"floor"`` or a finite number of dB (from ``--fill``)."""
    if isinstance(value, str):
        if value.strip().lower() == FLOOR:
            return FLOOR
        try:
            value = float(value)
        except ValueError:
            raise EvaluationError(f"Expected --fill 'floor' or a level in dB (e.g. -80). Got {value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvaluationError(f"Expected --fill 'floor' or a finite level in dB. Got {value!r}.")
    return float(value)


def fill_level(support: np.ndarray, fill: Fill, *, top_db: float) -> float:
    """The value perturbed pixels of ``support`` are set to.

    Parameters
    ----------
    support : np.ndarray [shape=(n_mels, n_frames)]
        dB values.
    fill : "floor" or float
    top_db : float
        The feature config's ``top_db`` (the store's floor is ``max - top_db``).

    Returns
    -------
    float
        ``max(support.max() - top_db, support.min())`` for ``"floor"``, else ``fill``.
    """
    if fill == FLOOR:
        return float(max(float(support.max()) - float(top_db), float(support.min())))
    return float(fill)


class MaskSet(Protocol):
    """``n`` keep-masks over one support's pixels, generated a chunk at a time."""

    def __len__(self) -> int: ...

    def masks(self, start: int, stop: int) -> np.ndarray:
        """Keep-masks ``start .. stop-1``, [shape=(stop - start, n_mels, n_frames), dtype=bool] (True: keep)."""
        ...


@dataclass(frozen=True, eq=False)
class SegmentMasks:
    """Perturbations that keep whole segments.

    Attributes
    ----------
    labels : np.ndarray [shape=(n_mels, n_frames), dtype=int]
        Segment labels ``0 .. K-1``.
    keep : np.ndarray [shape=(n, K), dtype=bool]
        Row ``p``: the segments perturbation ``p`` keeps.
    """

    labels: np.ndarray
    keep: np.ndarray

    def __len__(self) -> int:
        return int(self.keep.shape[0])

    def masks(self, start: int, stop: int) -> np.ndarray:
        return self.keep[start:stop][:, self.labels]


@dataclass(frozen=True, eq=False)
class RankMasks:
    """Perturbations that delete (or insert) the ``counts[p]`` top-ranked pixels.

    Attributes
    ----------
    rank : np.ndarray [shape=(n_mels, n_frames), dtype=int]
        A permutation of ``0 .. n_pixels-1``; 0 is the pixel deleted (inserted) first.
    counts : np.ndarray [shape=(n,), dtype=int]
        Pixels deleted (inserted) by each perturbation.
    insert : bool
        False (deletion): fill the top ``counts[p]`` pixels, keep the rest.
        True (insertion): keep the top ``counts[p]`` pixels, fill the rest.
    """

    rank: np.ndarray
    counts: np.ndarray
    insert: bool = False

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def masks(self, start: int, stop: int) -> np.ndarray:
        top = self.rank[None, :, :] < self.counts[start:stop, None, None]
        return top if self.insert else ~top


def apply_masks(support: np.ndarray, fill: float, masks: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write ``support`` where ``masks`` keeps and ``fill`` elsewhere into ``out`` [shape=masks.shape]."""
    out[...] = np.float32(fill)
    np.copyto(out, support[None, :, :], where=masks)
    return out

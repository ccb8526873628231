"""Segments of a support's log-mel: scikit-image felzenszwalb or slic, labels renumbered 0..K-1.

Only the supports of a task are segmented (the query never is). Both
segmenters run on the log-mel's dB values as stored. Defaults are the authors':
``felzenszwalb(scale=50, sigma=1.5, min_size=150)`` (SINEXC: ``min_size=900``)
and ``slic(n_segments=15, compactness=10, sigma=1)``. Whatever labels the
segmenter returns are renumbered ``0 .. K-1`` in order of first appearance of
their value, so that every label is perturbed (the authors' ``slic`` with
``start_label=1`` left its last label out of every loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from siamese_audio.errors import EvaluationError

SEGMENTERS = ("felzenszwalb", "slic")

#: ``min_size`` of felzenszwalb by explainer (SINEXC needs fewer, larger segments: K x alpha embeddings).
DEFAULT_MIN_SIZE = {"sinex": 150, "sinexc": 900}
#: ``sigma`` by segmenter.
DEFAULT_SIGMA = {"felzenszwalb": 1.5, "slic": 1.0}


@dataclass(frozen=True)
class SegmenterConfig:
    """How a support is cut into segments.

    Attributes
    ----------
    method : str
        ``"felzenszwalb"`` or ``"slic"``.
    scale : float
        felzenszwalb: higher means larger segments (authors: 50).
    sigma : float
        Gaussian smoothing before segmenting (authors: 1.5 felzenszwalb, 1 slic).
    min_size : int
        felzenszwalb: minimum segment size in pixels (authors: 150; SINEXC 900).
    n_segments : int
        slic: approximate number of segments (authors: 15).
    compactness : float
        slic: balance of intensity and space (authors: 10, on dB values).
    """

    method: str = "felzenszwalb"
    scale: float = 50.0
    sigma: float = 1.5
    min_size: int = 150
    n_segments: int = 15
    compactness: float = 10.0

    def __post_init__(self) -> None:
        if self.method not in SEGMENTERS:
            raise EvaluationError(f"Expected a segmenter among {list(SEGMENTERS)}. Got {self.method!r}.")
        for name in ("scale", "sigma", "compactness"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (name != "sigma" and value == 0):
                raise EvaluationError(f"Expected segmenter {name} to be a positive number. Got {value!r}.")
        for name in ("min_size", "n_segments"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise EvaluationError(f"Expected segmenter {name} to be a positive integer. Got {value!r}.")

    @classmethod
    def defaults(
        cls, explainer: str, method: str = "felzenszwalb", *, scale: float | None = None,
        sigma: float | None = None, min_size: int | None = None, n_segments: int | None = None,
        compactness: float | None = None,
    ) -> SegmenterConfig:
        """The authors' settings for ``explainer`` (``"sinex"``/``"sinexc"``) and ``method``, with overrides.

        ``None`` keeps the default: ``min_size`` 150 for SINEX and 900 for
        SINEXC, ``sigma`` 1.5 for felzenszwalb and 1 for slic.
        """
        if explainer not in DEFAULT_MIN_SIZE:
            raise EvaluationError(f"Expected an explainer among {sorted(DEFAULT_MIN_SIZE)}. Got {explainer!r}.")
        if method not in SEGMENTERS:
            raise EvaluationError(f"Expected a segmenter among {list(SEGMENTERS)}. Got {method!r}.")
        return cls(
            method=method,
            scale=50.0 if scale is None else scale,
            sigma=DEFAULT_SIGMA[method] if sigma is None else sigma,
            min_size=DEFAULT_MIN_SIZE[explainer] if min_size is None else min_size,
            n_segments=15 if n_segments is None else n_segments,
            compactness=10.0 if compactness is None else compactness,
        )

    def to_dict(self) -> dict[str, Any]:
        """The parameters the method uses (JSON-able)."""
        if self.method == "felzenszwalb":
            return {"method": self.method, "scale": self.scale, "sigma": self.sigma, "min_size": self.min_size}
        return {"method": self.method, "n_segments": self.n_segments, "compactness": self.compactness,
                "sigma": self.sigma}


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels ``0 .. K-1`` in order of first appearance (row-major), [same shape, dtype=int32]."""
    flat = np.asarray(labels).ravel()
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse].reshape(np.shape(labels)).astype(np.int32)


def segment(image: np.ndarray, config: SegmenterConfig) -> np.ndarray:
    """Segment one log-mel.

    Parameters
    ----------
    image : np.ndarray [shape=(n_mels, n_frames)]
        dB values, as stored.
    config : SegmenterConfig

    Returns
    -------
    np.ndarray [shape=(n_mels, n_frames), dtype=int32]
        Labels ``0 .. K-1``; every label has at least one pixel.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or not np.isfinite(image).all():
        raise EvaluationError(f"Expected a finite 2-D log-mel to segment. Got shape {image.shape}.")
    from skimage.segmentation import felzenszwalb, slic

    if config.method == "felzenszwalb":
        labels = felzenszwalb(image, scale=config.scale, sigma=config.sigma, min_size=config.min_size,
                              channel_axis=None)
    else:
        labels = slic(image, n_segments=config.n_segments, compactness=config.compactness, sigma=config.sigma,
                      channel_axis=None, start_label=0)
    return renumber(labels)


def segment_sizes(labels: np.ndarray) -> np.ndarray:
    """Pixels of each label, [shape=(K,), dtype=int64]."""
    return np.bincount(np.asarray(labels).ravel()).astype(np.int64)

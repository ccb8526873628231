"""Generated spectrograms and small NumPy embedders shared by the explain tests."""

from __future__ import annotations

import numpy as np

from siamese_audio.evaluation.explain.perturb import fill_level
from siamese_audio.evaluation.explain.segments import SegmenterConfig, segment

SHAPE = (24, 32)


class ProjectionEmbedder:
    """A deterministic nonlinear NumPy embedder (random projection, tanh) with a squared-difference head."""

    def __init__(self, shape=SHAPE, dim=12, seed=0):
        rng = np.random.default_rng(seed)
        self.w = rng.standard_normal((shape[0] * shape[1], dim)).astype(np.float32) / 40.0
        self.head = rng.standard_normal(dim).astype(np.float32)

    def embed(self, x):
        x = np.asarray(x, dtype=np.float32)
        return np.tanh((x.reshape(x.shape[0], -1) / 40.0 + 1.0) @ self.w)

    def similarity(self, a, b):
        return (-(((a - b) ** 2) @ np.abs(self.head)) / self.head.size).astype(np.float32)


def spectrogram(seed: int, shape=SHAPE) -> np.ndarray:
    """A log-mel-like image: smooth blobs over a floor 80 dB below the maximum."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    image = np.zeros(shape)
    for _ in range(4):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        image += rng.uniform(60, 95) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(2, 5) ** 2))
    image = image - 70.0 + rng.normal(0, 0.5, shape)
    return np.maximum(image, image.max() - 80.0).astype(np.float32)


SEG = SegmenterConfig(method="felzenszwalb", scale=50.0, sigma=1.0, min_size=40)


def make_task(seed=0, ways=3):
    query = spectrogram(seed)
    supports = np.stack([spectrogram(seed + 1 + c) for c in range(ways)])
    labels = [segment(s, SEG) for s in supports]
    fills = [fill_level(s, "floor", top_db=80.0) for s in supports]
    return query, supports, labels, fills

"""A no-learning baseline: cosine similarity of the flattened raw log-mel spectrograms.

Scored on the same tasks as the network, it shows what training adds. The raw
log-mels are used as they are (no centring or scaling), so the baseline is what a
reader would get from the stored features alone.
"""

from __future__ import annotations

import numpy as np

#: How the baseline is described in reports.
BASELINE_NAME = "cosine similarity of flattened raw log-mels (no learning)"


class RawCosineEmbedder:
    """An :class:`~evaluation.embedder.Embedder` with no parameters.

    ``embed`` flattens each spectrogram and scales it to unit length (a zero
    spectrogram stays zero); ``similarity`` is then the dot product, i.e. the
    cosine similarity of the raw log-mels, in ``[-1, 1]``.

    Embeddings are as large as the spectrograms (``n_mels * n_frames`` floats per clip).
    """

    def embed(self, x: np.ndarray) -> np.ndarray:
        """[shape=(B, n_mels, n_frames)] -> unit vectors [shape=(B, n_mels * n_frames), float32]."""
        flat = np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1)
        norms = np.linalg.norm(flat, axis=1, keepdims=True)
        return np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 0)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity of paired unit vectors, [shape=(P, D)] each -> [shape=(P,), float32]."""
        return np.einsum("pd,pd->p", a, b).astype(np.float32, copy=False)

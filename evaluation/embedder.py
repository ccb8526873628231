"""The embedder protocol: all that evaluation needs from a trained model.

Evaluation never imports :mod:`training`; the CLI (or training's validation loop)
hands it an object that satisfies :class:`Embedder`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Turns spectrograms into embeddings and scores pairs of embeddings.

    Implementations run on whatever device they like; inputs and outputs are
    NumPy arrays so that evaluation stays framework-free.
    """

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Embed a batch of spectrograms.

        Parameters
        ----------
        x : np.ndarray [shape=(B, n_mels, n_frames), dtype=float32]

        Returns
        -------
        np.ndarray [shape=(B, D), dtype=float32]
        """
        ...

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Score pairs of embeddings; higher means more similar. Tasks are ranked by it.

        Return a score that does not saturate: a network's logit, not its
        sigmoid (a float32 sigmoid is exactly 1.0 above a logit of about 16.7,
        which ties supports the network tells apart), or for a distance-trained
        network minus the distance. Probabilities belong where one is shown.

        Parameters
        ----------
        a, b : np.ndarray [shape=(P, D)]
            Row ``i`` of ``a`` is paired with row ``i`` of ``b``.

        Returns
        -------
        np.ndarray [shape=(P,), dtype=float32]
        """
        ...


@runtime_checkable
class LocalEmbedder(Protocol):
    """An :class:`Embedder` that can embed copies of one clip recomputing only what they change.

    Explanations use it where an embedder offers it (see
    :mod:`siamese_audio.training.incremental`); the embeddings must equal
    :meth:`Embedder.embed`'s up to float rounding.
    """

    def local_context(self, base: np.ndarray) -> object | None:
        """Whatever :meth:`embed_local` needs of ``base`` [shape=(n_mels, n_frames)]; ``None``: not supported."""
        ...

    def embed_local(self, context: object, x: np.ndarray) -> np.ndarray:
        """Embed copies of the context's base [shape=(B, n_mels, n_frames)] -> [shape=(B, D), dtype=float32]."""
        ...

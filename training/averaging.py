"""Weight averaging and embedding statistics: what the checkpoint keeps besides the trained weights.

:class:`WeightAverage` is an exponential moving average of a network's weights
(and of its batch-norm statistics), updated after every optimiser step; the
training loop validates and saves the averaged copy. :func:`embedding_mean` is
the mean embedding of training clips that a network with
``ModelConfig.embed_center`` subtracts before its head.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from siamese_audio.training.model import SiameseNet


class WeightAverage:
    """Exponential moving average of a network's parameters and float buffers.

    After step ``t`` (counted from 1) the average moves towards the weights by
    ``1 - d_t`` with ``d_t = min(decay, (1 + t) / (10 + t))``: early on the
    average follows the weights closely (the usual warm-up of the decay), later
    it remembers about ``1 / (1 - decay)`` steps. Integer buffers (batch norm's
    step counters) are copied.

    Parameters
    ----------
    model : SiameseNet
        The network being trained; the average starts as a copy of it.
    decay : float
        In (0, 1).
    """

    def __init__(self, model: SiameseNet, decay: float) -> None:
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.steps = 0

    @torch.no_grad()
    def update(self, model: SiameseNet) -> None:
        """Move the average towards ``model``'s current weights (call after each optimiser step)."""
        self.steps += 1
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        ours = self.model.state_dict()
        for name, value in model.state_dict().items():
            target = ours[name]
            if torch.is_floating_point(value):
                target.mul_(d).add_(value.detach(), alpha=1.0 - d)
            else:
                target.copy_(value)

    def state_dict(self) -> dict:
        """The averaged weights and the step count (for ``last.pt``)."""
        return {"model_state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.model.load_state_dict(state["model_state"])
        self.steps = int(state["steps"])


def center_rows(train_rows: dict[str, np.ndarray], count: int, seed: int) -> np.ndarray:
    """``count`` training rows (at most all), the same for a given seed, spread over classes, sorted.

    Returns
    -------
    np.ndarray [shape=(min(count, n_train),), int64]
    """
    rows = np.concatenate([np.asarray(train_rows[name], dtype=np.int64) for name in sorted(train_rows)])
    if count >= rows.size:
        return np.sort(rows)
    rng = np.random.default_rng([int(seed), 0x63656E74])  # its own stream: the run's batches stay as they were
    return np.sort(rng.choice(rows, size=count, replace=False))


@torch.no_grad()
def embedding_mean(model: SiameseNet, read: Callable[[np.ndarray], np.ndarray], rows: np.ndarray,
                   device: torch.device, *, batch_size: int = 32) -> torch.Tensor:
    """Mean embedding (before centring, test-time crops included) of the clips at ``rows``.

    Parameters
    ----------
    model : SiameseNet
        Put in eval mode while embedding; its previous mode is restored.
    read : callable
        ``read(rows) -> float32 [shape=(N, n_mels, n_frames)]``.
    rows : np.ndarray [shape=(N,)]
    device : torch.device
    batch_size : int
        Clips per forward pass.

    Returns
    -------
    torch.Tensor [shape=(fc_units,), float32]
    """
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros(model.config.fc_units, dtype=torch.float64)
        for start in range(0, rows.size, batch_size):
            x = torch.from_numpy(np.ascontiguousarray(read(rows[start:start + batch_size]), dtype=np.float32))
            total += model.embed_raw(x.to(device)).double().sum(dim=0).cpu()
        return (total / max(rows.size, 1)).float()
    finally:
        model.train(was_training)

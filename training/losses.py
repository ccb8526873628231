"""Pair losses of the report's Table 2.2, on embedding pairs.

Each returns the mean loss and the per-pair predictions (``True`` = same class)
used for the training accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from siamese_audio.training.model import SiameseNet


def pair_loss(
    model: SiameseNet, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, *, kind: str, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of embedding pairs.

    Parameters
    ----------
    model : SiameseNet
        Supplies the merge and head (or the distance, for ``"contrastive"``).
    a, b : torch.Tensor [shape=(P, D)]
        Embeddings of the pairs' left and right clips.
    labels : torch.Tensor [shape=(P,), float32]
        1 = same class, 0 = different.
    kind : str
        ``"bce"``: binary cross-entropy on the head's logits (the report);
        ``"mse"``: squared error of the sigmoid;
        ``"contrastive"``: ``y d^2 + (1 - y) max(0, margin - d)^2`` on the distance ``d``.
    margin : float
        Contrastive margin; a pair is predicted "same" when ``d < margin / 2``.

    Returns
    -------
    loss : torch.Tensor [shape=()]
    predicted_same : torch.Tensor [shape=(P,), bool]
    """
    if kind == "contrastive":
        d = model.distance(a, b)
        loss = (labels * d.pow(2) + (1 - labels) * torch.clamp(margin - d, min=0).pow(2)).mean()
        return loss, d.detach() < margin / 2
    logits = model.logits(a, b).float()
    if kind == "mse":
        loss = F.mse_loss(torch.sigmoid(logits), labels)
    else:
        loss = F.binary_cross_entropy_with_logits(logits, labels)
    return loss, logits.detach() > 0

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


def batch_loss(
    model: SiameseNet, z: torch.Tensor, labels: torch.Tensor, *, kind: str, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss over every pair of a class batch (``P`` classes x ``K`` clips, encoded once).

    Parameters
    ----------
    model : SiameseNet
        Supplies the difference head for ``"bce-all"``.
    z : torch.Tensor [shape=(B, D)]
        Embeddings, ``K`` consecutive rows per class.
    labels : torch.Tensor [shape=(B,), int64]
        Class index of each row.
    kind : str
        ``"bce-all"``: binary cross-entropy of the head's logit over all
        ``B (B - 1) / 2`` pairs, positives and negatives weighted equally;
        ``"supcon"``: supervised contrastive loss (every other clip of the class
        is a positive) on cosine similarities divided by ``temperature``;
        ``"proto"``: prototypical loss, the first half of each class's clips
        averaged into its prototype, the second half classified by minus the
        squared distance.
    temperature : float

    Returns
    -------
    loss : torch.Tensor [shape=()]
    correct : torch.Tensor [shape=(n,), bool]
        Per decision: pair predicted same/different correctly (``bce-all``), the
        nearest other clip of the same class (``supcon``), query nearest to its
        own prototype (``proto``).
    """
    z = z.float()
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    same = (labels[:, None] == labels[None, :]) & ~eye
    if kind == "supcon":
        zn = F.normalize(z, dim=1)
        sims = (zn @ zn.T).masked_fill(eye, float("-inf"))
        log_prob = sims / temperature - torch.logsumexp(sims / temperature, dim=1, keepdim=True)
        positives = same.sum(dim=1).clamp(min=1)
        loss = -(log_prob.masked_fill(~same, 0.0).sum(dim=1) / positives).mean()
        return loss, same[torch.arange(n), sims.argmax(dim=1)]
    if kind == "proto":
        classes = int(labels.max()) + 1
        per_class = z.view(classes, n // classes, -1)
        shots = per_class.shape[1] // 2
        prototypes = per_class[:, :shots].mean(dim=1)
        queries = per_class[:, shots:].reshape(-1, z.shape[1])
        target = torch.arange(classes, device=z.device).repeat_interleave(per_class.shape[1] - shots)
        logits = -torch.cdist(queries, prototypes).pow(2)
        return F.cross_entropy(logits, target), logits.argmax(dim=1) == target
    if kind == "bce-all":
        i, j = torch.triu_indices(n, n, 1, device=z.device)
        target = same[i, j].float()
        logits = model.logits(z[i], z[j]).float()
        weight = target / target.sum().clamp(min=1) + (1 - target) / (1 - target).sum().clamp(min=1)
        loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / 2
        return loss, (logits.detach() > 0) == target.bool()
    raise ValueError(f"Expected a class-batch loss ('bce-all', 'supcon', 'proto'). Got {kind!r}.")

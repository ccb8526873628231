"""The optimiser and its learning-rate schedule (a pure function of the epoch)."""

from __future__ import annotations

import math

import torch

from siamese_audio.training.config import TrainConfig


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (0-based): linear warm-up, then constant or cosine decay to 0.

    A function of the epoch only, so a resumed run follows the same schedule.
    """
    if config.warmup_epochs and epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / config.warmup_epochs
    if config.lr_schedule == "constant":
        return config.lr
    span = max(1, config.max_epochs - config.warmup_epochs)
    progress = min(1.0, (epoch - config.warmup_epochs) / span)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the report's, with L2 ``weight_decay``) or AdamW (decoupled decay)."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

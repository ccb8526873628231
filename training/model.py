"""The Siamese network: one convolutional encoder shared by both towers, a merge, a one-unit head.

As the authors' code has it: Conv 64 5x5 -> max-pool 2 -> Conv 32 5x5 -> max-pool 2 ->
Conv 12 3x3 -> max-pool 2, 'same' padding, ReLU; flatten; FC 4096 with ReLU;
Glorot-uniform weights and zero biases. The merge is the element-wise squared
(or absolute) difference of the two embeddings; the head is one linear unit
whose sigmoid is the similarity. Training works on the head's logits.
"""

from __future__ import annotations

import torch
from torch import nn

from siamese_audio.training.config import ModelConfig


def _glorot(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


class Encoder(nn.Module):
    """Spectrogram -> embedding.

    Parameters
    ----------
    config : ModelConfig
    input_shape : tuple[int, int]
        ``(n_mels, n_frames)`` of one clip (the feature version's ``shape``).
    """

    def __init__(self, config: ModelConfig, input_shape: tuple[int, int]) -> None:
        super().__init__()
        channels, height, width = config.embedding_input_shape(input_shape)
        pool = nn.MaxPool2d if config.pooling == "max" else nn.AvgPool2d
        layers: list[nn.Module] = []
        in_channels = 1
        for filters, kernel in zip(config.conv_filters, config.conv_kernels):
            layers += [nn.Conv2d(in_channels, filters, kernel, padding="same"), nn.ReLU(), pool(2)]
            if config.dropout_conv > 0:
                layers.append(nn.Dropout(config.dropout_conv))
            in_channels = filters
        layers += [nn.Flatten(), nn.Linear(channels * height * width, config.fc_units), nn.ReLU()]
        if config.dropout_fc > 0:
            layers.append(nn.Dropout(config.dropout_fc))
        self.layers = nn.Sequential(*layers)
        self.input_shape = tuple(input_shape)
        self.apply(_glorot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``x`` [shape=(B, n_mels, n_frames)] into [shape=(B, fc_units)]."""
        return self.layers(x.unsqueeze(1))


class SiameseNet(nn.Module):
    """Encoder + merge + one-unit head.

    Parameters
    ----------
    config : ModelConfig
    input_shape : tuple[int, int]
        ``(n_mels, n_frames)`` of one clip.
    """

    def __init__(self, config: ModelConfig, input_shape: tuple[int, int]) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config, input_shape)
        self.head = nn.Linear(config.fc_units, 1)
        _glorot(self.head)
        # Input standardisation (config.input_norm == "standardize"); saved with the weights.
        self.register_buffer("input_mean", torch.zeros(()))
        self.register_buffer("input_std", torch.ones(()))

    def set_input_stats(self, mean: float, std: float) -> None:
        """Set the standardisation used when ``config.input_norm == "standardize"``."""
        self.input_mean.fill_(float(mean))
        self.input_std.fill_(float(std) if std > 0 else 1.0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[shape=(B, n_mels, n_frames)] -> [shape=(B, fc_units)]."""
        if self.config.input_norm == "standardize":
            x = (x - self.input_mean) / self.input_std
        return self.encoder(x)

    def merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Element-wise squared or absolute difference, [shape=(P, D)] each -> (P, D)."""
        diff = a - b
        return diff * diff if self.config.merge == "squared" else diff.abs()

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Head logits of embedding pairs, [shape=(P, D)] each -> [shape=(P,)]."""
        return self.head(self.merge(a, b)).squeeze(-1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance used by the contrastive loss: Euclidean (squared merge) or L1 (abs merge), (P,)."""
        merged = self.merge(a, b).float().sum(dim=-1)
        return torch.sqrt(merged + 1e-12) if self.config.merge == "squared" else merged

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """Logits of spectrogram pairs, each side encoded separately: (P, H, W) x 2 -> (P,)."""
        return self.logits(self.embed(xa), self.embed(xb))


def build_model(config: ModelConfig, input_shape: tuple[int, int], *, seed: int) -> SiameseNet:
    """Build a Glorot-initialised network whose weights depend only on ``seed``."""
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return SiameseNet(config, tuple(input_shape))
    finally:
        torch.set_rng_state(generator_state)

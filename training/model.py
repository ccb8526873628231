"""The Siamese network: one convolutional encoder shared by both towers, and a similarity head.

The defaults are the authors' network: Conv 64 5x5 -> max-pool 2 -> Conv 32 5x5 ->
max-pool 2 -> Conv 12 3x3 -> max-pool 2, 'same' padding, ReLU; flatten; FC 4096
with ReLU; Glorot-uniform weights and zero biases; the merge is the element-wise
squared (or absolute) difference of the two embeddings and the head one linear
unit whose logit is the similarity.

The options of :class:`~siamese_audio.training.config.ModelConfig` make the
networks that learn on a CPU: the input standardised per mel band with
training-class statistics (buffers saved with the weights), averaged over time
inside the model, batch norm after each convolution, global pooling of the
last feature maps into a linear embedding, and a cosine or Euclidean head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from siamese_audio.training.config import ModelConfig


def _glorot(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Encoder(nn.Module):
    """Spectrogram -> embedding.

    Parameters
    ----------
    config : ModelConfig
    input_shape : tuple[int, int]
        ``(n_mels, n_frames)`` of one stored clip (the feature version's ``shape``).
    """

    def __init__(self, config: ModelConfig, input_shape: tuple[int, int]) -> None:
        super().__init__()
        channels, height, width = config.embedding_input_shape(input_shape)
        pool = nn.MaxPool2d if config.pooling == "max" else nn.AvgPool2d
        layers: list[nn.Module] = []
        in_channels = 1
        for filters, kernel in zip(config.conv_filters, config.conv_kernels):
            if config.batch_norm:
                layers += [nn.Conv2d(in_channels, filters, kernel, padding="same", bias=False),
                           nn.BatchNorm2d(filters), nn.ReLU(), pool(2)]
            else:
                layers += [nn.Conv2d(in_channels, filters, kernel, padding="same"), nn.ReLU(), pool(2)]
            if config.dropout_conv > 0:
                layers.append(nn.Dropout(config.dropout_conv))
            in_channels = filters
        self.global_pool = config.global_pool
        self.input_pool = (config.freq_pool, config.time_pool)
        if config.global_pool == "none":
            layers += [nn.Flatten(), nn.Linear(channels * height * width, config.fc_units), nn.ReLU()]
            if config.dropout_fc > 0:
                layers.append(nn.Dropout(config.dropout_fc))
            self.project: nn.Module | None = None
        else:
            pooled = 2 * channels if config.global_pool == "avgmax" else channels
            self.project = nn.Sequential(
                nn.Linear(pooled, config.fc_units),
                *([nn.Dropout(config.dropout_fc)] if config.dropout_fc > 0 else []),
            )
        self.layers = nn.Sequential(*layers)
        self.input_shape = tuple(input_shape)
        if config.init == "glorot":
            self.apply(_glorot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``x`` [shape=(B, n_mels, n_frames)] into [shape=(B, fc_units)].

        With global pooling any ``n_frames`` of at least ``config.min_frames()`` works.
        """
        h = x.unsqueeze(1)
        if self.input_pool != (1, 1):
            h = F.avg_pool2d(h, self.input_pool)
        return self.tail(h, 0)

    def tail(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Run ``layers[start:]``, then the global pooling and projection, on feature maps (B, C, H, W).

        ``tail(h, 0)`` on the input-pooled spectrogram is the whole encoder; incremental
        embedding (:mod:`~siamese_audio.training.incremental`) runs it from the end of the
        convolutional part.
        """
        for module in list(self.layers)[start:]:
            h = module(h)
        if self.project is None:
            return h
        if self.global_pool == "avg":
            h = h.mean(dim=(2, 3))
        elif self.global_pool == "max":
            h = h.amax(dim=(2, 3))
        else:  # avgmax: mean over mel bands, then mean and max over time
            h = h.mean(dim=2)
            h = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return self.project(h)


class SiameseNet(nn.Module):
    """Input normalisation + encoder + similarity head.

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
        if config.classifier_classes:
            # auxiliary classifier over the training classes (training only; the similarity never calls it)
            self.classifier = nn.Linear(config.fc_units, config.classifier_classes)
        if config.embed_center:
            # mean embedding of training clips, set during training (evaluation subtracts it too)
            self.register_buffer("embed_mean", torch.zeros(config.fc_units))
        # Input statistics from training clips, saved with the weights (evaluation applies them too).
        if config.input_norm == "per_band":
            self.register_buffer("input_mean", torch.zeros(input_shape[0]))
            self.register_buffer("input_std", torch.ones(input_shape[0]))
        else:
            self.register_buffer("input_mean", torch.zeros(()))
            self.register_buffer("input_std", torch.ones(()))

    def set_input_stats(self, mean, std) -> None:
        """Set the standardisation: scalars (``"standardize"``) or per mel band [shape=(n_mels,)] (``"per_band"``)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(self.input_mean.shape)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(self.input_std.shape)
        self.input_mean.copy_(mean)
        self.input_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise spectrograms [shape=(B, n_mels, n_frames)] as ``config.input_norm`` says."""
        if self.config.input_norm == "standardize":
            return (x - self.input_mean) / self.input_std
        if self.config.input_norm == "per_band":
            return (x - self.input_mean[:, None]) / self.input_std[:, None]
        return x

    def embed_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding before centring, with test-time crops: [shape=(B, n_mels, n_frames)] -> (B, fc_units).

        With ``config.tta_crops`` > 1 (or ``tta_frames`` shorter than the clip) the
        mean over windows of ``tta_frames`` frames at evenly spaced starts.
        """
        h = self.normalize(x)
        frames, crops = self.config.tta_frames, self.config.tta_crops
        if not frames or frames >= h.shape[-1]:
            return self.encoder(h)
        starts = torch.linspace(0, h.shape[-1] - frames, crops).round().long().tolist()
        return torch.stack([self.encoder(h[..., s:s + frames]) for s in starts]).mean(dim=0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[shape=(B, n_mels, n_frames)] -> [shape=(B, fc_units)] (test-time crops, then centring, if configured)."""
        return self.center(self.embed_raw(x))

    def center(self, z: torch.Tensor) -> torch.Tensor:
        """Subtract the training-clip mean embedding from ``z`` [shape=(B, fc_units)] where configured."""
        if self.config.embed_center:
            z = z - self.embed_mean.to(z.dtype)
        return z

    def set_embed_mean(self, mean: torch.Tensor) -> None:
        """Set the centring vector [shape=(fc_units,)] (``config.embed_center``)."""
        self.embed_mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(self.embed_mean.shape))

    def merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Element-wise squared or absolute difference, [shape=(P, D)] each -> (P, D)."""
        diff = a - b
        return diff * diff if self.config.merge == "squared" else diff.abs()

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Similarity logits of embedding pairs, [shape=(P, D)] each -> [shape=(P,)]; higher is more similar.

        ``difference``: the linear unit on the merged difference (its sigmoid is the
        probability of "same class"); ``cosine``: the cosine of the embeddings;
        ``euclidean``: minus the squared Euclidean distance.
        """
        if self.config.head == "cosine":
            return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)
        if self.config.head == "euclidean":
            return -(a.float() - b.float()).pow(2).sum(dim=-1)
        return self.head(self.merge(a, b)).squeeze(-1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance used by the contrastive loss: Euclidean (squared merge) or L1 (abs merge), (P,)."""
        merged = self.merge(a, b).float().sum(dim=-1)
        return torch.sqrt(merged + 1e-12) if self.config.merge == "squared" else merged

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """Logits of spectrogram pairs, each side encoded separately: (P, H, W) x 2 -> (P,)."""
        return self.logits(self.embed(xa), self.embed(xb))


def build_model(config: ModelConfig, input_shape: tuple[int, int], *, seed: int) -> SiameseNet:
    """Build a network whose initial weights depend only on ``seed``."""
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return SiameseNet(config, tuple(input_shape))
    finally:
        torch.set_rng_state(generator_state)

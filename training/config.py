"""Model and training configurations: frozen dataclasses, presets, TOML overrides.

The search space is the report's Table 2.2 (1-4 conv layers, filters 12/32/64,
max or average pooling, FC 1024/2048/4096, absolute or squared difference,
binary cross-entropy / MSE / contrastive loss, dropout 0/0.25/0.5, 2/4/6
positive pairs, ratios 1:1 1:2 1:3 2:1 3:1). Categorical choices are checked
against that space; sizes (filters, kernels, FC units) accept any positive
integer so that the ``tiny`` preset can run in seconds on a CPU.

A TOML file overrides a preset field by field::

    preset = "report-esc50"        # optional; the CLI's --preset wins if both given

    [model]
    fc_units = 1024
    conv_filters = [64, 32]
    conv_kernels = [5, 5]

    [train]
    pos = 4
    ratio = "1:2"                  # or [1, 2]
    lr = 0.0005
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamese_audio.errors import TrainingError

POOLINGS = ("max", "avg")
INPUT_NORMS = ("none", "standardize")
MERGES = ("squared", "abs")
LOSSES = ("bce", "mse", "contrastive")


def _positive_int(owner: str, field: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TrainingError(f"{owner}: expected {field} to be a positive integer. Got {value!r} instead.")


def _choice(owner: str, field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TrainingError(f"{owner}: expected {field} in {choices}. Got {value!r} instead.")


def _probability(owner: str, field: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise TrainingError(f"{owner}: expected {field} to be a number in [0, 1). Got {value!r} instead.")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the Siamese network (one encoder shared by both towers).

    Attributes
    ----------
    conv_filters : tuple[int, ...]
        Filters of each conv block, 1 to 4 blocks (report: 64, 32, 12).
    conv_kernels : tuple[int, ...]
        Square kernel size of each conv block, same length (report: 5, 5, 3).
    pooling : str
        ``"max"`` or ``"avg"``; every block pools 2 x 2 (floor), after ReLU.
    fc_units : int
        Width of the fully connected embedding layer (report: 4096), ReLU.
    merge : str
        ``"squared"`` (report) or ``"abs"`` element-wise difference of embeddings.
    dropout_conv, dropout_fc : float
        Dropout after each conv block / after the FC layer (report: 0.0).
    input_norm : str
        ``"none"`` (the authors' code: raw dB values in) or ``"standardize"``:
        subtract one mean and divide by one standard deviation, estimated from
        training clips when training starts and kept in the weights. Log-mels
        with ``ref=1.0`` sit far below zero (around -40 dB and lower); with
        ``"none"`` many ReLU units of a Glorot-initialised encoder start dead and
        the network generalises poorly to unseen classes on synthetic sets.
    """

    conv_filters: tuple[int, ...] = (64, 32, 12)
    conv_kernels: tuple[int, ...] = (5, 5, 3)
    pooling: str = "max"
    fc_units: int = 4096
    merge: str = "squared"
    dropout_conv: float = 0.0
    dropout_fc: float = 0.0
    input_norm: str = "none"

    def __post_init__(self) -> None:
        owner = "Model config"
        for field in ("conv_filters", "conv_kernels"):
            value = getattr(self, field)
            if not isinstance(value, tuple) or not 1 <= len(value) <= 4:
                raise TrainingError(
                    f"{owner}: expected {field} to be a tuple of 1 to 4 integers. Got {value!r} instead."
                )
            for item in value:
                _positive_int(owner, field, item)
        if len(self.conv_filters) != len(self.conv_kernels):
            raise TrainingError(
                f"{owner}: expected conv_kernels to have one size per conv layer "
                f"({len(self.conv_filters)}). Got {len(self.conv_kernels)}: {self.conv_kernels!r}."
            )
        _choice(owner, "pooling", self.pooling, POOLINGS)
        _positive_int(owner, "fc_units", self.fc_units)
        _choice(owner, "merge", self.merge, MERGES)
        _probability(owner, "dropout_conv", self.dropout_conv)
        _probability(owner, "dropout_fc", self.dropout_fc)
        _choice(owner, "input_norm", self.input_norm, INPUT_NORMS)

    def embedding_input_shape(self, shape: tuple[int, int]) -> tuple[int, int, int]:
        """Shape ``(channels, height, width)`` reaching the FC layer for input ``shape``.

        Raises
        ------
        TrainingError
            When the pooling would shrink the input to nothing.
        """
        height, width = shape
        for _ in self.conv_filters:
            height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise TrainingError(
                f"Model config: {len(self.conv_filters)} conv blocks pool the input "
                f"{tuple(shape)} by {2 ** len(self.conv_filters)}; expected at least "
                f"{2 ** len(self.conv_filters)} mels and frames. Use fewer conv layers."
            )
        return (self.conv_filters[-1], height, width)


@dataclass(frozen=True)
class TrainConfig:
    """How the network is trained and validated (Algorithms 1-2).

    Attributes
    ----------
    loss : str
        ``"bce"`` (report; on logits), ``"mse"`` (on the sigmoid), or
        ``"contrastive"`` (on the embedding distance, with ``margin``).
    pos : int
        Positive pairs per training class per batch (report: 2 AudioMNIST, 4 ESC-50).
    ratio : tuple[int, int]
        Positive-to-negative ratio ``(p, n)``; ``neg = round(pos * n / p)``, at least 1.
    lr : float
        Adam learning rate (Keras' default, 0.001).
    max_epochs : int
        Epochs at most; one epoch is one batch (report: 5000).
    eval_every : int
        Epochs between validations (report: 100).
    eval_tasks : int
        One-shot tasks per validation (report: 300), spread over the
        validation classes: ``ceil(eval_tasks / n_classes)`` runs per class.
    patience : int
        Validations without improvement before stopping (report: 10).
    seed : int
        Seeds the weights, the pair sampler and the validation tasks.
    ways : int
        Classes per one-shot task (report: 5).
    margin : float
        Margin of the contrastive loss (distance units).
    eval_batch_size : int
        Clips per forward pass when validating.
    """

    loss: str = "bce"
    pos: int = 2
    ratio: tuple[int, int] = (1, 1)
    lr: float = 1e-3
    max_epochs: int = 5000
    eval_every: int = 100
    eval_tasks: int = 300
    patience: int = 10
    seed: int = 0
    ways: int = 5
    margin: float = 1.0
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        owner = "Training config"
        _choice(owner, "loss", self.loss, LOSSES)
        for field in ("pos", "max_epochs", "eval_every", "eval_tasks", "patience", "eval_batch_size"):
            _positive_int(owner, field, getattr(self, field))
        if not isinstance(self.ratio, tuple) or len(self.ratio) != 2:
            raise TrainingError(
                f"{owner}: expected ratio to be a pair (positives, negatives) such as (1, 1). "
                f"Got {self.ratio!r} instead."
            )
        for item in self.ratio:
            _positive_int(owner, "ratio", item)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise TrainingError(f"{owner}: expected seed to be a non-negative integer. Got {self.seed!r} instead.")
        if not isinstance(self.ways, int) or isinstance(self.ways, bool) or self.ways < 2:
            raise TrainingError(f"{owner}: expected ways to be an integer >= 2. Got {self.ways!r} instead.")
        for field in ("lr", "margin"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise TrainingError(f"{owner}: expected {field} to be a positive number. Got {value!r} instead.")

    @property
    def neg(self) -> int:
        """Negative pairs per training class per batch: ``round(pos * n / p)``, at least 1."""
        return neg_count(self.pos, self.ratio)


def neg_count(pos: int, ratio: tuple[int, int]) -> int:
    """Negative pairs per class from ``pos`` and the ratio ``(p, n)`` (Algorithm 2, line 2).

    ``neg = pos * n / p`` rounded half up, at least 1: pos 4 at 2:1 gives 2 (the
    report's example), pos 2 at 1:3 gives 6, pos 2 at 3:1 gives 1.
    """
    p, n = ratio
    return max(1, math.floor(pos * n / p + 0.5))


PRESETS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    "report-audiomnist": (ModelConfig(), TrainConfig(pos=2, ratio=(1, 1))),
    "report-esc50": (ModelConfig(), TrainConfig(pos=4, ratio=(1, 1))),
    # Small enough for tests and CPU runs on 16 x 20 .. 64 x 64 inputs.
    "tiny": (
        ModelConfig(conv_filters=(12, 12), conv_kernels=(3, 3), fc_units=64, input_norm="standardize"),
        TrainConfig(pos=2, ratio=(1, 1), max_epochs=300, eval_every=10, eval_tasks=50, patience=5),
    ),
}


def preset(name: str) -> tuple[ModelConfig, TrainConfig]:
    """Return the ``(ModelConfig, TrainConfig)`` of preset ``name``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise TrainingError(f"Expected a training preset among {sorted(PRESETS)}. Got {name!r} instead.") from None


def parse_ratio(value: Any) -> tuple[int, int]:
    """Parse ``"1:2"``, ``[1, 2]`` or ``(1, 2)`` into ``(1, 2)``."""
    if isinstance(value, str):
        parts = value.replace("÷", ":").split(":")
        try:
            parsed = tuple(int(p) for p in parts)
        except ValueError:
            parsed = ()
        if len(parsed) == 2:
            return parsed  # type: ignore[return-value]
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(value)  # type: ignore[return-value]
    raise TrainingError(f"Expected ratio as 'p:n' or [p, n], such as '1:1'. Got {value!r} instead.")


def _apply(base: Any, table: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise TrainingError(f"{where}: expected keys among {sorted(names)}. Got unknown {unknown}.")
    values = dict(table)
    for key, value in values.items():
        if key == "ratio":
            values[key] = parse_ratio(value)
        elif isinstance(value, list):
            values[key] = tuple(value)
    return dataclasses.replace(base, **values)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of ``dataclasses.asdict`` (lists become tuples); unknown keys are an error."""
    return _apply(ModelConfig(), data, "Model config")


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of ``dataclasses.asdict`` (lists become tuples); unknown keys are an error."""
    return _apply(TrainConfig(), data, "Training config")


def load_config(path: str | Path, *, preset_name: str | None = None) -> tuple[ModelConfig, TrainConfig]:
    """Read a TOML file of overrides on top of a preset.

    Parameters
    ----------
    path : str or Path
        TOML file with optional top-level ``preset`` and tables ``[model]`` and ``[train]``.
    preset_name : str, optional
        Base preset; wins over the file's ``preset``. Default ``report-audiomnist``.

    Raises
    ------
    TrainingError
        Unreadable file, unknown table or key, or an invalid value (named).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingError(f"Training config file {path} does not exist.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"Training config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"preset", "model", "train"})
    if unknown:
        raise TrainingError(
            f"Training config file {path}: expected top-level keys among ['model', 'preset', 'train']. "
            f"Got unknown {unknown}."
        )
    model, train = preset(preset_name or data.get("preset", "report-audiomnist"))
    for key in ("model", "train"):
        if key in data and not isinstance(data[key], dict):
            raise TrainingError(f"Training config file {path}: expected [{key}] to be a table.")
    model = _apply(model, data.get("model", {}), f"Training config file {path} [model]")
    train = _apply(train, data.get("train", {}), f"Training config file {path} [train]")
    return model, train

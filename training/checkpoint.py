"""Checkpoints: written atomically, self-describing, loadable as an evaluation Embedder.

A run directory holds ``last.pt`` (everything needed to resume: weights,
optimizer state, RNG states, history) and ``best.pt`` (the best validation
weights and the same description, without optimizer or RNG states). Both carry
the model and training configs, the feature version id and its feature config,
the split id, the training classes, the dataset, seeds and library versions.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamese_audio import versions
from siamese_audio.errors import TrainingError
from siamese_audio.files import write_atomic
from siamese_audio.training.config import ModelConfig, TrainConfig, model_config_from_dict, train_config_from_dict
from siamese_audio.training.embedder import TorchEmbedder, similarity_kind
from siamese_audio.training.model import SiameseNet

FORMAT = "siamese-audio-checkpoint/1"
LAST = "last.pt"
BEST = "best.pt"

#: Keys every checkpoint carries besides the tensors.
META_KEYS = (
    "format", "kind", "model_config", "train_config", "input_shape", "feature_version_id", "feature_config",
    "split_id", "dataset", "training_classes", "validation_classes", "features_path", "split_path",
    "epoch", "best_val_accuracy", "best_epoch", "history", "seeds", "library_versions",
)

#: Keys newer checkpoints carry (older ones lack them): how the validation tasks drew their positives.
OPTIONAL_META_KEYS = ("validation_positives",)


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that determine the weights, and of this tool."""
    return {**versions.library_versions(("torch", "numpy"), python=True), "siamese-audio": versions.package_version()}


def rng_states(rng: np.random.Generator) -> dict[str, Any]:
    """States of the sampler's NumPy generator and torch's CPU (and CUDA) generators."""
    states: dict[str, Any] = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], rng: np.random.Generator) -> None:
    """Inverse of :func:`rng_states` (in place)."""
    rng.bit_generator.state = states["numpy"]
    torch.set_rng_state(states["torch"])
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def describe(
    *, model_config: ModelConfig, train_config: TrainConfig, input_shape: tuple[int, int], run_meta: dict[str, Any]
) -> dict[str, Any]:
    """The static part of a checkpoint: configs and what the run trained on.

    ``run_meta`` holds ``feature_version_id, feature_config, split_id, dataset,
    training_classes, validation_classes, features_path, split_path``.
    """
    return {
        "format": FORMAT,
        "model_config": asdict(model_config),
        "train_config": asdict(train_config),
        "input_shape": list(input_shape),
        **run_meta,
        # One seed drives the initial weights, the pair sampler and the validation
        # tasks; last.pt adds the generators' states ("rng_states") for resuming.
        "seeds": {"seed": train_config.seed},
        "library_versions": library_versions(),
    }


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` to ``path`` atomically (temporary file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(Path(path), buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    Raises
    ------
    TrainingError
        Missing, unreadable, or not a siamese-audio checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"Checkpoint {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise TrainingError(f"Checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise TrainingError(f"Checkpoint {path}: expected format {FORMAT!r}. Got {found!r}.")
    missing = [key for key in (*META_KEYS, "model_state") if key not in payload]
    if missing:
        raise TrainingError(f"Checkpoint {path}: expected keys {missing} are missing.")
    return payload


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the ``.NAME.tmp-*`` files that a run killed while writing a checkpoint left in ``run_dir``.

    Call it only when no other process writes into ``run_dir`` (resuming it).
    """
    removed = []
    for tmp in sorted(Path(run_dir).glob(".*.tmp-*")):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    TrainingError
        Unknown name, or ``"cuda"`` without a CUDA device.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise TrainingError(f"Expected a CUDA device for --device {device}. Got none (torch {torch.__version__}).")
        return torch.device(device)
    raise TrainingError(f"Expected device 'auto', 'cpu' or 'cuda'. Got {device!r} instead.")


def model_from_checkpoint(payload: dict[str, Any], device: torch.device) -> SiameseNet:
    """Rebuild the network a checkpoint describes and load its weights."""
    config = model_config_from_dict(payload["model_config"])
    model = SiameseNet(config, tuple(payload["input_shape"]))
    model.load_state_dict(payload["model_state"])
    return model.to(device)


def checkpoint_meta(payload: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's description without tensors (JSON-able)."""
    return {key: payload[key] for key in (*META_KEYS, *OPTIONAL_META_KEYS) if key in payload}


def load_embedder(
    checkpoint_path: str | Path, device: str | torch.device = "auto", *, precision: str = "auto"
) -> tuple[TorchEmbedder, dict]:
    """Load a checkpoint as an evaluation ``Embedder``.

    Parameters
    ----------
    checkpoint_path : str or Path
        ``best.pt`` or ``last.pt`` of a run (or a run directory: its ``best.pt``).
    device : str or torch.device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    precision : str
        :class:`TorchEmbedder`'s: ``"auto"`` (bf16 autocast on CUDA, evaluation) or
        ``"fp32"`` (explanations, whose perturbed scores differ by 1e-3..1e-2).

    Returns
    -------
    embedder : TorchEmbedder
    meta : dict
        ``feature_config, feature_version_id, split_id, training_classes, dataset,
        model_config, train_config, input_shape, epoch, best_val_accuracy, history, ...``
    """
    path = Path(checkpoint_path)
    if path.is_dir():
        path = path / BEST
    payload = load_checkpoint(path)
    torch_device = resolve_device(device)
    model = model_from_checkpoint(payload, torch_device)
    train_config = train_config_from_dict(payload["train_config"])
    embedder = TorchEmbedder(model, torch_device, batch_size=train_config.eval_batch_size,
                             similarity_kind=similarity_kind(train_config.loss), precision=precision)
    return embedder, checkpoint_meta(payload)

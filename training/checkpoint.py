"""Checkpoints: written atomically, self-describing, loadable as an evaluation Embedder.

A run directory holds ``last.pt`` (everything needed to resume: weights,
optimizer state, RNG states, history) and ``best.pt`` (the best validation
weights and the same description, without optimizer or RNG states). Both carry
the model and training configs, the feature version id and its feature config,
the split id, the training classes, the dataset, seeds and library versions.
"""

from __future__ import annotations

import errno
import io
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamese_audio import versions
from siamese_audio.errors import TrainingError
from siamese_audio.files import check_regular_stat, write_atomic
from siamese_audio.memory import available_bytes
from siamese_audio.training.config import ModelConfig, TrainConfig, model_config_from_dict, train_config_from_dict
from siamese_audio.training.embedder import TorchEmbedder, similarity_kind
from siamese_audio.training.model import SiameseNet

FORMAT = "siamese-audio-checkpoint/1"
LAST = "last.pt"
BEST = "best.pt"

#: Bounds on what a checkpoint may describe, checked before any model is built: the report's network
#: has 38.5 M parameters on 224 x 224 inputs.
MAX_PARAMETERS = 2**31
MAX_INPUT_SIDE = 2**16
#: Bounds on the description's texts: ids, dataset and class names; paths (PATH_MAX); classes.
MAX_NAME_CHARS, MAX_PATH_CHARS, MAX_CLASSES = 256, 4096, 100_000
#: The largest checkpoint file read: weights, their average and two optimizer moments of
#: :data:`MAX_PARAMETERS` float32 parameters, and room for the description. A file above the
#: memory available now is refused too (``torch.load`` holds it whole).
MAX_CHECKPOINT_BYTES = 4 * 4 * MAX_PARAMETERS + (64 << 20)
#: Resume state of ``last.pt`` besides :data:`META_KEYS`.
LAST_KEYS = ("optimizer_state", "rng_states", "epoch_losses", "epoch_accuracies", "evals_since_best", "stopped")
STOPS = (None, "patience", "max_epochs", "max_minutes")

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
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TrainingError(f"Checkpoint {path} does not exist.") from None
    except OSError as exc:
        raise TrainingError(f"Checkpoint {path} cannot be read: {exc.strerror or exc}.") from None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            limit = min(MAX_CHECKPOINT_BYTES, available_bytes())
            try:
                check_regular_stat(st, path, max_bytes=limit, what="checkpoint")
            except OSError as exc:
                why = ("" if exc.errno != errno.EFBIG else " (the format's limit)" if limit == MAX_CHECKPOINT_BYTES
                       else " (the memory available now: torch.load holds it whole)")
                raise TrainingError(f"Checkpoint {path} cannot be loaded: {exc.strerror}{why}.") from None
            payload = torch.load(f, map_location="cpu", weights_only=True)
    except TrainingError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise TrainingError(" ".join(f"Checkpoint {path} cannot be read: {type(exc).__name__}: {exc}".split())[:500]
                            ) from None
    try:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise _fail(path, f"format {FORMAT!r}", found)
        missing = [key for key in (*META_KEYS, "model_state") if key not in payload]
        if missing:
            raise TrainingError(f"Checkpoint {path}: expected keys {missing} are missing.")
        validate_checkpoint(payload, path)
    except TrainingError as exc:  # values quoted in the message may span lines (a tensor's repr)
        raise TrainingError(" ".join(str(exc).split())) from None
    return payload


def _fail(path: Path, what: str, got: Any) -> TrainingError:
    text = repr(got)
    return TrainingError(f"Checkpoint {path}: expected {what}. Got {text[:120] + ('...' if len(text) > 120 else '')}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _texts(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def expected_weights(config: ModelConfig, input_shape: tuple[int, int]) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Names, shapes and float-ness of the weights of the network ``config`` describes for ``input_shape``.

    The network is built on torch's meta device: no memory is allocated, whatever its size.

    Raises
    ------
    TrainingError
        The config cannot make a network for that shape (sizes past what a tensor can hold).
    """
    config.embedding_input_shape(input_shape)
    try:
        with torch.device("meta"):
            model = SiameseNet(config, input_shape)
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise TrainingError(f"Model config: cannot describe a network for input {input_shape} "
                            f"({type(exc).__name__}: {exc})"[:300]) from None
    return {name: (tuple(t.shape), torch.is_floating_point(t)) for name, t in model.state_dict().items()}


def expected_parameters(config: ModelConfig, input_shape: tuple[int, int]) -> list[tuple[int, ...]]:
    """Shapes of the network's trainable parameters, in the optimizer's order (built on the meta device)."""
    with torch.device("meta"):
        model = SiameseNet(config, input_shape)
    return [tuple(p.shape) for p in model.parameters()]


def validate_checkpoint(payload: dict[str, Any], path: Path) -> tuple[ModelConfig, tuple[int, int]]:
    """Bound and check a checkpoint's description and tensors before any model is built from it.

    The configs must parse, the input shape be two sizes in 1..:data:`MAX_INPUT_SIDE`, the network
    they describe hold at most :data:`MAX_PARAMETERS` parameters, the weights be finite tensors of
    exactly that network's names, shapes and kinds (so building it allocates what the file holds),
    the description's fields have their types, and ``last.pt`` carry a usable resume state.

    Raises
    ------
    TrainingError
        One line naming the checkpoint and the first field that does not fit.
    """
    if payload.get("kind") not in ("best", "last"):
        raise _fail(path, "kind 'best' or 'last'", payload.get("kind"))
    for key in ("model_config", "train_config"):
        if not isinstance(payload[key], dict):
            raise _fail(path, f"{key} to be a table of settings", payload[key])
    shape = payload["input_shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 2
            or not all(_is_int(n) and 1 <= n <= MAX_INPUT_SIDE for n in shape)):
        raise _fail(path, f"input_shape to be two sizes in 1..{MAX_INPUT_SIDE} (mels, frames)", shape)
    shape = (int(shape[0]), int(shape[1]))
    try:
        config = model_config_from_dict(payload["model_config"])
        train_config_from_dict(payload["train_config"])
        expected = expected_weights(config, shape)
    except TrainingError as exc:
        raise TrainingError(f"Checkpoint {path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"Checkpoint {path}: unusable settings ({type(exc).__name__}: {exc})"[:300]) from None
    count = sum(math.prod(s) for s, _ in expected.values())
    if count > MAX_PARAMETERS:
        raise TrainingError(f"Checkpoint {path}: its model config describes {count:,} parameters for input "
                            f"{shape}; expected at most {MAX_PARAMETERS:,}.")
    _check_weights(payload["model_state"], expected, path)
    _check_description(payload, path)
    if payload["kind"] == "last":
        _check_resume_state(payload, path)
        _check_optimizer(payload["optimizer_state"], expected_parameters(config, shape), path)
        if "ema_state" in payload:
            _check_average(payload["ema_state"], expected, path)
    return config, shape


def _check_average(state: Any, expected: dict[str, tuple[tuple[int, ...], bool]], path: Path) -> None:
    """The weight average of ``last.pt`` (``TrainConfig.ema_decay``): weights like the model's, a step count."""
    if not isinstance(state, dict) or set(state) != {"model_state", "steps"}:
        raise _fail(path, "ema_state to be a table of model_state and steps", type(state).__name__)
    if not _is_int(state["steps"]) or state["steps"] < 0:
        raise _fail(path, "ema_state steps to be a non-negative integer", state["steps"])
    _check_weights(state["model_state"], expected, path)


def _check_weights(state: Any, expected: dict[str, tuple[tuple[int, ...], bool]], path: Path) -> None:
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise _fail(path, "model_state to map weight names to tensors", type(state).__name__)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise TrainingError(f"Checkpoint {path}: its weights do not fit its model config: missing "
                            f"{missing[:5]}, unexpected {unexpected[:5]}."[:400])
    for name, (shape, floating) in expected.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor) or torch.is_floating_point(tensor) != floating:
            kind = "a float" if floating else "an integer"
            raise _fail(path, f"weight {name} to be {kind} tensor", getattr(tensor, "dtype", type(tensor).__name__))
        if tuple(tensor.shape) != shape:
            raise TrainingError(f"Checkpoint {path}: weight {name} has shape {tuple(tensor.shape)}; its model "
                                f"config and input shape make it {shape}.")
        if floating and not bool(torch.isfinite(tensor).all()):
            raise TrainingError(f"Checkpoint {path}: weight {name} holds NaN or Inf values.")


def _check_description(payload: dict[str, Any], path: Path) -> None:
    from siamese_audio.training.metrics import EvalRecord

    for key in ("training_classes", "validation_classes"):
        if not _texts(payload[key]):
            raise _fail(path, f"{key} to be a list of class names", payload[key])
    for key in ("feature_version_id", "split_id", "dataset", "features_path", "split_path"):
        if payload[key] is not None and not isinstance(payload[key], str):
            raise _fail(path, f"{key} to be a string", payload[key])
        limit = MAX_PATH_CHARS if key.endswith("_path") else MAX_NAME_CHARS
        if payload[key] is not None and len(payload[key]) > limit:
            raise TrainingError(f"Checkpoint {path}: expected {key} of at most {limit:,} characters. "
                                f"Got {len(payload[key]):,}.")
    for key in ("training_classes", "validation_classes"):
        long = [c for c in payload[key] if len(c) > MAX_NAME_CHARS]
        if long or len(payload[key]) > MAX_CLASSES:
            raise TrainingError(f"Checkpoint {path}: expected {key} of at most {MAX_CLASSES:,} names of at most "
                                f"{MAX_NAME_CHARS} characters. Got {len(payload[key]):,} names, {len(long):,} longer.")
    for key in ("feature_config", "seeds", "library_versions"):
        if payload[key] is not None and not isinstance(payload[key], dict):
            raise _fail(path, f"{key} to be a table", payload[key])
    for key in ("epoch", "best_epoch"):
        if not _is_int(payload[key]) or payload[key] < 0:
            raise _fail(path, f"{key} to be a non-negative integer", payload[key])
    if not _is_number(payload["best_val_accuracy"]):
        raise _fail(path, "best_val_accuracy to be a number", payload["best_val_accuracy"])
    fields = {f for f in EvalRecord.__dataclass_fields__}
    history = payload["history"]
    if not isinstance(history, list) or not all(
            isinstance(r, dict) and {"epoch", "train_loss", "train_accuracy", "val_accuracy"} <= set(r) <= fields
            and all(_is_number(v) for v in r.values()) for r in history):
        raise _fail(path, f"history to be a list of validation records with fields among {sorted(fields)}", history)


def _check_resume_state(payload: dict[str, Any], path: Path) -> None:
    missing = [key for key in LAST_KEYS if key not in payload]
    if missing:
        raise TrainingError(f"Checkpoint {path}: a last.pt checkpoint needs its resume state; {missing} are missing.")
    if not isinstance(payload["optimizer_state"], dict):
        raise _fail(path, "optimizer_state to be a table", type(payload["optimizer_state"]).__name__)
    rng = payload["rng_states"]
    if (not isinstance(rng, dict) or not isinstance(rng.get("numpy"), dict)
            or not isinstance(rng.get("torch"), torch.Tensor) or rng["torch"].dtype != torch.uint8):
        raise _fail(path, "rng_states with a 'numpy' table and a 'torch' byte tensor", type(rng).__name__)
    for key in ("epoch_losses", "epoch_accuracies"):
        values = payload[key]
        if not isinstance(values, list) or len(values) != payload["epoch"] or not all(_is_number(v) for v in values):
            raise _fail(path, f"{key} to be one number per epoch run ({payload['epoch']})", values)
    if not _is_int(payload["evals_since_best"]) or payload["evals_since_best"] < 0:
        raise _fail(path, "evals_since_best to be a non-negative integer", payload["evals_since_best"])
    if payload["stopped"] not in STOPS:
        raise _fail(path, f"stopped to be one of {STOPS}", payload["stopped"])
    if "elapsed_s" in payload and (not _is_number(payload["elapsed_s"]) or not 0 <= payload["elapsed_s"] < math.inf):
        raise _fail(path, "elapsed_s to be a non-negative number of seconds", payload["elapsed_s"])




#: Per-parameter state of the optimizers the tool makes (Adam, AdamW): tensors shaped like the parameter.
OPTIMIZER_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _check_optimizer(state: dict[str, Any], shapes: list[tuple[int, ...]], path: Path) -> None:
    """The optimizer state of ``last.pt`` fits the network: one group entry per parameter, moments of its shape.

    Checked like the weights before ``--resume`` loads it: ``param_groups`` list every parameter index
    once with finite, non-negative numeric settings; each ``state`` entry names a parameter, its
    ``step`` is a non-negative integer count and its moments are finite float tensors of that
    parameter's shape.
    """
    if set(state) != {"state", "param_groups"}:
        raise _fail(path, "optimizer_state with 'state' and 'param_groups'", sorted(map(str, state)))
    groups, per_param = state["param_groups"], state["state"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                               for g in groups):
        raise _fail(path, "optimizer param_groups to be a list of tables with 'params'", type(groups).__name__)
    listed = [i for g in groups for i in g["params"]]
    if not all(_is_int(i) for i in listed) or sorted(listed) != list(range(len(shapes))):
        raise TrainingError(f"Checkpoint {path}: its optimizer lists parameters {_short(listed)}; the network "
                            f"has {len(shapes)} (expected each of 0..{len(shapes) - 1} once).")
    for group in groups:
        for key, value in group.items():
            if key == "params" or isinstance(value, (bool, str)) or value is None:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            if not all(_is_number(v) and math.isfinite(v) and v >= 0 for v in values):
                raise _fail(path, f"optimizer setting {key} to be finite non-negative numbers", value)
    if not isinstance(per_param, dict):
        raise _fail(path, "optimizer state to map parameter indices to tables", type(per_param).__name__)
    for index, entry in per_param.items():
        if not _is_int(index) or not 0 <= index < len(shapes) or not isinstance(entry, dict):
            raise _fail(path, f"optimizer state keys to be parameter indices 0..{len(shapes) - 1} with tables",
                        index)
        step = entry.get("step")
        if isinstance(step, torch.Tensor):
            step = float(step) if step.numel() == 1 else None
        if not _is_number(step) or not math.isfinite(step) or step < 0 or step != int(step):
            raise _fail(path, f"optimizer step of parameter {index} to be a non-negative integer count",
                        entry.get("step"))
        for key in OPTIMIZER_MOMENTS:
            if key not in entry:
                continue
            tensor = entry[key]
            if not isinstance(tensor, torch.Tensor) or not torch.is_floating_point(tensor):
                raise _fail(path, f"optimizer {key} of parameter {index} to be a float tensor",
                            getattr(tensor, "dtype", type(tensor).__name__))
            if tuple(tensor.shape) != shapes[index]:
                raise TrainingError(f"Checkpoint {path}: optimizer {key} of parameter {index} has shape "
                                    f"{tuple(tensor.shape)}; the parameter is {shapes[index]}.")
            if not bool(torch.isfinite(tensor).all()):
                raise TrainingError(f"Checkpoint {path}: optimizer {key} of parameter {index} holds NaN or Inf.")


def _short(values: list[Any], limit: int = 8) -> str:
    text = ", ".join(repr(v) for v in values[:limit])
    return f"[{text}{f', ... {len(values) - limit} more' if len(values) > limit else ''}]"


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
                             similarity_kind=similarity_kind(train_config.loss), precision=precision,
                             channels_last=True)
    return embedder, checkpoint_meta(payload)

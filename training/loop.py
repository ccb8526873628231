"""Algorithm 1: train on one Algorithm 2 batch per epoch, validate on one-shot tasks, keep the best.

The loop is short and made of named helpers (``train_step``, ``validate``,
``save_run``). Each epoch draws one batch, reads its distinct clips once,
encodes each once, forms the pairs from the embeddings and takes one Adam
step. Every ``eval_every`` epochs (and at the last epoch) it measures the mean
accuracy of ``eval_tasks`` random ``ways``-way one-shot tasks on the validation
classes with the evaluation stage's evaluator; the same tasks (seeded by the
run's seed) at every validation, so that validations compare like with like.
Validation tasks follow evaluation's default rule for positives: from another
source recording than the query's where the catalog knows the sources (ESC-50),
and scores are the head's logits (no saturated, tied similarities).
It stops after ``patience`` validations without improvement or at ``max_epochs``.

At every validation the run directory gets ``last.pt`` (resumable state),
``best.pt`` when the accuracy improved, ``metrics.csv`` and ``curves.png``.
A run killed at any point resumes from ``last.pt`` and gives the same history.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamese_audio.errors import TrainingError
from siamese_audio.evaluation import POSITIVES_OTHER_RECORDING, evaluate_one_shot
from siamese_audio.training.checkpoint import (
    BEST,
    LAST,
    describe,
    load_checkpoint,
    resolve_device,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from siamese_audio.training.config import ModelConfig, TrainConfig
from siamese_audio.training.data import ReadFn, ResidentReader, StoreReader, TrainingInputs, input_stats
from siamese_audio.training.embedder import TorchEmbedder, autocast_context
from siamese_audio.training.losses import pair_loss
from siamese_audio.training.metrics import EvalRecord, plot_curves, write_metrics_csv
from siamese_audio.training.model import SiameseNet, build_model
from siamese_audio.training.sampler import PairBatch, sample_pair_batch, validate_class_rows

METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"

#: Validation positives come from another recording than the query's (evaluation's default rule).
VALIDATION_POSITIVES = POSITIVES_OTHER_RECORDING


@dataclass(frozen=True)
class RunData:
    """What the loop trains and validates on.

    Attributes
    ----------
    train_rows, val_rows : dict[str, np.ndarray]
        Class -> store rows [shape=(n_clips,), int64].
    read : callable
        ``read(rows) -> float32 [shape=(N, n_mels, n_frames)]`` (``FeatureVersion.read``).
    shape : tuple[int, int]
        ``(n_mels, n_frames)`` of one clip.
    meta : dict
        ``feature_version_id, feature_config, split_id, dataset, features_path, split_path``.
    val_sources : dict[str, np.ndarray] or None
        Source recording of each validation clip (aligned with ``val_rows``), or
        None when the catalog has none: validation positives then come from
        another recording than the query's where one exists.
    """

    train_rows: dict[str, np.ndarray]
    val_rows: dict[str, np.ndarray]
    read: ReadFn
    shape: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)
    val_sources: dict[str, np.ndarray] | None = None

    def run_meta(self) -> dict[str, Any]:
        """The checkpoint's description of the data (and of the validation tasks' positive rule)."""
        defaults = {"feature_version_id": None, "feature_config": None, "split_id": None, "dataset": None,
                    "features_path": None, "split_path": None}
        return {**defaults, **self.meta, "training_classes": sorted(self.train_rows),
                "validation_classes": sorted(self.val_rows),
                "validation_positives": VALIDATION_POSITIVES if self.val_sources is not None
                else f"{VALIDATION_POSITIVES} (not applied: the catalog records no source recording)"}


def run_data_from_inputs(inputs: TrainingInputs) -> RunData:
    """:class:`RunData` of an opened feature version and split."""
    from siamese_audio.manifests.split_catalog import clip_sources

    version, split = inputs.version, inputs.split
    return RunData(
        train_rows=inputs.train_rows, val_rows=inputs.val_rows, read=version.read, shape=inputs.shape,
        val_sources=clip_sources(version, inputs.val_rows),
        meta={"feature_version_id": version.version_id, "feature_config": dict(version.feature_config),
              "split_id": split.split_id, "dataset": version.dataset, "features_path": str(version.path),
              "split_path": str(inputs.split_path)},
    )


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    run_dir : Path
    best_checkpoint : Path
        ``run_dir / "best.pt"``.
    best_val_accuracy : float
    best_epoch : int
    epochs_run : int
    stopped : str
        ``"patience"`` or ``"max_epochs"``.
    history : tuple[EvalRecord, ...]
    """

    run_dir: Path
    best_checkpoint: Path
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    stopped: str
    history: tuple[EvalRecord, ...]


@dataclass
class _State:
    """Mutable progress of a run (what ``last.pt`` saves besides tensors)."""

    epoch: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    epoch_accuracies: list[float] = field(default_factory=list)
    history: list[EvalRecord] = field(default_factory=list)
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    evals_since_best: int = 0
    stopped: str | None = None


def validation_runs(eval_tasks: int, n_classes: int) -> int:
    """Tasks per validation class so that at least ``eval_tasks`` tasks run: ``ceil(eval_tasks / n_classes)``."""
    return math.ceil(eval_tasks / n_classes)


def check_run_data(data: RunData, config: TrainConfig) -> None:
    """Refuse data that cannot be trained or validated with ``config``, before any epoch runs."""
    validate_class_rows(data.train_rows, pos=config.pos, neg=config.neg, split="train")
    if len(data.val_rows) < config.ways:
        raise TrainingError(
            f"Validation: {config.ways}-way tasks need at least {config.ways} validation classes. "
            f"Got {len(data.val_rows)}: {sorted(data.val_rows)}."
        )
    for name in sorted(data.val_rows):
        if len(data.val_rows[name]) < 2:
            raise TrainingError(
                f"Validation: class {name!r} needs at least 2 clips (query and support). "
                f"Got {len(data.val_rows[name])}."
            )
    overlap = sorted(set(data.train_rows) & set(data.val_rows))
    if overlap:
        raise TrainingError(f"Expected disjoint training and validation classes. Got both in: {overlap}.")


def train_step(
    model: SiameseNet, optimizer: torch.optim.Optimizer, x: torch.Tensor, batch: PairBatch,
    config: TrainConfig, device: torch.device,
) -> tuple[float, float]:
    """One Adam step on one batch: encode each distinct clip once, pair the embeddings.

    Parameters
    ----------
    x : torch.Tensor [shape=(N, n_mels, n_frames)]
        The clips of ``batch.rows``, on ``device``.

    Returns
    -------
    loss, accuracy : float
    """
    model.train()
    left = torch.from_numpy(batch.left).to(device)
    right = torch.from_numpy(batch.right).to(device)
    labels = torch.from_numpy(batch.labels).to(device)
    with autocast_context(device):
        embeddings = model.embed(x)
        loss, same = pair_loss(model, embeddings[left], embeddings[right], labels, kind=config.loss,
                               margin=config.margin)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    accuracy = (same == labels.bool()).float().mean()
    return float(loss.detach()), float(accuracy)


def validate(
    model: SiameseNet, data: RunData, config: TrainConfig, device: torch.device, evaluate: Callable[..., Any]
) -> tuple[float, int, tuple[float, float]]:
    """Mean accuracy of ``eval_tasks`` ``ways``-way one-shot tasks on the validation classes (Algorithm 3).

    Returns
    -------
    (accuracy, n_tasks, ci95)
        ``n_tasks`` and ``ci95`` are 0 and (0, 0) when ``evaluate`` does not report them.
    """
    embedder = TorchEmbedder(model, device, batch_size=config.eval_batch_size,
                             similarity_kind="distance" if config.loss == "contrastive" else "logit")
    result = evaluate(
        embedder, read=data.read, class_rows=data.val_rows, ways=config.ways,
        runs=validation_runs(config.eval_tasks, len(data.val_rows)), seed=config.seed,
        batch_size=config.eval_batch_size, class_sources=data.val_sources,
    )
    ci = getattr(result, "ci95", (0.0, 0.0))
    return float(result.accuracy), int(getattr(result, "n_tasks", 0)), (float(ci[0]), float(ci[1]))


def _payload(
    model: SiameseNet, described: dict[str, Any], state: _State, *, kind: str,
    optimizer: torch.optim.Optimizer | None = None, rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    payload = {
        **described,
        "kind": kind,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": state.epoch if kind == "last" else state.best_epoch,
        "best_val_accuracy": state.best_val_accuracy,
        "best_epoch": state.best_epoch,
        "history": [asdict(r) for r in state.history],
    }
    if kind == "last":
        payload.update(
            optimizer_state=optimizer.state_dict(),
            rng_states=rng_states(rng),
            epoch_losses=list(state.epoch_losses),
            epoch_accuracies=list(state.epoch_accuracies),
            evals_since_best=state.evals_since_best,
            stopped=state.stopped,
        )
    return payload


def save_run(run_dir: Path, payload_last: dict[str, Any], state: _State) -> None:
    """Write ``last.pt``, ``metrics.csv`` and ``curves.png`` (each atomically)."""
    save_checkpoint(run_dir / LAST, payload_last)
    write_metrics_csv(run_dir / METRICS_CSV, state.history)
    plot_curves(run_dir / CURVES_PNG, state.epoch_losses, state.epoch_accuracies, state.history,
                title=payload_last.get("dataset"))


def _check_resume(payload: dict[str, Any], described: dict[str, Any], path: Path) -> None:
    for key in ("model_config", "train_config", "input_shape", "feature_version_id", "split_id",
                "training_classes", "validation_classes"):
        if payload[key] != described[key]:
            raise TrainingError(
                f"Cannot resume {path}: its {key} is {payload[key]!r}, this run's is {described[key]!r}. "
                f"Resume with the checkpoint's own settings, or start a new run directory."
            )


def fit(
    data: RunData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    resident: bool = False,
    resume: bool = False,
    progress: bool = True,
    evaluate: Callable[..., Any] | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train a Siamese network (Algorithm 1) and write its run directory.

    Parameters
    ----------
    data : RunData
    model_config, train_config : ModelConfig, TrainConfig
    run_dir : str or Path
        Created if missing. A fresh run refuses a directory that already holds ``last.pt``.
    device : str or torch.device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (bf16 autocast on CUDA).
    resident : bool
        Load the training clips once into device memory instead of reading each batch.
    resume : bool
        Continue from ``run_dir/last.pt``; configs and data must match the checkpoint's.
    progress : bool
        tqdm progress bar on stderr.
    evaluate : callable, optional
        Stand-in for :func:`evaluation.evaluator.evaluate_one_shot` (same signature).
    on_epoch : callable, optional
        Called with the epoch number after each epoch's step (and checkpointing).

    Returns
    -------
    TrainResult
    """
    run_dir = Path(run_dir)
    check_run_data(data, train_config)
    torch_device = resolve_device(device)
    evaluate = evaluate or evaluate_one_shot
    described = describe(model_config=model_config, train_config=train_config, input_shape=data.shape,
                         run_meta=data.run_meta())
    model = build_model(model_config, data.shape, seed=train_config.seed).to(torch_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    rng = np.random.default_rng(train_config.seed)
    if resume:
        state = _resume_state(run_dir / LAST, described, model, optimizer, rng)
    else:
        state = _fresh_state(run_dir, data, model, model_config, train_config)
    if state.stopped is None and resident:
        reader: ResidentReader | StoreReader = ResidentReader(data.read, data.train_rows, torch_device)
    else:
        reader = StoreReader(data.read, torch_device)

    from tqdm import tqdm

    bar = tqdm(total=train_config.max_epochs, initial=state.epoch, file=sys.stderr, disable=not progress,
               desc="train", unit="epoch", dynamic_ncols=True)
    try:
        while state.stopped is None:
            batch = sample_pair_batch(data.train_rows, pos=train_config.pos, neg=train_config.neg, rng=rng)
            loss, accuracy = train_step(model, optimizer, reader.batch(batch.rows), batch, train_config,
                                        torch_device)
            state.epoch += 1
            state.epoch_losses.append(loss)
            state.epoch_accuracies.append(accuracy)
            bar.update(1)
            if state.epoch % train_config.eval_every == 0 or state.epoch == train_config.max_epochs:
                _after_validation(model, optimizer, rng, data, train_config, torch_device, evaluate,
                                  described, state, run_dir)
                bar.set_postfix(loss=f"{loss:.3f}", val=f"{state.history[-1].val_accuracy:.3f}",
                                best=f"{state.best_val_accuracy:.3f}")
            if on_epoch is not None:
                on_epoch(state.epoch)
    finally:
        bar.close()
    return TrainResult(
        run_dir=run_dir, best_checkpoint=run_dir / BEST, best_val_accuracy=state.best_val_accuracy,
        best_epoch=state.best_epoch, epochs_run=state.epoch, stopped=state.stopped, history=tuple(state.history),
    )


def _resume_state(last_path: Path, described: dict[str, Any], model: SiameseNet, optimizer: torch.optim.Optimizer,
                  rng: np.random.Generator) -> _State:
    """Load ``last.pt`` into the model, optimizer and generators; return the run's progress."""
    payload = load_checkpoint(last_path)
    _check_resume(payload, described, last_path)
    model.load_state_dict(payload["model_state"])
    optimizer.load_state_dict(payload["optimizer_state"])
    restore_rng_states(payload["rng_states"], rng)
    return _State(
        epoch=payload["epoch"], epoch_losses=list(payload["epoch_losses"]),
        epoch_accuracies=list(payload["epoch_accuracies"]),
        history=[EvalRecord(**r) for r in payload["history"]],
        best_val_accuracy=payload["best_val_accuracy"], best_epoch=payload["best_epoch"],
        evals_since_best=payload["evals_since_best"], stopped=payload["stopped"],
    )


def _fresh_state(run_dir: Path, data: RunData, model: SiameseNet, model_config: ModelConfig,
                 train_config: TrainConfig) -> _State:
    """Refuse a directory that holds a run; seed torch; set the input statistics from training clips."""
    if (run_dir / LAST).exists():
        raise TrainingError(
            f"Run directory {run_dir} already holds a run ({LAST}). Resume it with --resume, "
            f"or choose another --out."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(train_config.seed)
    if model_config.input_norm == "standardize":
        model.set_input_stats(*input_stats(data.read, data.train_rows, seed=train_config.seed))
    return _State()


def _after_validation(
    model: SiameseNet, optimizer: torch.optim.Optimizer, rng: np.random.Generator, data: RunData,
    config: TrainConfig, device: torch.device, evaluate: Callable[..., Any], described: dict[str, Any],
    state: _State, run_dir: Path,
) -> None:
    """Validate, record, keep the best weights, decide whether to stop, checkpoint."""
    val_accuracy, val_tasks, val_ci = validate(model, data, config, device, evaluate)
    since = len(state.epoch_losses) - (state.history[-1].epoch if state.history else 0)
    state.history.append(EvalRecord(
        epoch=state.epoch, train_loss=float(np.mean(state.epoch_losses[-since:])),
        train_accuracy=float(np.mean(state.epoch_accuracies[-since:])), val_accuracy=val_accuracy,
        val_n_tasks=val_tasks, val_ci95_low=val_ci[0], val_ci95_high=val_ci[1],
    ))
    if val_accuracy > state.best_val_accuracy:
        state.best_val_accuracy, state.best_epoch, state.evals_since_best = val_accuracy, state.epoch, 0
        save_checkpoint(run_dir / BEST, _payload(model, described, state, kind="best"))
    else:
        state.evals_since_best += 1
    if state.evals_since_best >= config.patience:
        state.stopped = "patience"
    elif state.epoch >= config.max_epochs:
        state.stopped = "max_epochs"
    save_run(run_dir, _payload(model, described, state, kind="last", optimizer=optimizer, rng=rng), state)


def resume_settings(run_dir: str | Path) -> dict[str, Any]:
    """Configs and data paths stored in ``run_dir/last.pt`` (what ``--resume`` needs)."""
    payload = load_checkpoint(Path(run_dir) / LAST)
    return {key: payload[key] for key in ("model_config", "train_config", "features_path", "split_path",
                                          "feature_version_id", "split_id", "epoch", "stopped")}


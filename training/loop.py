"""Algorithm 1: train one batch per epoch, validate on one-shot tasks, keep the best.

The loop is short and made of named helpers (``train_step``, ``validate``,
``save_run``). Each epoch draws one batch, reads its distinct clips once,
standardises them inside the model, augments them (random crops and masks,
when configured), encodes each clip once and takes one optimiser step on
either Algorithm 2's sampled pairs (the report) or every pair of a batch of
``P`` classes x ``K`` clips (the CPU presets). Every ``eval_every`` epochs (and
at the last epoch) it measures the mean accuracy of ``eval_tasks`` random
``ways``-way one-shot tasks on the validation classes with the evaluation
stage's public scoring; the same tasks (seeded by the run's seed) at every
validation, so that validations compare like with like. It stops after
``patience`` validations without improvement, at ``max_epochs``, or when the
``max_minutes`` wall-clock budget (validations included) would be exceeded.
Validation tasks follow evaluation's default rule for positives: from another
source recording than the query's where the catalog knows the sources (ESC-50);
scores are the head's logits (no saturated, tied similarities).

At every validation the run directory gets ``last.pt`` (resumable state),
``best.pt`` when the accuracy improved, ``metrics.csv`` and ``curves.png``.
A run killed at any point resumes from ``last.pt`` and gives the same history.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamese_audio.errors import EvaluationError, TrainingError
from siamese_audio.evaluation import POSITIVES_OTHER_RECORDING, evaluate_one_shot
from siamese_audio.evaluation.evaluator import check_batch_size
from siamese_audio.evaluation.tasks import check_runs
from siamese_audio.files import refuse_inside_version
from siamese_audio.lock import hold_directory
from siamese_audio.memory import keep_training_buffers
from siamese_audio.training.augment import augment, augment_levels, with_views
from siamese_audio.training.averaging import WeightAverage, center_rows, embedding_mean
from siamese_audio.training.checkpoint import (
    BEST,
    LAST,
    describe,
    load_checkpoint,
    remove_stale_temporaries,
    resolve_device,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from siamese_audio.training.config import ModelConfig, TrainConfig, check_compatible
from siamese_audio.training.data import ReadFn, ResidentReader, StoreReader, TrainingInputs, input_stats
from siamese_audio.training.embedder import TorchEmbedder, autocast_context, similarity_kind
from siamese_audio.training.losses import batch_loss, pair_loss
from siamese_audio.training.metrics import EvalRecord, plot_curves, write_metrics_csv
from siamese_audio.training.model import SiameseNet, build_model
from siamese_audio.training.precision import resolve_precision
from siamese_audio.training.sampler import (
    ClassBatch,
    PairBatch,
    sample_class_batch,
    sample_pair_batch,
    validate_class_batch,
    validate_class_rows,
)
from siamese_audio.training.schedule import learning_rate, make_optimizer, set_learning_rate

METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"
#: Files a run writes into its directory: a fresh run refuses a directory holding any of them.
RUN_FILES = (LAST, BEST, METRICS_CSV, CURVES_PNG)
#: Training-config fields a resumed run may change: budgets, not the schedule or the data.
RESUMABLE_CHANGES = ("max_minutes",)

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
        return {**defaults, **self.meta, "training_classes": sorted(map(str, self.train_rows)),
                "validation_classes": sorted(map(str, self.val_rows)),
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
    best_checkpoint : Path or None
        ``run_dir / "best.pt"``; None when the run directory holds none (a resumed run whose
        ``best.pt`` was removed).
    best_val_accuracy : float
    best_epoch : int
    epochs_run : int
    stopped : str
        ``"patience"``, ``"max_epochs"`` or ``"max_minutes"``.
    history : tuple[EvalRecord, ...]
    elapsed_s : float
        Wall-clock seconds of training and validation (over every resumed part).
    max_minutes : float
        The run's budget (0: none).
    timing : dict
        With ``profile``: steps timed, mean seconds per epoch, of reading the batch and of the
        optimiser step, the loader's share, training pairs per second, peak CUDA memory.
    max_epochs : int
        The schedule's length (a run its budget stopped ran fewer: ``epochs_run``).
    precision : str
        What the training steps ran in on this machine: ``"auto"``, ``"bf16"`` or ``"fp32"``
        (``"bf16-native"`` resolved: :func:`~siamese_audio.training.precision.resolve_precision`).
    """

    run_dir: Path
    best_checkpoint: Path | None
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    stopped: str
    history: tuple[EvalRecord, ...]
    elapsed_s: float = 0.0
    max_minutes: float = 0.0
    timing: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 0
    precision: str = "auto"


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
    elapsed_s: float = 0.0


def validation_runs(eval_tasks: int, n_classes: int) -> int:
    """Tasks per validation class so that at least ``eval_tasks`` tasks run: ``ceil(eval_tasks / n_classes)``."""
    return math.ceil(eval_tasks / n_classes)


def check_run_data(data: RunData, model: ModelConfig, config: TrainConfig) -> None:
    """Refuse data that cannot be trained or validated with these configs, before any epoch runs."""
    check_compatible(model, config, data.shape)
    if config.batch == "pairs":
        validate_class_rows(data.train_rows, pos=config.pos, neg=config.neg, split="train")
    else:
        validate_class_batch(data.train_rows, classes=config.classes_per_batch, clips=config.clips_per_class)
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
    check_batch_size(config.eval_batch_size, data.shape, option="eval_batch_size", error=TrainingError)
    if config.batch == "classes":
        check_batch_size(config.classes_per_batch * config.clips_per_class, data.shape,
                         option="classes_per_batch x clips_per_class", error=TrainingError)
    try:
        check_runs(validation_runs(config.eval_tasks, len(data.val_rows)), n_classes=len(data.val_rows),
                   ways=config.ways)
    except EvaluationError as exc:
        raise TrainingError(f"Validation with eval_tasks {config.eval_tasks:,}: {exc}") from None
    overlap = sorted(set(data.train_rows) & set(data.val_rows))
    if overlap:
        raise TrainingError(f"Expected disjoint training and validation classes. Got both in: {overlap}.")


def draw_batch(data: RunData, config: TrainConfig, rng: np.random.Generator) -> PairBatch | ClassBatch:
    """The next training batch: Algorithm 2's pairs, or ``P`` classes x ``K`` clips."""
    if config.batch == "pairs":
        return sample_pair_batch(data.train_rows, pos=config.pos, neg=config.neg, rng=rng)
    return sample_class_batch(data.train_rows, classes=config.classes_per_batch, clips=config.clips_per_class,
                              rng=rng)


def train_step(
    model: SiameseNet, optimizer: torch.optim.Optimizer, x: torch.Tensor, batch: PairBatch | ClassBatch,
    config: TrainConfig, device: torch.device, rng: np.random.Generator | None = None, precision: str = "auto",
) -> tuple[float, float]:
    """One optimiser step on one batch: standardise, augment, encode each clip once, score the pairs.

    Parameters
    ----------
    x : torch.Tensor [shape=(N, n_mels, n_frames)]
        The clips of ``batch.rows``, on ``device``.
    rng : np.random.Generator, optional
        Draws the augmentations (needed when ``config`` augments).
    precision : str
        ``"auto"``: bf16 autocast on CUDA; ``"bf16"``: bf16 autocast on CUDA and the CPU; ``"fp32"``: none.

    Returns
    -------
    loss, accuracy : float
        The accuracy of the loss's own decisions (pairs, nearest clips or prototypes).
    """
    model.train()
    if config.views > 1:
        if not isinstance(batch, ClassBatch):
            raise TrainingError("train_step: views need a class batch.")
        x, batch = with_views(x, batch, config.views)
    if config.augments_levels:
        if rng is None:
            raise TrainingError("train_step: the config augments its batches; pass the run's generator.")
        x = augment_levels(x, batch.labels, config, rng)
    with autocast_context(device, precision):
        inputs = model.normalize(x)
        if config.augments:
            if rng is None:
                raise TrainingError("train_step: the config augments its batches; pass the run's generator.")
            inputs = augment(inputs, config, rng)
        embeddings = model.encoder(inputs)
        if isinstance(batch, PairBatch):
            left = torch.from_numpy(batch.left).to(device)
            right = torch.from_numpy(batch.right).to(device)
            labels = torch.from_numpy(batch.labels).to(device)
            loss, same = pair_loss(model, embeddings[left], embeddings[right], labels, kind=config.loss,
                                   margin=config.margin)
            correct = same == labels.bool()
        else:
            labels = torch.from_numpy(batch.labels).to(device)
            loss, correct = batch_loss(model, embeddings, labels, kind=config.loss, temperature=config.temperature)
            if config.instance_weight:
                clips = torch.arange(labels.shape[0], device=device) // config.views
                loss = loss + config.instance_weight * batch_loss(model, embeddings, clips, kind="supcon",
                                                                  temperature=config.temperature)[0]
            if config.aux_weight:
                if batch.classes is None:
                    raise TrainingError("train_step: aux_weight needs the batch's training-class indices.")
                targets = torch.from_numpy(batch.classes).to(device)
                logits = model.classifier(embeddings.float()).float()
                loss = loss + config.aux_weight * torch.nn.functional.cross_entropy(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), float(correct.float().mean())


def validate(
    model: SiameseNet, data: RunData, config: TrainConfig, device: torch.device, evaluate: Callable[..., Any],
    precision: str = "auto",
) -> tuple[float, int, tuple[float, float]]:
    """Mean accuracy of ``eval_tasks`` ``ways``-way one-shot tasks on the validation classes (Algorithm 3).

    Returns
    -------
    (accuracy, n_tasks, ci95)
        ``n_tasks`` and ``ci95`` are 0 and (0, 0) when ``evaluate`` does not report them.
    """
    embedder = TorchEmbedder(model, device, batch_size=config.eval_batch_size,
                             similarity_kind=similarity_kind(config.loss), precision=precision)
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
    average: WeightAverage | None = None,
) -> dict[str, Any]:
    payload = {
        **described,
        "kind": kind,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": state.epoch if kind == "last" else state.best_epoch,
        "best_val_accuracy": state.best_val_accuracy,
        "best_epoch": state.best_epoch,
        "history": [asdict(r) for r in state.history],
        "elapsed_s": state.elapsed_s,
    }
    if kind == "last":
        if average is not None:
            payload["ema_state"] = average.state_dict()
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
        saved, ours = payload[key], described[key]
        if key == "train_config":
            saved = {k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES}
            ours = {k: v for k, v in ours.items() if k not in RESUMABLE_CHANGES}
        if saved != ours:
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
    precision: str | None = None,
    profile: bool = False,
) -> TrainResult:
    """Train a Siamese network (Algorithm 1) and write its run directory.

    Parameters
    ----------
    data : RunData
    model_config, train_config : ModelConfig, TrainConfig
    run_dir : str or Path
        Created if missing, locked (``run_dir/.lock``) while the run writes: a second run into it
        stops at once naming the holder. A fresh run refuses a directory that holds any of a run's
        files (``last.pt``, ``best.pt``, ``metrics.csv``, ``curves.png``); no directory inside a
        feature version is accepted.
    device : str or torch.device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (bf16 autocast on CUDA).
    resident : bool
        Load the training clips once into device memory instead of reading each batch.
    resume : bool
        Continue from ``run_dir/last.pt``; configs and data must match the checkpoint's,
        except a new ``max_minutes`` budget (a run stopped by its budget then goes on).
    progress : bool
        tqdm progress bar on stderr.
    evaluate : callable, optional
        Stand-in for :func:`siamese_audio.evaluation.evaluate_one_shot` (same signature).
    on_epoch : callable, optional
        Called with the epoch number after each epoch's step (and checkpointing).
    precision : str, optional
        ``"auto"`` (bf16 autocast on CUDA), ``"bf16"`` (bf16 autocast on CUDA and the CPU),
        ``"fp32"`` or ``"bf16-native"`` (bf16 only where the hardware has it); default: the
        training config's ``precision``.
    profile : bool
        Time each epoch's batch reading and optimiser step (synchronising CUDA), for
        :attr:`TrainResult.timing`.

    Returns
    -------
    TrainResult
    """
    clock = time.monotonic()  # the budget counts setup too: statistics, resident loading, validations
    run_dir = Path(run_dir)
    precision = train_config.precision if precision is None else precision
    if train_config.aux_weight and not model_config.classifier_classes:
        model_config = dataclasses.replace(model_config, classifier_classes=len(data.train_rows))
    check_run_data(data, model_config, train_config)
    refuse_inside_version(run_dir, option="run directory", error=TrainingError)
    with hold_directory(run_dir, what=f"Run directory {run_dir}", error=TrainingError):
        torch_device = resolve_device(device)
        precision = resolve_precision(precision, torch_device)
        keep_training_buffers()  # without it a CPU step spends as much time in the kernel as in the maths
        evaluate = evaluate or evaluate_one_shot
        described = describe(model_config=model_config, train_config=train_config, input_shape=data.shape,
                             run_meta=data.run_meta())
        model = build_model(model_config, data.shape, seed=train_config.seed).to(torch_device)
        if train_config.channels_last and torch_device.type == "cpu":
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model.parameters(), train_config)
        rng = np.random.default_rng(train_config.seed)
        if resume:
            state = _resume_state(run_dir / LAST, described, model, optimizer, rng, train_config)
        else:
            state = _fresh_state(run_dir, data, model, model_config, train_config)
        average = WeightAverage(model, train_config.ema_decay) if train_config.ema_decay else None
        if average is not None and resume:
            saved = load_checkpoint(run_dir / LAST).get("ema_state")
            if saved is None:
                raise TrainingError(f"Cannot resume {run_dir / LAST}: its training config averages the weights "
                                    f"(ema_decay {train_config.ema_decay}) but it holds no ema_state.")
            average.load_state_dict(saved)
        if state.stopped is None and resident:
            reader: ResidentReader | StoreReader = ResidentReader(data.read, data.train_rows, torch_device)
        else:
            reader = StoreReader(data.read, torch_device)
        run = _Run(data, train_config, torch_device, evaluate, described, run_dir, model, optimizer, rng, state,
                   precision=precision, profile=profile, started=clock - state.elapsed_s, average=average)
        run.loop(reader, progress=progress, on_epoch=on_epoch)
        return TrainResult(
            run_dir=run_dir, best_checkpoint=run_dir / BEST if (run_dir / BEST).is_file() else None, best_val_accuracy=state.best_val_accuracy,
            best_epoch=state.best_epoch, epochs_run=state.epoch, stopped=state.stopped, history=tuple(state.history),
            elapsed_s=state.elapsed_s, max_minutes=train_config.max_minutes, timing=run.timing(), max_epochs=train_config.max_epochs,
            precision=precision,
        )


@dataclass
class _Run:
    """One run's parts, so that the loop and its validation step read as named steps."""

    data: RunData
    config: TrainConfig
    device: torch.device
    evaluate: Callable[..., Any]
    described: dict[str, Any]
    run_dir: Path
    model: SiameseNet
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    state: _State
    precision: str = "auto"
    profile: bool = False
    started: float = 0.0
    average: WeightAverage | None = None
    _times: list[tuple[float, float, int]] = field(default_factory=list)

    def _sync(self) -> float:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def timing(self) -> dict[str, Any]:
        """Mean seconds of reading a batch and of a step, the loader's share, pairs/s, peak CUDA memory."""
        if not self._times:
            return {}
        load = float(np.mean([t[0] for t in self._times]))
        step = float(np.mean([t[1] for t in self._times]))
        pairs = float(np.mean([t[2] for t in self._times]))
        out = {"epochs_timed": len(self._times), "epoch_s": load + step, "load_s": load, "step_s": step,
               "loader_share": load / (load + step), "pairs_per_epoch": pairs, "pairs_per_s": pairs / (load + step)}
        if self.device.type == "cuda":
            out["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
        return out

    def loop(self, reader: ResidentReader | StoreReader, *, progress: bool,
             on_epoch: Callable[[int], None] | None) -> None:
        from tqdm import tqdm

        config, state = self.config, self.state
        started = self.started
        last_validation_s = last_step_s = 0.0
        bar = tqdm(total=config.max_epochs, initial=state.epoch, file=sys.stderr, disable=not progress,
                   desc="train", unit="epoch", dynamic_ncols=True)
        try:
            while state.stopped is None:
                set_learning_rate(self.optimizer, learning_rate(config, state.epoch))
                batch = draw_batch(self.data, config, self.rng)
                t0 = self._sync()
                x = reader.batch(batch.rows)
                t1 = self._sync()
                loss, accuracy = train_step(self.model, self.optimizer, x, batch, config, self.device, self.rng,
                                            self.precision)
                if self.average is not None:
                    self.average.update(self.model)
                if self.profile:
                    self._times.append((t1 - t0, self._sync() - t1, batch.n_pairs))
                state.epoch += 1
                state.epoch_losses.append(loss)
                state.epoch_accuracies.append(accuracy)
                now = time.monotonic()
                last_step_s, state.elapsed_s = now - started - state.elapsed_s, now - started
                bar.update(1)
                # stop while one more step and a validation still fit in the budget
                out_of_time = bool(config.max_minutes) and (
                    state.elapsed_s + last_step_s + last_validation_s >= 60.0 * config.max_minutes)
                if state.epoch % config.eval_every == 0 or state.epoch == config.max_epochs or out_of_time:
                    t0 = time.monotonic()
                    self.after_validation(out_of_time=out_of_time, started=started)
                    last_validation_s = time.monotonic() - t0
                    bar.set_postfix(loss=f"{loss:.3f}", val=f"{state.history[-1].val_accuracy:.3f}",
                                    best=f"{state.best_val_accuracy:.3f}")
                if on_epoch is not None:
                    on_epoch(state.epoch)
        finally:
            bar.close()

    def after_validation(self, *, out_of_time: bool, started: float) -> None:
        """Validate, record, keep the best weights, decide whether to stop, checkpoint."""
        state, config = self.state, self.config
        scored = self.average.model if self.average is not None else self.model
        if config.center_clips:
            rows = center_rows(self.data.train_rows, config.center_clips, config.seed)
            mean = embedding_mean(scored, self.data.read, rows, self.device)
            scored.set_embed_mean(mean)
            self.model.set_embed_mean(mean)
        # validation embeds in float32 on the CPU (as evaluate does); bf16 is for the training steps
        val_precision = "auto" if self.precision == "bf16" and self.device.type == "cpu" else self.precision
        val_accuracy, val_tasks, val_ci = validate(scored, self.data, config, self.device, self.evaluate,
                                                   val_precision)
        state.elapsed_s = time.monotonic() - started
        since = len(state.epoch_losses) - (state.history[-1].epoch if state.history else 0)
        state.history.append(EvalRecord(
            epoch=state.epoch, train_loss=float(np.mean(state.epoch_losses[-since:])),
            train_accuracy=float(np.mean(state.epoch_accuracies[-since:])), val_accuracy=val_accuracy,
            val_n_tasks=val_tasks, val_ci95_low=val_ci[0], val_ci95_high=val_ci[1],
            elapsed_s=round(state.elapsed_s, 1), lr=self.optimizer.param_groups[0]["lr"],
        ))
        if val_accuracy > state.best_val_accuracy:
            state.best_val_accuracy, state.best_epoch, state.evals_since_best = val_accuracy, state.epoch, 0
            save_checkpoint(self.run_dir / BEST, _payload(scored, self.described, state, kind="best"))
        else:
            state.evals_since_best += 1
        if state.evals_since_best >= config.patience:
            state.stopped = "patience"
        elif state.epoch >= config.max_epochs:
            state.stopped = "max_epochs"
        elif out_of_time:
            state.stopped = "max_minutes"
        save_run(self.run_dir, _payload(self.model, self.described, state, kind="last", optimizer=self.optimizer,
                                        rng=self.rng, average=self.average), state)


def _resume_state(last_path: Path, described: dict[str, Any], model: SiameseNet, optimizer: torch.optim.Optimizer,
                  rng: np.random.Generator, config: TrainConfig) -> _State:
    """Load ``last.pt`` into the model, optimizer and generators; return the run's progress."""
    remove_stale_temporaries(last_path.parent)
    payload = load_checkpoint(last_path)
    _check_resume(payload, described, last_path)
    try:
        model.load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        restore_rng_states(payload["rng_states"], rng)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise TrainingError(f"Cannot resume {last_path}: its optimizer or generator state does not fit this run "
                            f"({type(exc).__name__}: {exc})"[:400]) from None
    stopped = payload["stopped"]
    saved_budget = float(payload["train_config"].get("max_minutes", 0.0))
    if stopped == "max_minutes" and (not config.max_minutes or config.max_minutes > saved_budget):
        stopped = None  # a larger budget (or none): go on where the last one ended
    return _State(
        epoch=payload["epoch"], epoch_losses=list(payload["epoch_losses"]),
        epoch_accuracies=list(payload["epoch_accuracies"]),
        history=[EvalRecord(**r) for r in payload["history"]],
        best_val_accuracy=payload["best_val_accuracy"], best_epoch=payload["best_epoch"],
        evals_since_best=payload["evals_since_best"], stopped=stopped,
        elapsed_s=float(payload.get("elapsed_s", 0.0)),
    )


def _fresh_state(run_dir: Path, data: RunData, model: SiameseNet, model_config: ModelConfig,
                 train_config: TrainConfig) -> _State:
    """Refuse a directory that holds a run; seed torch; set the input statistics from training clips."""
    if (run_dir / LAST).exists():
        raise TrainingError(
            f"Run directory {run_dir} already holds a run ({LAST}). Resume it with --resume, "
            f"or choose another --out."
        )
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        raise TrainingError(
            f"Run directory {run_dir} holds another run's files ({', '.join(found)}) without its {LAST}: a fresh "
            "run would overwrite them and it cannot be resumed. Choose another --out, or move them away.")
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)  # of a first last.pt write that a kill interrupted
    torch.manual_seed(train_config.seed)
    if model_config.input_norm != "none":
        per_band = model_config.input_norm == "per_band"
        model.set_input_stats(*input_stats(data.read, data.train_rows, seed=train_config.seed,
                                           max_clips=2048 if per_band else 512, per_band=per_band))
    return _State()


def resume_settings(run_dir: str | Path) -> dict[str, Any]:
    """Configs and data paths stored in ``run_dir/last.pt`` (what ``--resume`` needs)."""
    payload = load_checkpoint(Path(run_dir) / LAST)
    return {key: payload[key] for key in ("model_config", "train_config", "features_path", "split_path",
                                          "feature_version_id", "split_id", "epoch", "stopped")}


__all__ = ["RunData", "TrainResult", "check_run_data", "draw_batch", "fit", "resume_settings",
           "run_data_from_inputs", "save_run", "train_step", "validate", "validation_runs"]

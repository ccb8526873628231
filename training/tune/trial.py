"""One trial of a study, as a Dask task: train one configuration, report each validation, maybe stop early.

:func:`run_trial` runs in a worker process. It opens the sealed feature version
and the split itself (only paths travel through the scheduler; the study
directory, the features and the split must be at the same path on every
worker, as for ``build``), sets torch's threads to the cores its worker owns,
and calls :func:`~siamese_audio.training.loop.fit` with two hooks: one that
keeps each validation result (training already measures validation accuracy,
its tasks and interval at every validation), and one that reports it to the
study's storage (Optuna's journal file) after the epoch and asks the pruner
whether to go on. Only validation classes are scored; the test classes are not
in what :func:`open_run_data` hands to training.

A trial whose worker dies (SIGKILL, out of memory, a lost node) is run again by
Dask on another worker; that second attempt finds the first one's marker in
the trial directory and returns ``"killed"`` at once, so that the study marks
the trial failed (and queues its parameters once more) instead of mixing two
attempts in one trial.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamese_audio.errors import SiameseAudioError
from siamese_audio.files import KIB, read_regular

STUDY_NAME = "siamese-audio-tune"
JOURNAL = "study.journal"
TRIALS_DIR = "trials"
ATTEMPT = "attempt.json"
PRUNERS = ("median", "halving", "none")


def trial_dir(study_dir: str | Path, number: int) -> Path:
    """Run directory of trial ``number``: ``STUDY_DIR/trials/00042``."""
    return Path(study_dir) / TRIALS_DIR / f"{number:05d}"


def journal_storage(study_dir: str | Path) -> Any:
    """Optuna's journal storage on ``STUDY_DIR/study.journal`` (a file: no server; safe for many processes)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(Path(study_dir) / JOURNAL)))


def make_pruner(name: str, *, eval_every: int, startup_trials: int) -> Any:
    """The study's pruner; steps are epochs, one report per validation.

    ``"median"``: stop a trial whose best validation accuracy so far is below the median
    of the completed trials' at the same epoch, once ``startup_trials`` trials completed,
    from its first validation on. ``"halving"``: asynchronous successive halving
    with rungs at ``eval_every * 3**k`` epochs, keeping the top third at each rung.
    ``"none"``: never stop a trial early.
    """
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=eval_every, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SiameseAudioError(f"Expected a pruner among {PRUNERS}. Got {name!r} instead.")


def open_run_data(features: str, split: str, *, version_id: str | None = None, split_id: str | None = None,
                  verify: bool = False) -> Any:
    """The :class:`~siamese_audio.training.loop.RunData` of a trial: training and validation classes only.

    The test classes of the split are not in it, so no trial can read them.
    """
    from siamese_audio.training.data import open_training_inputs
    from siamese_audio.training.loop import run_data_from_inputs

    inputs = open_training_inputs(features, split, expect_version_id=version_id, expect_split_id=split_id,
                                  verify=verify)
    return run_data_from_inputs(inputs)


@dataclass(frozen=True)
class TrialTask:
    """What a worker needs to run one trial (small and picklable).

    Attributes
    ----------
    study_dir : str
        The study directory (same path on every worker).
    trial_id, number : int
        Optuna's id of the trial in the storage, and its number in the study.
    model_config, train_config : dict
        The trial's configs (``dataclasses.asdict``).
    features, split : str
        The sealed feature version and the split manifest.
    version_id, split_id : str
        Pinned by the study: a worker that sees other data refuses it.
    pruner : str
        ``"median"``, ``"halving"`` or ``"none"``.
    startup_trials : int
        Trials that finish before the median pruner prunes.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    threads : dict
        Worker address -> torch threads (the cores per worker on its host).
    default_threads : int
        Torch threads of a worker missing from ``threads`` (one that joined later).
    open_data : callable
        ``open_data(features, split, *, version_id, split_id, verify) -> RunData``.
    """

    study_dir: str
    trial_id: int
    number: int
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    features: str
    split: str
    version_id: str
    split_id: str
    pruner: str = "median"
    startup_trials: int = 4
    device: str = "auto"
    threads: dict[str, int] = field(default_factory=dict)
    default_threads: int = 1
    open_data: Callable[..., Any] = open_run_data


class _Pruned(Exception):
    """Raised from the epoch hook to stop ``fit`` when the pruner says so."""


class _Validations:
    """Wraps the validation scorer: keeps every result, forwards every argument."""

    def __init__(self, evaluate: Callable[..., Any]) -> None:
        self.evaluate = evaluate
        self.results: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.evaluate(*args, **kwargs)
        self.results.append(result)
        return result


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return ""


def _claim_attempt(run_dir: Path, address: str) -> bool:
    """Mark this trial as started; False when an earlier attempt already did (its worker died)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(run_dir / ATTEMPT, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "worker": address, "since": time.time()}, f)
    return True


def _ci(result: Any) -> list[float]:
    ci = getattr(result, "ci95", (0.0, 0.0))
    return [float(ci[0]), float(ci[1])]


def run_trial(task: TrialTask) -> dict[str, Any]:
    """Train one trial's configs; report every validation to the study; stop when pruned.

    Returns
    -------
    dict
        ``state`` (``"complete"``, ``"pruned"``, ``"fail"`` or ``"killed"``), ``value`` (best
        validation accuracy), ``n_tasks`` and ``ci95`` of that validation, ``best_epoch``,
        ``epochs``, ``seconds`` (wall), ``cpu_seconds`` (of the worker process), ``stopped``, ``worker``,
        ``threads``, ``reason`` (why it failed).
    """
    started, cpu_started = time.monotonic(), time.process_time()
    address = _worker_address()
    run_dir = trial_dir(task.study_dir, task.number)
    base = {"worker": address, "pid": os.getpid(), "host": socket.gethostname()}
    if not _claim_attempt(run_dir, address):
        try:
            previous = json.loads(read_regular(run_dir / ATTEMPT, max_bytes=64 * KIB, what="attempt record") or "{}")
            previous = previous if isinstance(previous, dict) else {}
        except (OSError, ValueError, RecursionError):
            previous = {}
        return {**base, "state": "killed", "seconds": 0.0, "epochs": 0,
                "reason": f"its worker {previous.get('worker') or previous.get('pid')} on "
                          f"{previous.get('host')} died during the trial"}
    import optuna
    import torch

    from siamese_audio.evaluation import evaluate_one_shot
    from siamese_audio.training.config import model_config_from_dict, train_config_from_dict
    from siamese_audio.training.loop import fit

    threads = int(task.threads.get(address, task.default_threads))
    torch.set_num_threads(max(1, threads))
    base["threads"] = threads
    model = model_config_from_dict(task.model_config)
    train = train_config_from_dict(task.train_config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(task.study_dir),
                              sampler=optuna.samplers.RandomSampler(),
                              pruner=make_pruner(task.pruner, eval_every=train.eval_every,
                                                 startup_trials=task.startup_trials))
    trial = optuna.trial.Trial(study, task.trial_id)
    validations = _Validations(evaluate_one_shot)
    reported: list[tuple[int, Any]] = []  # (epoch, result) of each validation reported

    def on_epoch(epoch: int) -> None:
        if len(validations.results) == len(reported):
            return
        reported.append((epoch, validations.results[-1]))
        trial.report(float(validations.results[-1].accuracy), step=epoch)
        if epoch < train.max_epochs and trial.should_prune():
            raise _Pruned

    try:
        data = task.open_data(task.features, task.split, version_id=task.version_id, split_id=task.split_id,
                              verify=False)
        result = fit(data, model, train, run_dir, device=task.device, progress=False, evaluate=validations,
                     on_epoch=on_epoch)
    except _Pruned:
        best_epoch, best = max(reported, key=lambda pair: float(pair[1].accuracy))  # the first of equals
        (run_dir / "last.pt").unlink(missing_ok=True)  # best.pt stays: its validation counts for the study
        return {**base, "state": "pruned", "value": float(best.accuracy), "n_tasks": int(getattr(best, "n_tasks", 0)),
                "ci95": _ci(best), "best_epoch": best_epoch, "epochs": reported[-1][0],
                "seconds": time.monotonic() - started, "cpu_seconds": time.process_time() - cpu_started,
                "stopped": "pruned"}
    except SiameseAudioError as exc:
        return {**base, "state": "fail", "reason": f"{type(exc).__name__}: {exc}",
                "seconds": time.monotonic() - started, "epochs": reported[-1][0] if reported else 0}
    (run_dir / "last.pt").unlink(missing_ok=True)  # a finished trial is never resumed
    best_record = next((r for r in result.history if r.epoch == result.best_epoch), None)
    return {**base, "state": "complete", "value": float(result.best_val_accuracy),
            "n_tasks": best_record.val_n_tasks if best_record else 0,
            "ci95": [best_record.val_ci95_low, best_record.val_ci95_high] if best_record else [0.0, 0.0],
            "best_epoch": result.best_epoch, "epochs": result.epochs_run, "seconds": time.monotonic() - started,
            "cpu_seconds": time.process_time() - cpu_started, "stopped": result.stopped}


__all__ = ["ATTEMPT", "JOURNAL", "PRUNERS", "STUDY_NAME", "TRIALS_DIR", "TrialTask", "journal_storage", "make_pruner",
           "open_run_data", "run_trial", "trial_dir"]

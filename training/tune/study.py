"""The study: Optuna's TPE sampler in this process, trials on the Dask cluster, the study in a file.

:func:`tune` runs one session of a study kept in ``STUDY_DIR``:

1. opens the feature version (verified) and the split, builds the space (Table 2.2 on top of
   a preset, or a TOML file) and refuses it, naming the field, when some trial could not be
   built or trained on this data; all of this before any trial runs;
2. creates (or with ``resume``, loads) the study in ``STUDY_DIR/study.journal``, Optuna's
   journal storage on a file: every ask, report and tell is appended there, so that trials
   that finished are never lost when ``tune`` is killed;
3. keeps one trial per Dask worker in flight (a local cluster of worker processes, or an
   existing scheduler): the TPE sampler (seeded) draws each trial's parameters here, the
   worker trains and reports each validation to the journal, the pruner stops poor trials
   early, and the result is told to the study here;
4. writes the outputs (:mod:`.outputs`) after every trial (``trials.parquet``, ``best.toml``)
   and at the end (plots, ``study.md``).

A trial whose worker died is marked failed and its parameters are queued once more; on
``resume``, trials left running by a killed ``tune`` are handled the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamese_audio.errors import SiameseAudioError, StoreError, TrainingError
from siamese_audio.files import MIB, probe_writable, read_regular, refuse_inside_version, write_json_atomic
from siamese_audio.training.tune.space import MAX_WEIGHTS, Space, check_space, default_space, load_space
from siamese_audio.training.tune.trial import (
    JOURNAL,
    PRUNERS,
    STUDY_NAME,
    TrialTask,
    journal_storage,
    make_pruner,
    open_run_data,
    run_trial,
)

log = logging.getLogger(__name__)

SETTINGS = "tune.json"
LOCK = "tune.lock"
#: The pruner chosen from benchmarks/bench_tune.py (see the README's "Hyper-parameter search"): the
#: median pruner kept the best configuration in every measured study; successive halving spent
#: half as many epochs again but lost it in 2 of 5.
DEFAULT_PRUNER = "median"


@dataclass(frozen=True)
class TuneConfig:
    """One ``tune`` session.

    Attributes
    ----------
    out : Path
        The study directory (``STUDY_DIR``).
    features, split : str or Path
        Sealed feature version and split manifest (from the study's settings when resuming).
    space : Path or Space, optional
        TOML file of ranges and choices, or a :class:`Space` (default: Table 2.2 on top of ``preset``).
    preset : str, optional
        Base preset (default: the space file's, else ``report-audiomnist``).
    trials : int
        Trials the study should hold (completed, pruned or failed; a failed trial that is
        queued again counts once).
    minutes : float
        No trial starts after this many minutes of this session (0: no limit).
    trial_minutes : float, optional
        Wall-clock budget of each trial (``TrainConfig.max_minutes``; default the preset's).
    workers : int, optional
        Worker processes of the local cluster (default one per core); one trial each.
    threads : int, optional
        Torch threads of each trial (default: the cores of its host over the workers on it).
    scheduler : str, optional
        Address or scheduler file of an existing Dask cluster.
    seed : int, optional
        Seed of the TPE sampler (default 0).
    pruner : str, optional
        ``"median"``, ``"halving"`` or ``"none"`` (default :data:`DEFAULT_PRUNER`).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` for each trial.
    resume : bool
        Continue the study in ``out``.
    progress : bool
        Progress bar over trials on stderr.
    max_weights : int
        Largest network a space may hold.
    """

    out: Path
    features: str | Path | None = None
    split: str | Path | None = None
    space: Path | Space | None = None
    preset: str | None = None
    trials: int = 20
    minutes: float = 0.0
    trial_minutes: float | None = None
    workers: int | None = None
    threads: int | None = None
    scheduler: str | None = None
    seed: int | None = None
    pruner: str | None = None
    device: str = "auto"
    resume: bool = False
    progress: bool = True
    max_weights: int = MAX_WEIGHTS

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TrainingError(f"tune: expected {name} to be a positive integer. Got {value!r} instead.")

        positive_int("trials", self.trials)
        for name in ("workers", "threads"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        if self.workers is not None and self.scheduler:
            raise TrainingError("tune: expected --workers (a local cluster) or --scheduler (an existing one), "
                                "not both.")
        for name in ("minutes", "trial_minutes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
                raise TrainingError(f"tune: expected {name} to be a finite number >= 0. Got {value!r} instead.")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise TrainingError(f"tune: expected seed to be a non-negative integer. Got {self.seed!r} instead.")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise TrainingError(f"tune: expected pruner in {PRUNERS}. Got {self.pruner!r} instead.")


@dataclass(frozen=True)
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes
    ----------
    study_dir : Path
    best : dict or None
        The best completed trial: ``number``, ``value``, ``n_tasks``, ``ci95``, ``params``.
    counts : dict
        Trials per state (``COMPLETE``, ``PRUNED``, ``FAIL``, ...).
    n_trials : int
        Trials in the study (every state).
    epochs : int
        Epochs trained over every trial of the study.
    elapsed_s : float
        Wall-clock seconds of this session.
    files : dict
        Output name -> path.
    notes : tuple[str, ...]
        What the default space left out for this data.
    """

    study_dir: Path
    best: dict[str, Any] | None
    counts: dict[str, int]
    n_trials: int
    epochs: int
    elapsed_s: float
    files: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- settings


def _settings(config: TuneConfig, space: Space, data: Any, startup_trials: int) -> dict[str, Any]:
    meta = data.meta
    return {"features": str(Path(meta.get("features_path") or config.features).resolve()),
            "split": str(Path(meta.get("split_path") or config.split).resolve()),
            "feature_version_id": meta.get("feature_version_id"), "split_id": meta.get("split_id"),
            "dataset": meta.get("dataset"), "input_shape": list(data.shape), "seed": config.seed or 0,
            "pruner": config.pruner or DEFAULT_PRUNER, "startup_trials": startup_trials, "trial_minutes": config.trial_minutes,
            "space": space.to_dict(),
            "space_file": str(config.space) if isinstance(config.space, (str, Path)) else None,
            "trials": config.trials, "training_classes": sorted(data.train_rows),
            "validation_classes": sorted(data.val_rows)}


def read_settings(study_dir: str | Path) -> dict[str, Any]:
    """The study's settings (``STUDY_DIR/tune.json``), what ``--resume`` continues with."""
    path = Path(study_dir) / SETTINGS
    try:
        return json.loads(read_regular(path, max_bytes=64 * MIB, what="study settings"))
    except FileNotFoundError:
        raise TrainingError(f"{study_dir} holds no study ({SETTINGS} is missing); start one without --resume.") \
            from None
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"Cannot read the study's settings {path}: {exc}") from None


def _check_resume(config: TuneConfig, saved: dict[str, Any]) -> None:
    differ = []
    if config.features is not None and Path(config.features).resolve() != Path(saved["features"]):
        differ.append(f"--features {config.features} (study: {saved['features']})")
    if config.split is not None and Path(config.split).resolve() != Path(saved["split"]):
        differ.append(f"--split {config.split} (study: {saved['split']})")
    for name, flag in (("space", "--space"), ("preset", "--preset")):
        if getattr(config, name) is not None:
            differ.append(f"{flag} {getattr(config, name)}")
    if config.seed is not None and config.seed != saved["seed"]:
        differ.append(f"--seed {config.seed} (study: {saved['seed']})")
    if config.pruner is not None and config.pruner != saved["pruner"]:
        differ.append(f"--pruner {config.pruner} (study: {saved['pruner']})")
    if config.trial_minutes is not None and config.trial_minutes != saved["trial_minutes"]:
        differ.append(f"--trial-minutes {config.trial_minutes} (study: {saved['trial_minutes']})")
    if differ:
        raise TrainingError(
            f"--resume continues the study in {config.out} with its own data, space, seed, pruner and trial "
            f"budget; expected no {', '.join(differ)}. Start a new study directory to change them.")


def _startup_trials(trials: int) -> int:
    """Trials drawn at random before TPE models the results (and before the median pruner prunes)."""
    return max(2, min(10, trials // 3))


# ----------------------------------------------------------------------------- the session


def tune(config: TuneConfig, *, open_data: Callable[..., Any] = open_run_data) -> TuneResult:
    """Run (or continue) a study; see the module docstring.

    Parameters
    ----------
    config : TuneConfig
    open_data : callable
        ``open_data(features, split, *, version_id, split_id, verify) -> RunData``: how this
        process and every trial open the data (a stand-in can record what is read).

    Raises
    ------
    TrainingError
        An invalid space (naming the field), a study directory that holds a study (without
        ``resume``) or none (with it), settings a resumed study cannot change.
    """
    from siamese_audio.lock import acquire, read_holder

    started = time.monotonic()
    out = Path(config.out)
    refuse_inside_version(out, option="study directory", error=TrainingError)
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = acquire(out / LOCK, what=f"the study in {out}")
    except StoreError:
        holder = read_holder(out / LOCK)
        raise TrainingError(f"Another tune runs the study in {out}: {out / LOCK} is held by "
                            f"{holder.describe() if holder else 'a process starting'}. Let it finish.") from None
    with lock:
        settings, space, data = _prepare(config, out, open_data)
        study = _open_study(out, settings, resume=config.resume)
        _settle_interrupted(study)
        session = _Session(config, out, settings, space, study, open_data, started)
        session.run()
        from siamese_audio.training.tune.outputs import write_outputs

        files = write_outputs(out, study, space, settings, final=True)
    return session.result(files)


def _prepare(config: TuneConfig, out: Path, open_data: Callable[..., Any]) -> tuple[dict[str, Any], Space, Any]:
    """Settings, space and data of this session, every check done before any trial runs."""
    journal = out / JOURNAL
    if config.resume:
        saved = read_settings(out)
        _check_resume(config, saved)
        data = open_data(saved["features"], saved["split"], version_id=saved["feature_version_id"],
                         split_id=saved["split_id"], verify=True)
        space = Space.from_dict(saved["space"])
        settings = {**saved, "trials": config.trials}
        write_json_atomic(out / SETTINGS, settings)
        return settings, space, data
    if journal.exists() or (out / SETTINGS).exists():
        raise TrainingError(f"{out} already holds a study ({JOURNAL}); continue it with --resume, "
                            "or choose another --out.")
    missing = [f"--{n}" for n in ("features", "split") if getattr(config, n) is None]
    if missing:
        raise TrainingError(f"tune: expected {', '.join(missing)} (or --resume with the study directory).")
    data = open_data(str(config.features), str(config.split), version_id=None, split_id=None, verify=True)
    if isinstance(config.space, Space):
        space = config.space
    elif config.space is not None:
        space = load_space(config.space, preset_name=config.preset)
    else:
        space = default_space(config.preset or "report-audiomnist", shape=data.shape, train_rows=data.train_rows,
                              max_weights=config.max_weights)
    if config.trial_minutes is not None:
        space = dataclasses.replace(space, train=dataclasses.replace(space.train, max_minutes=config.trial_minutes))
    check_space(space, data, max_weights=config.max_weights)
    for note in space.notes:
        log.info(f"default space: left out {note}")
    settings = _settings(config, space, data, _startup_trials(config.trials))
    write_json_atomic(out / SETTINGS, settings)
    return settings, space, data


def repair_journal(path: Path) -> bool:
    """Cut a last line that a killed writer left unfinished (Optuna appends one JSON line per record).

    Such a record was never acknowledged to anyone; left in place, the next record would be
    appended to it and make the journal unreadable. Returns whether anything was cut.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size == 0:
        return False
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        tail = min(size, 1 << 20)
        while True:
            f.seek(size - tail)
            chunk = f.read(tail)
            cut = chunk.rfind(b"\n")
            if cut >= 0 or tail == size:
                break
            tail = min(size, tail * 2)
        keep = size - tail + cut + 1 if cut >= 0 else 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning(f"{path}: cut an unfinished last record ({size - keep} bytes) left by a killed process")
    return True


def _sampler(seed: int, startup_trials: int) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True, group=True,
                                          constant_liar=True)


def _open_study(out: Path, settings: dict[str, Any], *, resume: bool) -> Any:
    """The study in ``out``'s journal; a resumed session reseeds the sampler past the trials it holds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if resume:
        repair_journal(out / JOURNAL)
    storage = journal_storage(out)
    pruner = make_pruner(settings["pruner"], eval_every=Space.from_dict(settings["space"]).train.eval_every,
                         startup_trials=settings["startup_trials"])
    # (a session killed between writing its settings and creating the study resumes with none yet)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)] if resume else []
    held = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials) if STUDY_NAME in names else 0
    # A fresh sampler per session: seeded by (seed, trials already held) so that a resumed
    # session does not draw its random start-up trials again.
    sampler = _sampler(settings["seed"] + 7919 * held, settings["startup_trials"])
    return optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=STUDY_NAME,
                               direction="maximize", load_if_exists=True)


def _settle_interrupted(study: Any) -> None:
    """Trials left running by a killed session: failed, and their parameters queued once more."""
    import optuna
    from optuna.trial import TrialState

    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial = optuna.trial.Trial(study, frozen._trial_id)
        _fail_and_requeue(study, trial, frozen.params, frozen.user_attrs,
                          "interrupted: the tune process stopped during the trial")


def _fail_and_requeue(study: Any, trial: Any, params: dict[str, Any], attrs: dict[str, Any], reason: str) -> None:
    from optuna.trial import TrialState

    retry = "retry_of" not in attrs
    trial.set_user_attr("failure", reason + ("; queued again" if retry else "; already a retry: not queued again"))
    trial.set_user_attr("requeued", retry)
    study.tell(trial, state=TrialState.FAIL)
    if retry:
        study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
    log.warning(f"trial {trial.number}: {reason}" + ("; its parameters are queued again" if retry else ""))


def counted(frozen: Any) -> bool:
    """Whether a finished trial counts toward the study's trial budget (a re-queued failure does not)."""
    from optuna.trial import TrialState

    if frozen.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return frozen.state == TrialState.FAIL and not frozen.user_attrs.get("requeued", False)


def _probe(study_dir: str, features: str) -> list[str]:
    """Run on each worker of an existing cluster: can it write the study and read the features?"""
    problems = []
    reason = probe_writable(study_dir)
    if reason is not None:
        problems.append(f"cannot create files in the study directory {study_dir} ({reason})")
    if not (Path(features) / "zarr.json").is_file():
        problems.append(f"cannot see the feature version {features}")
    return problems


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class _Session:
    """The scheduling loop of one ``tune`` process."""

    config: TuneConfig
    out: Path
    settings: dict[str, Any]
    space: Space
    study: Any
    open_data: Callable[..., Any]
    started: float
    _bar: Any = None

    def run(self) -> None:
        from siamese_audio.cluster import dask_client

        if self._budget_left(0) <= 0:
            log.info(f"the study holds {self._counted()} trials of {self.config.trials}: nothing to run")
            return
        with dask_client(workers=self.config.workers, scheduler=self.config.scheduler) as client:
            threads = self._threads(client)
            self._loop(client, threads)

    def _counted(self) -> int:
        return sum(counted(t) for t in self.study.get_trials(deepcopy=False))

    def _budget_left(self, in_flight: int) -> int:
        return self.config.trials - self._counted() - in_flight

    def _threads(self, client: Any) -> dict[str, int]:
        """Torch threads of each worker: the cores of its host over the workers on that host."""
        if not client.scheduler_info().get("workers"):
            log.info("Waiting for a first Dask worker ...")
            client.wait_for_workers(1)
        workers = client.scheduler_info()["workers"]
        if self.config.scheduler:
            reports = client.run(_probe, str(self.out.resolve()), self.settings["features"])
            bad = [f"worker {addr}: {p}" for addr, problems in sorted(reports.items()) for p in problems]
            if bad:
                raise SiameseAudioError(
                    "Expected every Dask worker to see the study directory and the features at the client's paths. "
                    + "; ".join(bad) + ". Mount the same shared filesystem at the same path everywhere.")
        if self.config.threads:
            return {addr: self.config.threads for addr in workers}
        cores = client.run(_cores)
        per_host = Counter(info.get("host") for info in workers.values())
        return {addr: max(1, cores.get(addr, 1) // per_host[info.get("host")]) for addr, info in workers.items()}

    def _task(self, trial: Any, model: Any, train: Any, threads: dict[str, int]) -> TrialTask:
        s = self.settings
        return TrialTask(study_dir=str(self.out.resolve()), trial_id=trial._trial_id, number=trial.number,
                         model_config=dataclasses.asdict(model), train_config=dataclasses.asdict(train),
                         features=s["features"], split=s["split"], version_id=s["feature_version_id"],
                         split_id=s["split_id"], pruner=s["pruner"], startup_trials=s["startup_trials"],
                         device=self.config.device, threads=threads,
                         default_threads=min(threads.values()) if threads else 1, open_data=self.open_data)

    def _submit(self, client: Any, threads: dict[str, int]) -> tuple[Any, Any] | None:
        """Ask the study for a trial, draw its configs, send it to the cluster."""
        from optuna.trial import TrialState

        trial = self.study.ask()
        try:
            model, train = self.space.suggest(trial)
        except TrainingError as exc:  # check_space makes this rare: a float draw a config refuses
            trial.set_user_attr("failure", str(exc))
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        trial.set_user_attr("model_config", json.loads(json.dumps(dataclasses.asdict(model))))
        trial.set_user_attr("train_config", json.loads(json.dumps(dataclasses.asdict(train))))
        future = client.submit(run_trial, self._task(trial, model, train, threads), pure=False,
                               key=f"tune-trial-{trial.number:05d}-{os.getpid()}-{time.time_ns()}")
        return future, trial

    def _loop(self, client: Any, threads: dict[str, int]) -> None:
        from distributed import wait
        from tqdm import tqdm

        from siamese_audio.training.tune.outputs import write_outputs

        in_flight: dict[Any, Any] = {}
        self._bar = tqdm(total=self.config.trials, initial=self._counted(), desc="tune", unit="trial",
                         file=sys.stderr, disable=not self.config.progress, dynamic_ncols=True)
        try:
            while True:
                slots = max(1, len(client.scheduler_info()["workers"]))
                while (len(in_flight) < slots and self._budget_left(len(in_flight)) > 0
                       and not self._out_of_time()):
                    submitted = self._submit(client, threads)
                    if submitted is not None:
                        in_flight[submitted[0]] = submitted[1]
                    else:
                        self._bar.update(1)
                if not in_flight:
                    break
                done, _ = wait(list(in_flight), return_when="FIRST_COMPLETED")
                for future in done:
                    self._finish(future, in_flight.pop(future))
                write_outputs(self.out, self.study, self.space, self.settings, final=False)
        finally:
            for future in in_flight:
                future.cancel()
            self._bar.close()

    def _out_of_time(self) -> bool:
        return bool(self.config.minutes) and time.monotonic() - self.started >= 60.0 * self.config.minutes

    def _finish(self, future: Any, trial: Any) -> None:
        """Tell the study how a trial ended."""
        from distributed import KilledWorker
        from optuna.trial import TrialState

        try:
            out = future.result()
        except KilledWorker as exc:
            out = {"state": "killed", "reason": f"its workers died running it ({exc})"}
        except Exception as exc:  # noqa: BLE001 - any error of one trial fails that trial, not the study
            out = {"state": "fail", "reason": f"{type(exc).__name__}: {exc}"}
        for key in ("value", "n_tasks", "ci95", "best_epoch", "epochs", "seconds", "cpu_seconds", "stopped", "worker",
                    "threads"):
            if key in out:
                trial.set_user_attr(key, out[key])
        state = out["state"]
        if state == "killed":
            _fail_and_requeue(self.study, trial, trial.params, trial.user_attrs, f"killed: {out['reason']}")
            return
        if state == "complete":
            self.study.tell(trial, out["value"])
        elif state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("failure", out.get("reason", "unknown"))
            self.study.tell(trial, state=TrialState.FAIL)
            log.warning(f"trial {trial.number} failed: {out.get('reason')}")
        self._bar.update(1)
        from siamese_audio.training.tune.outputs import best_trial

        best = best_trial(self.study)
        if best is not None:
            self._bar.set_postfix(best=f"{best.user_attrs['value']:.3f}", trial=best.number)

    def result(self, files: dict[str, str]) -> TuneResult:
        from siamese_audio.training.tune.outputs import best_summary

        trials = self.study.get_trials(deepcopy=False)
        return TuneResult(
            study_dir=self.out, best=best_summary(self.study), counts=dict(Counter(t.state.name for t in trials)),
            n_trials=len(trials), epochs=int(sum(t.user_attrs.get("epochs", 0) or 0 for t in trials)),
            elapsed_s=time.monotonic() - self.started, files=files, notes=self.space.notes)


__all__ = ["DEFAULT_PRUNER", "LOCK", "SETTINGS", "TuneConfig", "TuneResult", "counted", "read_settings",
           "repair_journal", "tune"]

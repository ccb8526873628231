"""``tune`` on a local Dask cluster with generated data: a 4-trial study on 2 workers writes its files,
never reads the test classes, survives a worker killed during a trial; a killed ``tune`` resumes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest

from siamese_audio.cli import main
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import open_version
from siamese_audio.manifests.split_catalog import clip_rows
from siamese_audio.manifests.splits import make_random_split, read_split, write_split
from siamese_audio.training.config import load_config, model_config_from_dict, train_config_from_dict
from siamese_audio.training.tune import TuneConfig, open_run_data, tune
from siamese_audio.training.tune.trial import STUDY_NAME, journal_storage

pytestmark = pytest.mark.slow

# The recording opener below travels to the worker processes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = Path(__file__).resolve().parents[1]
CLASSES = [f"{i:02d}" for i in range(1, 21)]
SPACE = """preset = "tiny"
[model]
fc_units = { choices = [16, 32] }
[train]
lr = { low = 1e-3, high = 1e-2, log = true }
max_epochs = 10
eval_every = 5
eval_tasks = 20
patience = 100
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("store")
    version = make_synthetic_version(root, dataset="audiomnist", classes=CLASSES, clips_per_class=6, shape=(16, 20),
                                     seed=1, separation=2.0)
    split = make_random_split("audiomnist", seed=0, sizes=(13, 5, 2), classes=CLASSES)
    space = root / "space.toml"
    space.write_text(SPACE)
    return SimpleNamespace(version=version, split_path=write_split(split, root / "split.parquet"), space=space)


class RecordingOpener:
    """Opens a trial's data like tune does, and records every row read (one file per process).

    With ``kill_after``, the first worker process to read that many times is killed (SIGKILL), once.
    """

    def __init__(self, log_dir: Path, kill_after: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.kill_after = kill_after

    def __call__(self, features, split, *, version_id, split_id, verify):
        data = open_run_data(features, split, version_id=version_id, split_id=split_id, verify=verify)
        return dataclasses.replace(data, read=_RecordingRead(data.read, self.log_dir, self.kill_after))


class _RecordingRead:
    def __init__(self, read, log_dir: Path, kill_after: int | None) -> None:
        self.read, self.log_dir, self.kill_after, self.calls = read, log_dir, kill_after, 0

    def __call__(self, rows):
        with open(self.log_dir / f"rows-{os.getpid()}.txt", "a") as f:
            f.write(" ".join(map(str, np.asarray(rows).tolist())) + "\n")
        self.calls += 1
        if self.kill_after is not None and self.calls == self.kill_after:
            try:
                os.close(os.open(self.log_dir / "killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.read(rows)


@pytest.fixture(scope="module")
def study(store, tmp_path_factory) -> SimpleNamespace:
    """4 trials on 2 local workers; the first worker to read 4 batches is killed during its trial."""
    root = tmp_path_factory.mktemp("study")
    reads = root / "reads"
    reads.mkdir()
    out = root / "study"
    result = tune(TuneConfig(out=out, features=store.version, split=store.split_path, space=store.space, trials=4,
                             workers=2, seed=3, progress=False), open_data=RecordingOpener(reads, kill_after=4))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(out))
    return SimpleNamespace(result=result, out=out, reads=reads, optuna=loaded)


def test_four_trials_on_two_workers_write_their_files(study):
    out, result = study.out, study.result
    counts = result.counts
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 4 and result.best is not None
    for name in ("trials.parquet", "best.toml", "study.md", "study.journal", "tune.json"):
        assert (out / name).is_file(), name
    for name in ("history.png", "importance.png", "parallel.png", "intermediate.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    table = pq.read_table(out / "trials.parquet").to_pylist()
    assert [r["number"] for r in table] == list(range(result.n_trials))
    finished = [r for r in table if r["state"] in ("COMPLETE", "PRUNED")]
    for row in finished:
        assert 0.0 <= row["val_ci95_low"] <= row["val_accuracy"] <= row["val_ci95_high"] <= 1.0
        assert row["val_n_tasks"] >= 20 and row["epochs"] in (5, 10) and row["seconds"] > 0
        assert row["param.model.fc_units"] in (16, 32) and 1e-3 <= row["param.train.lr"] <= 1e-2
    assert len({r["worker"] for r in finished}) >= 2  # trials ran in parallel on both workers
    assert result.epochs == sum(r["epochs"] or 0 for r in table)
    # best.toml is a train --config file of the best trial's exact configs
    best = study.optuna.trials[result.best["number"]]
    model, train = load_config(out / "best.toml")
    assert model == model_config_from_dict(best.user_attrs["model_config"])
    assert train == train_config_from_dict(best.user_attrs["train_config"])
    assert (out / "trials" / f"{best.number:05d}" / "best.pt").is_file()
    assert not any((out / "trials" / f"{t.number:05d}" / "best.pt").exists()
                   for t in study.optuna.trials if t.number != best.number)
    md = (out / "study.md").read_text()
    assert f"Trial {best.number}: validation accuracy {best.user_attrs['value']:.3f}" in md
    assert "test classes are never read" in md


def test_the_test_classes_are_never_read(study, store):
    version = open_version(store.version)
    rows = clip_rows(read_split(store.split_path), version)
    test_rows = {int(r) for rs in rows["test"].values() for r in rs}
    val_rows = {int(r) for rs in rows["validation"].values() for r in rs}
    train_rows = {int(r) for rs in rows["train"].values() for r in rs}
    read = {int(r) for path in study.reads.glob("rows-*.txt") for line in path.read_text().split("\n")
            for r in line.split()}
    assert len(list(study.reads.glob("rows-*.txt"))) >= 2  # recorded in the worker processes
    assert read & val_rows and read & train_rows  # the recording saw validations and batches
    assert not read & test_rows and read <= train_rows | val_rows


def test_a_worker_killed_during_a_trial_leaves_the_study_consistent(study):
    assert (study.reads / "killed").exists()
    trials = study.optuna.trials
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and "died" in failed[0].user_attrs["failure"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retry) == 1 and retry[0].state.name in ("COMPLETE", "PRUNED")
    assert retry[0].params == failed[0].params
    assert study.result.n_trials == 5 and len(trials) == 5


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear (tune exit code {proc.poll()})")
        time.sleep(0.2)


def test_a_killed_tune_resumes_and_keeps_its_finished_trials(store, tmp_path, capsys):
    out = tmp_path / "study"
    args = ["tune", "--features", str(store.version), "--split", str(store.split_path), "--out", str(out),
            "--space", str(store.space), "--trials", "3", "--workers", "1", "--pruner", "none", "--no-progress"]
    log = open(tmp_path / "tune.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "siamese_audio.cli", *args], cwd=REPO, stdout=log, stderr=log,
                            start_new_session=True)
    try:
        _wait_for(out / "trials" / "00001" / "attempt.json", proc, timeout=240)  # trial 0 told, trial 1 running
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    before = optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(out)).trials
    assert before[0].state.name == "COMPLETE" and before[1].state.name == "RUNNING"

    assert main(["tune", "--out", str(out), "--resume", "--seed", "9", "--workers", "1"]) == 2
    assert "expected no --seed 9" in capsys.readouterr().err

    assert main(["tune", "--out", str(out), "--resume", "--trials", "3", "--workers", "1", "--json",
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 1
    summary = json.loads(lines[0])
    after = optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(out)).trials
    assert after[0].state.name == "COMPLETE" and after[0].value == before[0].value  # never lost
    assert after[0].params == before[0].params
    assert after[1].state.name == "FAIL" and "interrupted" in after[1].user_attrs["failure"]
    assert after[2].user_attrs["retry_of"] == 1 and after[2].params == before[1].params
    assert [t.number for t in after] == [0, 1, 2, 3] and summary["n_trials"] == 4
    assert summary["counts"] == {"COMPLETE": 3, "FAIL": 1}
    assert pq.read_table(out / "trials.parquet").num_rows == 4

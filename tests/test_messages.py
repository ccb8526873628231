"""Issue 15, item 12: one line instead of a traceback, outputs checked before the work, one rule for seeds;
and the fault cases of a build: a full disk at each write (shards, catalog, seal), a repair interrupted."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from siamese_audio.errors import StoreError
from siamese_audio.features import store
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.manifests.splits import Split, write_split
from tests.conftest import tree_bytes
from tests.hostile import cli, one_line_error

CLASSES = [f"{i:02d}" for i in range(1, 11)]
SPLIT = Split("audiomnist", "file", None, {"train": CLASSES[:5], "validation": CLASSES[5:7], "test": CLASSES[7:]})


@pytest.fixture(scope="module")
def inproc():
    """A Dask cluster whose worker runs in this process: a fault injected here reaches its tasks."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


def disk_full_at(monkeypatch, marker: str) -> list[str]:
    """``os.fsync`` fails with ENOSPC for files whose path contains ``marker`` (the disk fills there)."""
    real, hits = os.fsync, []

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if marker in target:
            hits.append(target)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return hits


@pytest.mark.parametrize("where,marker", [("a shard", "/logmel/c/1/"), ("the catalog", ".catalog.parquet.tmp-"),
                                          ("the seal", ".SEAL.json.tmp-")])
def test_a_full_disk_during_the_build_is_one_line_and_the_build_resumes_identical(
        audiomnist_dir, tmp_path, inproc, monkeypatch, capsys, where, marker):
    args = ["build", "audiomnist", str(audiomnist_dir), "--store", str(tmp_path / "s"), "--scheduler", inproc,
            "--clips-per-shard", "4", "--no-progress", "--json"]
    code, out, _ = cli(capsys, *args[:4], str(tmp_path / "ref"), *args[5:])
    reference = Path(__import__("json").loads(out)["path"])
    with monkeypatch.context() as m:
        hits = disk_full_at(m, marker)
        code, out, err = cli(capsys, *args)
    line = one_line_error(err, "build")
    assert code == 2 and hits and "No space left on device" in line and "run the build again" in line, line
    version = tmp_path / "s" / "audiomnist" / reference.name
    assert not store.is_sealed(version)
    assert not [p for p in version.rglob("*") if ".tmp-" in p.name]      # no half-written file
    code, out, err = cli(capsys, *args)                                   # space freed: it resumes
    assert code == 0, err
    assert tree_bytes(version) == tree_bytes(reference)


def test_a_repair_interrupted_after_the_seal_was_removed_resumes(audiomnist_dir, tmp_path, run_build, monkeypatch):
    from tests.hostile import flip

    built = run_build("audiomnist", audiomnist_dir, tmp_path / "s")
    reference = tree_bytes(built.path)
    flip(store.shard_path(built.path, 0), 40)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a SIGKILL between unsealing and rewriting

    import siamese_audio.pipeline.build as build_module

    with monkeypatch.context() as m:
        m.setattr(build_module, "run_batches", killed)
        with pytest.raises(KeyboardInterrupt):
            run_build("audiomnist", audiomnist_dir, tmp_path / "s", repair=True)
    assert not store.is_sealed(built.path)
    with pytest.raises(StoreError, match="not sealed"):
        store.open_version(built.path)
    again = run_build("audiomnist", audiomnist_dir, tmp_path / "s")  # a plain build finishes it
    assert tree_bytes(again.path) == reference


@pytest.fixture(scope="module")
def v(tmp_path_factory):
    root = tmp_path_factory.mktemp("msg")
    path = make_synthetic_version(root / "store", classes=CLASSES, clips_per_class=4, shape=(16, 20), seed=3)
    return path, write_split(SPLIT, root / "split.parquet")


@pytest.mark.parametrize("out", ["file", "/proc/siamese-audio-test/run"])
def test_train_out_a_file_or_under_proc_is_one_line_before_the_work(v, tmp_path, capsys, monkeypatch, out):
    import siamese_audio.training.data as data_module

    monkeypatch.setattr(data_module, "open_training_inputs", lambda *a, **k: pytest.fail("work started"))
    if out == "file":
        out = str(tmp_path / "file")
        Path(out).write_text("x")
    code, _, err = cli(capsys, "train", "--features", str(v[0]), "--split", str(v[1]), "--out", out,
                       "--preset", "tiny", "--no-progress")
    line = one_line_error(err, "train")
    assert code == 2 and f"--out {out}: expected a folder" in line


@pytest.mark.parametrize("out", ["file", "/proc/siamese-audio-test/report"])
def test_evaluate_out_is_checked_before_the_work(v, tmp_path, capsys, monkeypatch, out):
    import siamese_audio.training.checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "load_embedder", lambda *a, **k: pytest.fail("work started"))
    if out == "file":
        out = str(tmp_path / "file")
        Path(out).write_text("x")
    code, _, err = cli(capsys, "evaluate", str(tmp_path / "best.pt"), "--features", str(v[0]), "--split", str(v[1]),
                       "--out", out)
    assert code == 2 and f"--out {out}: expected a folder" in one_line_error(err, "evaluate")


def test_a_full_disk_while_writing_a_report_is_one_line(v, tmp_path, capsys, monkeypatch):
    from tests.hostile import write_checkpoint

    checkpoint = write_checkpoint(tmp_path / "run" / "best.pt", store.open_version(v[0]), SPLIT)
    disk_full_at(monkeypatch, "/report/")
    code, _, err = cli(capsys, "evaluate", str(checkpoint), "--features", str(v[0]), "--split", str(v[1]),
                       "--ways", "2", "--runs", "2", "--no-curve", "--no-baseline", "--device", "cpu",
                       "--out", str(tmp_path / "report"))
    assert code == 2 and "No space left on device" in one_line_error(err, "evaluate")


def test_a_missing_scheduler_file_is_refused_before_connecting(audiomnist_dir, tmp_path, capsys, monkeypatch):
    import distributed

    monkeypatch.setattr(distributed, "Client", lambda *a, **k: pytest.fail("tried to connect"))
    code, _, err = cli(capsys, "build", "audiomnist", str(audiomnist_dir), "--store", str(tmp_path / "s"),
                       "--scheduler", "/missing.json")
    assert code == 2 and "Expected --scheduler to be a scheduler address (tcp://HOST:PORT) or an existing " \
        "scheduler file. Got '/missing.json': no such file." in one_line_error(err, "build")
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = cli(capsys, "build", "audiomnist", str(audiomnist_dir), "--store", str(tmp_path / "s"),
                       "--scheduler", str(tmp_path / "bad.json"))
    assert code == 2 and "expected a Dask scheduler file" in one_line_error(err, "build")


def test_one_rule_for_seeds(audiomnist_dir, tmp_path, v, capsys):
    for argv in (["build", "audiomnist", str(audiomnist_dir), "--store", str(tmp_path / "s"), "--seed", "-1"],
                 ["split", "audiomnist", "--scheme", "random", "--seed", "-1", "--out", str(tmp_path / "x.parquet")],
                 ["train", "--features", str(v[0]), "--split", str(v[1]), "--out", str(tmp_path / "run"),
                  "--preset", "tiny", "--seed", "-1"],
                 ["evaluate", "ck.pt", "--features", str(v[0]), "--split", str(v[1]), "--seed", "-1",
                  "--out", str(tmp_path / "rep")]):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "seed to be a non-negative integer" in one_line_error(err, argv[0]), argv
    assert not (tmp_path / "s").exists() and not (tmp_path / "x.parquet").exists()

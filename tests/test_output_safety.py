"""Issue 24: outputs that cannot damage what they read, locks on output folders, bounded sizes and side files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from siamese_audio.errors import StoreError
from siamese_audio.features import store
from siamese_audio.features.store import StoreLayout, open_version
from siamese_audio.files import VERSION_MARKERS, version_containing
from siamese_audio.manifests.dummies import make_audiomnist
from siamese_audio.pipeline.build import BuildConfig, build
from tests.conftest import tree_bytes
from tests.hostile import cli, one_line_error


@pytest.fixture(scope="module")
def sealed(tmp_path_factory, scheduler_address):
    """One tiny sealed AudioMNIST version (built once for this module) and its bytes."""
    root = tmp_path_factory.mktemp("safety")
    source = make_audiomnist(root / "audiomnist", speakers=("01", "02", "03"), digits=3, reps=2)
    result = build(BuildConfig(dataset="audiomnist", source_dir=source, store_root=root / "store", progress=False,
                               scheduler=scheduler_address, layout=StoreLayout(clips_per_shard=4)))
    return result.path, source, tree_bytes(result.path)


def _untouched(path: Path, reference: dict[str, bytes]) -> None:
    assert tree_bytes(path) == reference
    assert store.verify(path) == []


def test_version_markers_are_the_layouts_plan_and_seal():
    assert set(VERSION_MARKERS) == {store.PLAN, store.SEAL}


def test_version_containing_sees_versions_through_links_and_unbuilt_paths(sealed, tmp_path):
    path, _, _ = sealed
    assert version_containing(path / "a" / "b" / "c.parquet") == path
    assert version_containing(path) == path
    link = tmp_path / "link"
    link.symlink_to(path)
    assert version_containing(link / "run") == path
    assert version_containing(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("command", [
    ["split", "audiomnist", "--scheme", "report", "--out", "{V}/catalog.parquet"],
    ["split", "audiomnist", "--scheme", "report", "--out", "{V}/SEAL.json"],
    ["train", "--features", "{V}", "--split", "x.parquet", "--out", "{V}/myrun"],
    ["train", "--resume", "{V}/myrun"],
    ["evaluate", "ck.pt", "--features", "{V}", "--split", "x.parquet", "--out", "{V}/report"],
    ["explain", "ck.pt", "--features", "{V}", "--split", "x.parquet", "--out", "{V}/explained"],
    ["tune", "--features", "{V}", "--split", "x.parquet", "--out", "{V}/study"],
    ["demo", "--out", "{V}/demo"],
    ["download", "audiomnist", "--to", "{V}/data"],
    ["build", "audiomnist", "{SRC}", "--store", "{V}/inner", "--no-progress"],
])
def test_every_writing_command_refuses_an_output_inside_a_version(sealed, capsys, command):
    path, source, reference = sealed
    argv = [a.replace("{V}", str(path)).replace("{SRC}", str(source)) for a in command]
    code, out, err = cli(capsys, *argv)
    line = one_line_error(err, argv[0])
    assert code == 2 and f"inside feature version {path}" in line and "(sealed)" in line, line
    _untouched(path, reference)


def test_an_unsealed_version_is_refused_too(tmp_path, capsys):
    version = tmp_path / "store" / "audiomnist" / "abc"
    version.mkdir(parents=True)
    (version / store.PLAN).write_text("{}")
    code, _, err = cli(capsys, "split", "audiomnist", "--scheme", "report", "--out", str(version / "s.parquet"))
    assert code == 2 and "(being built)" in one_line_error(err, "split")
    assert sorted(p.name for p in version.iterdir()) == [store.PLAN]


def test_repair_never_deletes_files_that_do_not_belong_and_names_them(sealed, scheduler_address, tmp_path):
    path, source, reference = sealed
    foreign = path / "myrun"
    foreign.mkdir()
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png"):
        (foreign / name).write_bytes(b"the run's own bytes")
    try:
        cfg = BuildConfig(dataset="audiomnist", source_dir=source, store_root=path.parents[1], progress=False,
                          scheduler=scheduler_address, layout=StoreLayout(clips_per_shard=4), repair=True)
        with pytest.raises(StoreError, match=r"cannot repair .* holds 4 \('myrun/best.pt', 'myrun/curves.png', "
                                             r"'myrun/last.pt', 'myrun/metrics.csv'\) files that are not part"
                                             r".*Nothing was changed"):
            build(cfg)
        assert all((foreign / n).read_bytes() == b"the run's own bytes" for n in os.listdir(foreign))
        assert store.is_sealed(path)
    finally:
        for name in os.listdir(foreign):
            (foreign / name).unlink()
        foreign.rmdir()
    _untouched(path, reference)
    open_version(path)


# ----------------------------------------------------------------------------- locks on output folders

CLASSES = [f"{i:02d}" for i in range(1, 13)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small sealed synthetic version (no Dask) and a split of it, for train and evaluate."""
    from siamese_audio.features.dummies import make_synthetic_version
    from siamese_audio.manifests.splits import make_random_split, write_split

    root = tmp_path_factory.mktemp("synthetic")
    version = make_synthetic_version(root / "store", dataset="audiomnist", classes=CLASSES, clips_per_class=6,
                                     shape=(16, 20), seed=0, separation=3.0)
    split = make_random_split("audiomnist", seed=0, sizes=(5, 5, 2), classes=CLASSES)
    return version, write_split(split, root / "split.parquet")


def _train_args(synthetic, out: Path, *extra: str) -> list[str]:
    version, split_path = synthetic
    return ["train", "--features", str(version), "--split", str(split_path), "--out", str(out),
            "--preset", "tiny", "--max-epochs", "2", "--eval-every", "1", "--eval-tasks", "10", "--no-progress",
            "--device", "cpu", *extra]


@pytest.fixture
def live_holder():
    """A lock holder that is alive on this host (a sleeping child process)."""
    import json
    import socket
    import subprocess
    import time

    from siamese_audio.lock import _process_start

    child = subprocess.Popen(["sleep", "60"])
    try:
        def write(path: Path) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"host": socket.gethostname(), "pid": child.pid,
                                        "pid_start": _process_start(child.pid), "since": time.time(),
                                        "token": "other"}))
        write.pid = child.pid
        yield write
    finally:
        child.kill()
        child.wait()


def test_a_second_train_into_a_held_run_directory_stops_at_once_naming_the_holder(synthetic, tmp_path, capsys,
                                                                                  live_holder):
    run = tmp_path / "run"
    live_holder(run / ".lock")
    code, out, err = cli(capsys, *_train_args(synthetic, run))
    line = one_line_error(err, "train")
    assert code == 2 and f"Run directory {run} is in use by another command" in line
    assert f"process {live_holder.pid} on host" in line
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_a_lock_of_a_command_that_is_gone_is_taken_over_and_released(synthetic, tmp_path, capsys):
    import json
    import socket

    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "pid_start": "1",
                                           "since": 0.0, "token": "gone"}))
    code, out, err = cli(capsys, *_train_args(synthetic, run))
    assert code == 0, err
    assert (run / "best.pt").is_file() and not (run / ".lock").exists()


def test_a_fresh_run_refuses_a_directory_holding_another_runs_best_pt(synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"another run's weights")
    code, out, err = cli(capsys, *_train_args(synthetic, run))
    line = one_line_error(err, "train")
    assert code == 2 and "holds another run's files (best.pt) without its last.pt" in line
    assert (run / "best.pt").read_bytes() == b"another run's weights"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]


def test_evaluate_into_a_held_report_directory_stops_before_any_work(tmp_path, capsys, live_holder):
    report = tmp_path / "report"
    live_holder(report / ".lock")
    code, out, err = cli(capsys, "evaluate", str(tmp_path / "missing.pt"), "--features", str(tmp_path / "nope"),
                         "--split", "x.parquet", "--out", str(report))
    line = one_line_error(err, "evaluate")
    assert code == 2 and f"Report directory {report} is in use by another command" in line
    assert sorted(p.name for p in report.iterdir()) == [".lock"]


def test_a_refused_command_leaves_no_output_folder_behind(tmp_path, capsys):
    report = tmp_path / "report"
    code, out, err = cli(capsys, "evaluate", str(tmp_path / "missing.pt"), "--features", str(tmp_path / "nope"),
                         "--split", "x.parquet", "--out", str(report))
    assert code == 2 and not report.exists()


def test_a_lock_that_is_a_fifo_is_refused_not_read(synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / ".lock")
    code, out, err = cli(capsys, *_train_args(synthetic, run))
    line = one_line_error(err, "train")
    assert code == 2 and "expected its lock" in line and "it is a FIFO" in line


def test_a_resumed_run_without_best_pt_does_not_print_one(synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *_train_args(synthetic, run))[0] == 0
    (run / "best.pt").unlink()
    code, out, err = cli(capsys, "train", "--resume", str(run), "--no-progress", "--device", "cpu", "--json")
    assert code == 0, err
    import json

    assert json.loads(out)["best_checkpoint"] is None
    code, out, err = cli(capsys, "train", "--resume", str(run), "--no-progress", "--device", "cpu")
    assert "best weights: none" in out and not (run / "best.pt").exists()


# ----------------------------------------------------------------------------- bounded sizes, side files

def _no_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) when the block blocks on a FIFO."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def guard():
        def alarm(*_):
            raise TimeoutError("blocked")
        old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    return guard()


def test_build_refuses_a_huge_clips_per_shard_before_any_work(tmp_path, capsys):
    source = make_audiomnist(tmp_path / "audiomnist", speakers=("01",), digits=2, reps=2)
    code, out, err = cli(capsys, "build", "audiomnist", str(source), "--store", str(tmp_path / "store"),
                         "--clips-per-shard", "1000000000", "--workers", "1", "--no-progress")
    line = one_line_error(err, "build")
    assert code == 2 and "clips_per_shard to be an integer from 1 to 1,048,576. Got 1000000000" in line
    code, out, err = cli(capsys, "build", "audiomnist", str(source), "--store", str(tmp_path / "store"),
                         "--clips-per-shard", "100000", "--workers", "1", "--no-progress")
    line = one_line_error(err, "build")
    assert code == 2 and "Expected --clips-per-shard at most 32 (the dataset has 4 clips" in line
    assert not (tmp_path / "store").exists()


def test_clips_per_shard_is_bounded_by_the_data_and_by_memory():
    from siamese_audio.features.layout import MAX_CLIPS_PER_SHARD, check_clips_per_shard

    check_clips_per_shard(32, n_clips=12, clip_shape=(224, 224), available=1 << 34)
    check_clips_per_shard(500, n_clips=1000, clip_shape=(224, 224), available=1 << 34)
    with pytest.raises(StoreError, match=r"at most 32 \(the dataset has 12 clips"):
        check_clips_per_shard(100, n_clips=12, clip_shape=(224, 224), available=1 << 34)
    with pytest.raises(StoreError, match=r"at most 83 \(a shard holds 200,704 bytes a clip .* 0.1 GiB"):
        check_clips_per_shard(500, n_clips=1000, clip_shape=(224, 224), available=1 << 27)
    with pytest.raises(StoreError, match=f"from 1 to {MAX_CLIPS_PER_SHARD:,}"):
        StoreLayout(clips_per_shard=MAX_CLIPS_PER_SHARD + 1)


@pytest.mark.parametrize("runs", ["100000000000", "20000000"])
def test_evaluate_refuses_runs_past_the_bound_with_the_limit(tmp_path, capsys, runs):
    code, out, err = cli(capsys, "evaluate", str(tmp_path / "ck.pt"), "--features", str(tmp_path / "v"),
                         "--split", "x.parquet", "--runs", runs, "--out", str(tmp_path / "r"))
    line = one_line_error(err, "evaluate")
    assert code == 2 and "Expected runs (tasks per evaluating class) at most 1,000,000" in line
    assert not (tmp_path / "r").exists()


def test_runs_are_bounded_by_classes_and_memory(monkeypatch):
    from siamese_audio.errors import EvaluationError
    from siamese_audio.evaluation import tasks

    tasks.check_runs(200_000, n_classes=5)
    with pytest.raises(EvaluationError, match=r"at most 200,000 \(at most 1,000,000 tasks over 5 classes\)"):
        tasks.check_runs(200_001, n_classes=5)
    monkeypatch.setattr("siamese_audio.memory.available_bytes", lambda: 1 << 26)
    with pytest.raises(EvaluationError, match=r"bytes a run over 50 classes, within 1/4 of the 0.1 GiB"):
        tasks.check_runs(10_000, n_classes=50, ways=5)


def test_batch_sizes_are_bounded(tmp_path, capsys, monkeypatch):
    import dataclasses

    from siamese_audio.errors import EvaluationError, TrainingError
    from siamese_audio.evaluation.evaluator import check_batch_size
    from siamese_audio.training.config import preset

    code, out, err = cli(capsys, "evaluate", str(tmp_path / "ck.pt"), "--features", str(tmp_path / "v"),
                         "--split", "x.parquet", "--batch-size", "1000000000", "--out", str(tmp_path / "r"))
    assert code == 2 and "Expected batch_size at most 8,192" in one_line_error(err, "evaluate")
    monkeypatch.setattr("siamese_audio.memory.available_bytes", lambda: 1 << 30)
    check_batch_size(20, (224, 224))
    with pytest.raises(EvaluationError, match=r"--batch-size at most 20 \(clips of 224 x 224 float32"):
        check_batch_size(64, (224, 224), option="--batch-size")
    _, train = preset("tiny")
    with pytest.raises(TrainingError, match="expected eval_tasks at most 1,000,000"):
        dataclasses.replace(train, eval_tasks=10**9)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_hash_cache_that_is_no_regular_file_is_ignored_not_read(tmp_path, kind, caplog):
    from siamese_audio.pipeline.hashcache import HashCache, cache_path

    source = tmp_path / "src"
    source.mkdir()
    path = cache_path(tmp_path / "store", source)
    path.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with _no_hang():
        cache = HashCache.load(tmp_path / "store", source, "blake3")
    assert cache.entries == {}
    assert "hash cache ignored" in caplog.text and "regular file" in caplog.text


def test_a_version_lock_that_is_a_fifo_stops_the_build_at_once(tmp_path):
    from siamese_audio.lock import acquire, lock_path

    version = tmp_path / "store" / "audiomnist" / "abc"
    version.parent.mkdir(parents=True)
    os.mkfifo(lock_path(version))
    with _no_hang(), pytest.raises(StoreError, match=r"expected its lock .*abc.lock to be a regular file .* a FIFO"):
        acquire(lock_path(version), what="Feature version abc")


def test_a_seal_linked_to_dev_zero_is_refused(tmp_path):
    from siamese_audio.features.integrity import read_seal

    version = tmp_path / "v"
    version.mkdir()
    (version / store.PLAN).write_text("{}")
    (version / store.SEAL).symlink_to("/dev/zero")
    with _no_hang(), pytest.raises(StoreError, match="cannot read the seal .*regular file; it is a character device"):
        read_seal(version)


@pytest.mark.parametrize("kind, reason", [("dir", "Is a directory|it is a folder"), ("loop", "Too many levels of symbolic links"),
                                          ("fifo", "it is a FIFO"), ("missing", "It does not exist")])
def test_a_split_path_that_is_no_file_gets_the_right_reason(tmp_path, kind, reason):
    from siamese_audio.errors import SplitError
    from siamese_audio.manifests.splits import read_split

    path = tmp_path / "split.parquet"
    if kind == "dir":
        path.mkdir()
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "fifo":
        os.mkfifo(path)
    with _no_hang(), pytest.raises(SplitError, match=reason):
        read_split(path)


@pytest.mark.parametrize("kind, reason", [("dev-zero", "it is a character device"), ("fifo", "it is a FIFO")])
def test_a_checkpoint_that_is_no_regular_file_is_refused_not_read(tmp_path, kind, reason):
    from siamese_audio.errors import TrainingError
    from siamese_audio.training.checkpoint import load_checkpoint

    path = tmp_path / "best.pt"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with _no_hang(), pytest.raises(TrainingError, match=reason):
        load_checkpoint(path)


def test_a_checkpoint_larger_than_the_memory_is_refused(tmp_path, monkeypatch):
    from siamese_audio.errors import TrainingError
    from siamese_audio.training import checkpoint

    path = tmp_path / "best.pt"
    path.write_bytes(b"\0" * 4096)
    monkeypatch.setattr(checkpoint, "available_bytes", lambda: 1000)
    with pytest.raises(TrainingError, match=r"at most 1,000 bytes; it holds 4,096 \(the memory available now"):
        checkpoint.load_checkpoint(path)


# ----------------------------------------------------------------------------- optimizer state of last.pt

@pytest.fixture(scope="module")
def last_run(synthetic, tmp_path_factory):
    from siamese_audio.cli import main

    run = tmp_path_factory.mktemp("lastrun") / "run"
    assert main(_train_args(synthetic, run)) == 0
    return run


@pytest.mark.parametrize("change, message", [
    (lambda o: o["state"][0].__setitem__("exp_avg", torch_zeros(3, 3)), "optimizer exp_avg of parameter 0 has shape"),
    (lambda o: o["state"][0].__setitem__("step", torch_tensor(-5.0)), "optimizer step of parameter 0 to be a non-neg"),
    (lambda o: o["state"][1].__setitem__("exp_avg_sq", torch_nan_like(o["state"][1]["exp_avg_sq"])), "NaN or Inf"),
    (lambda o: o["param_groups"][0]["params"].pop(), "its optimizer lists parameters"),
    (lambda o: o["param_groups"][0].__setitem__("lr", float("nan")), "optimizer setting lr"),
])
def test_resume_refuses_a_crafted_optimizer_state_in_one_line(last_run, tmp_path, capsys, change, message):
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(last_run, run)
    payload = torch.load(run / "last.pt", weights_only=True)
    change(payload["optimizer_state"])
    torch.save(payload, run / "last.pt")
    before = tree_bytes(run)
    code, out, err = cli(capsys, "train", "--resume", str(run), "--max-minutes", "5", "--no-progress",
                         "--device", "cpu")
    line = one_line_error(err, "train")
    assert code == 2 and f"Checkpoint {run / 'last.pt'}" in line and message in line, line
    assert tree_bytes(run) == before


def torch_zeros(*shape):
    import torch

    return torch.zeros(*shape)


def torch_tensor(value):
    import torch

    return torch.tensor(value)


def torch_nan_like(t):
    import torch

    return torch.full_like(t, float("nan"))


# ----------------------------------------------------------------------------- bounded echoes, CSV cells

def test_csv_cells_that_a_spreadsheet_would_run_are_escaped():
    import pandas as pd

    from siamese_audio.files import csv_text

    frame = pd.DataFrame({"class": ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "dog"], "accuracy": [-0.5] * 5},
                         index=["=i", "b", "c", "d", "e"])
    text = csv_text(frame)
    assert "'=HYPERLINK" in text and "\n'=i," in text and ",'+1," in text and ",'-2," in text
    assert ",'@SUM(A1)," in text and ",dog,-0.5" in text


def test_every_csv_report_goes_through_the_escape():
    root = Path(__file__).resolve().parents[1]
    writers = [p for p in (root / "evaluation").rglob("*.py") if ".to_csv(" in p.read_text()]
    assert writers == [], writers


def test_an_error_echoing_a_huge_argument_stays_short(tmp_path, capsys):
    huge = str(tmp_path / ("x" * 5_000_000))
    code, out, err = cli(capsys, "split-show", huge)
    line = one_line_error(err, "split-show")
    assert code == 2 and len(line) < 2200 and "characters)" in line


def test_a_checkpoint_with_a_huge_version_id_is_refused_briefly(synthetic, tmp_path, capsys):
    from siamese_audio.manifests.splits import read_split
    from tests.hostile import write_checkpoint

    version_path, split_path = synthetic
    ck = write_checkpoint(tmp_path / "ck" / "best.pt", open_version(version_path), read_split(split_path),
                          feature_version_id="v" * 30_000_000)
    code, out, err = cli(capsys, "evaluate", str(ck), "--features", str(version_path), "--split", str(split_path),
                         "--out", str(tmp_path / "report"))
    line = one_line_error(err, "evaluate")
    assert code == 2 and "feature_version_id of at most 256 characters. Got 30,000,000" in line and len(line) < 400
    assert not (tmp_path / "report").exists()

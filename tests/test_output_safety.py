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

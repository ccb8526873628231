"""The feature build on a real Dask cluster (``dask scheduler`` / ``dask worker`` processes on
loopback), with faults: a worker killed, the client killed, two builds at once, a worker that
cannot see the dataset. Also the build lock, store URLs and the worker check on their own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from siamese_audio import lock
from siamese_audio.errors import DatasetLayoutError, StoreError
from siamese_audio.features import store
from siamese_audio.features.store import StoreLayout
from siamese_audio.manifests.dummies import make_audiomnist
from siamese_audio.pipeline.build import BuildConfig, build, local_path
from siamese_audio.pipeline.workers import check_workers, environment, probe_worker
from tests.conftest import tree_bytes

REPO = Path(__file__).resolve().parents[1]
PER_SHARD = 4
START_TIMEOUT_S = 60


# --------------------------------------------------------------------------------------------
# Dask processes started the way users start them, always stopped in finalizers


def _spawn(args: list[str], log: Path, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([*prefix, sys.executable, "-m", "dask", *args], stdout=out, stderr=out,
                                cwd=REPO, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group this module started (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


class Cluster:
    """A scheduler and its workers, as separate processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scheduler_file = root / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        self.procs.append(_spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(self.scheduler_file)], root / "scheduler.log"))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not self.scheduler_file.is_file():
            raise RuntimeError(f"no scheduler after {START_TIMEOUT_S} s: {(root / 'scheduler.log').read_text()}")
        time.sleep(0.2)  # the file is written in one go, but let the scheduler finish starting
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        from distributed import Client

        self.client = Client(self.address, timeout="30s")

    def add_worker(self, name: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        proc = _spawn(["worker", "--scheduler-file", str(self.scheduler_file), "--nworkers", "1",
                       "--nthreads", "1", "--no-dashboard", "--name", name], self.root / f"{name}.log", prefix)
        self.procs.append(proc)
        return proc

    def wait_for(self, n: int) -> None:
        self.client.wait_for_workers(n, timeout=START_TIMEOUT_S)

    def n_workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    def close(self) -> None:
        self.client.close()
        for proc in reversed(self.procs):
            _stop(proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.add_worker("w0")
        c.add_worker("w1")
        c.wait_for(2)
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """800 clips: about 4 s of work for two workers, long enough to kill things in the middle."""
    speakers = tuple(f"{i:02d}" for i in range(1, 11))
    return make_audiomnist(tmp_path_factory.mktemp("data") / "am", speakers=speakers, digits=10, reps=8)


def _config(source: Path, store_root: Path | str, **kw) -> BuildConfig:
    return BuildConfig(dataset="audiomnist", source_dir=source, store_root=store_root, progress=False,
                       layout=StoreLayout(clips_per_shard=PER_SHARD), **kw)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """The same build on the local default cluster (two worker processes)."""
    return build(_config(dataset, tmp_path_factory.mktemp("ref"), workers=2))


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "siamese_audio.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=REPO)


def _wait_markers(version: Path, n: int, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    markers = version / store.MARKERS
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if markers.is_dir() and len(list(markers.glob("*.json"))) >= n:
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the build ended before {n} batches were written: {proc.stderr.read()}")
        time.sleep(0.02)
    pytest.fail(f"{version}: fewer than {n} batch markers after {timeout} s")


# --------------------------------------------------------------------------------------------
# (1) - (5): builds on the cluster


@pytest.mark.slow
def test_cluster_build_equals_local_build_and_workers_are_settled(cluster, dataset, reference, tmp_path):
    root = tmp_path / "s"
    result = build(_config(dataset, f"file://{root}", scheduler=str(cluster.scheduler_file)))
    assert result.version_id == reference.version_id
    assert result.path == root.resolve() / "audiomnist" / reference.version_id
    assert result.n_stored == 800 and not result.already_sealed
    assert tree_bytes(result.path) == tree_bytes(reference.path)
    assert store.verify(result.path) == []
    assert sorted(p.name for p in (root / "audiomnist").iterdir()) == [reference.version_id]  # lock gone
    # Workers started by hand: the tasks lowered zarr's concurrency; dask's nanny pinned BLAS to 1 thread.
    zarr_cfg = cluster.client.run(lambda: __import__("zarr").config.get("async.concurrency"))
    assert list(zarr_cfg.values()) == [4, 4]
    probes = cluster.client.run(probe_worker, str(next(dataset.rglob("*.wav"))), str(root))
    assert [p["problems"] for p in probes.values()] == [[], []]
    assert all(p["threads"] and set(p["threads"].values()) == {1} for p in probes.values())
    tasks = result.timing["tasks"]
    assert len({t["worker_pid"] for t in tasks}) == 2 and len(tasks) == 800 // PER_SHARD


@pytest.mark.slow
def test_a_worker_killed_mid_build_changes_nothing(cluster, dataset, reference, tmp_path):
    victim = cluster.add_worker("victim")
    cluster.wait_for(3)
    version = tmp_path / "s" / "audiomnist" / reference.version_id
    killed_at: list[float] = []

    def kill_when_busy() -> None:
        _wait_markers(version, 6, timeout=120)
        os.killpg(victim.pid, signal.SIGKILL)  # the nanny and its worker: a lost node
        killed_at.append(time.monotonic())

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    try:
        result = build(_config(dataset, tmp_path / "s", scheduler=cluster.address))
        finished_at = time.monotonic()
    finally:
        killer.join(timeout=130)
        _stop(victim)
    assert killed_at and killed_at[0] < finished_at, "the worker was not killed during the build"
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert result.version_id == reference.version_id
    assert tree_bytes(result.path) == tree_bytes(reference.path)
    deadline = time.monotonic() + 30
    while cluster.n_workers() != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.n_workers() == 2


@pytest.mark.slow
def test_client_killed_mid_build_resumes_to_identical_bytes(cluster, dataset, reference, tmp_path):
    args = ("build", "audiomnist", str(dataset), "--store", str(tmp_path / "s"), "--scheduler",
            cluster.address, "--clips-per-shard", str(PER_SHARD), "--no-progress", "--json")
    version = tmp_path / "s" / "audiomnist" / reference.version_id
    first = _cli(*args)
    _wait_markers(version, 10, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    lock_file = lock.lock_path(version)
    assert not store.is_sealed(version)
    assert lock.read_holder(lock_file).pid == first.pid  # left behind by the killed client
    again = _cli(*args)
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert f"Took over the lock {lock_file} of a build that is gone: process {first.pid}" in err
    assert "Resuming feature version" in err
    assert json.loads(out)["version_id"] == reference.version_id
    assert tree_bytes(version) == tree_bytes(reference.path)
    assert not lock_file.exists()


@pytest.mark.slow
def test_two_builds_of_one_version_at_once(cluster, dataset, reference, tmp_path):
    version = tmp_path / "s" / "audiomnist" / reference.version_id
    first = _cli("build", "audiomnist", str(dataset), "--store", str(tmp_path / "s"), "--scheduler",
                 cluster.address, "--clips-per-shard", str(PER_SHARD), "--no-progress", "--json")
    try:
        _wait_markers(version, 2, first)
        second = _config(dataset, tmp_path / "s", scheduler=cluster.address)
        lock_file = lock.lock_path(version)
        with pytest.raises(StoreError) as err:
            build(second)
        message = str(err.value)
        assert f"found {lock_file} held by process {first.pid} on host {socket.gethostname()}" in message
        assert "being built by another build" in message and "Let it finish" in message
        assert first.poll() is None, "the first build ended before the second one was refused"
        waiting = build(replace(second, lock_wait_s=180))  # waits, then finds it sealed
        assert waiting.already_sealed and waiting.version_id == reference.version_id
        out, err_text = first.communicate(timeout=180)
        assert first.returncode == 0, err_text
        assert json.loads(out)["version_id"] == reference.version_id
    finally:
        _stop(first)
    assert tree_bytes(version) == tree_bytes(reference.path)
    assert not lock.lock_path(version).exists()


def _can_hide_with_a_mount(path: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs none {path}"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_a_worker_that_cannot_see_the_dataset_is_named_with_the_path(cluster, dataset, tmp_path):
    if not _can_hide_with_a_mount(dataset):
        pytest.skip("needs `unshare -rm` (a mount namespace) to give one worker a different view of the disk")
    # This worker sees an empty directory where the dataset is: a wrong or missing mount.
    blind = cluster.add_worker("blind", prefix=("unshare", "-rm", "sh", "-c",
                                                f'mount -t tmpfs none {dataset} && exec "$0" "$@"'))
    try:
        cluster.wait_for(3)
        blind_addr = next(a for a, w in cluster.client.scheduler_info()["workers"].items() if w["name"] == "blind")
        with pytest.raises(DatasetLayoutError) as err:
            build(_config(dataset, tmp_path / "s", scheduler=cluster.address))
        message = str(err.value)
        first_clip = sorted((dataset / "data").glob("*/*.wav"))[0]
        assert f"worker {blind_addr}: cannot read the source file {first_clip} (No such file or directory)" in message
        assert "1 of 3 worker(s)" in message
        assert not any((tmp_path / "s").rglob("*.json")), "nothing may be written"
    finally:
        _stop(blind)


# --------------------------------------------------------------------------------------------
# The pieces on their own (no cluster)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path: Path, **fields) -> None:
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": "", "since": time.time(),
              "token": "t0", **fields}
    path.write_text(json.dumps(holder))


def test_lock_is_exclusive_and_names_its_holder(tmp_path):
    path = tmp_path / "v.lock"
    with lock.acquire(path) as held:
        assert held.took_over is None
        assert lock.read_holder(path) == held.holder and held.holder.pid == os.getpid()
        with pytest.raises(StoreError, match=rf"found {path} held by process {os.getpid()} on host "):
            lock.acquire(path, what="Feature version v")
    assert not path.exists()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    path = tmp_path / "v.lock"
    dead = _dead_pid()
    _write_lock(path, pid=dead)
    held = lock.acquire(path)
    assert held.took_over is not None and held.took_over.pid == dead
    assert lock.read_holder(path).pid == os.getpid()
    held.release()
    _write_lock(path, pid=os.getpid(), pid_start="1")  # a reused pid: another process started then
    assert lock.acquire(path).took_over.pid == os.getpid()


def test_a_lock_from_another_host_is_not_guessed_at(tmp_path):
    path = tmp_path / "v.lock"
    _write_lock(path, host="node-17", pid=4242)
    with pytest.raises(StoreError, match=rf"process 4242 on host node-17 .* another host.*delete {path}"):
        lock.acquire(path, wait_s=0.2, poll_s=0.05)
    assert lock.read_holder(path).pid == 4242


def test_waiting_for_a_lock_and_releasing_only_ones_own(tmp_path):
    path = tmp_path / "v.lock"
    first = lock.acquire(path)
    threading.Timer(0.3, first.release).start()
    t0 = time.monotonic()
    second = lock.acquire(path, wait_s=30, poll_s=0.05)
    assert 0.2 < time.monotonic() - t0 < 10
    first.release()  # no longer ours: must not remove the second build's lock
    assert lock.read_holder(path).token == second.holder.token
    second.release()
    assert not path.exists()


def test_an_empty_lock_is_stale_only_once_old(tmp_path):
    path = tmp_path / "v.lock"
    path.write_text("")
    with pytest.raises(StoreError, match="has not written its name yet"):
        lock.acquire(path)
    old = time.time() - 2 * lock.UNREADABLE_GRACE_S
    os.utime(path, (old, old))
    lock.acquire(path).release()


def test_store_roots_as_paths_and_file_urls(tmp_path):
    assert local_path(str(tmp_path)) == tmp_path
    assert local_path(f"file://{tmp_path}") == tmp_path
    assert local_path(Path(f"file://{tmp_path}")) == tmp_path  # pathlib folds it to file:/...
    assert local_path(f"file://localhost{tmp_path}/a%20b") == tmp_path / "a b"
    with pytest.raises(StoreError, match=r"Got 's3://bucket/x': s3:// stores are not supported"):
        local_path("s3://bucket/x")
    with pytest.raises(StoreError, match="on host 'nas'"):
        local_path("file://nas/exports/x")


def test_probe_worker_names_the_paths_it_cannot_use(tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"RIFF")
    ok = probe_worker(str(clip), str(tmp_path))
    assert ok["problems"] == [] and ok["pid"] == os.getpid() and not list(tmp_path.glob(".probe-*"))
    bad = probe_worker(str(tmp_path / "missing.wav"), str(tmp_path / "nowhere"))
    assert bad["problems"] == [
        f"cannot read the source file {tmp_path / 'missing.wav'} (No such file or directory)",
        f"cannot create files in the store directory {tmp_path / 'nowhere'} (No such file or directory)",
    ]


def test_leftovers_of_killed_writers_are_removed(tmp_path):
    version = tmp_path / "ds" / "v1"
    (version / "logmel" / "c" / "0" / "0").mkdir(parents=True)
    keep = version / "logmel" / "c" / "0" / "0" / "0"
    keep.write_bytes(b"shard")
    partial = keep.with_name("0.0123abcd.partial")
    partial.write_bytes(b"half")
    tmp_marker = version / ".build.json.tmp-123"
    tmp_marker.write_text("{")
    creating = tmp_path / "ds" / ".v1.creating-99"
    creating.mkdir()
    removed = store.remove_leftovers(version)
    assert sorted(removed) == sorted(map(str, [creating, partial, tmp_marker]))
    assert keep.exists() and not partial.exists() and not tmp_marker.exists() and not creating.exists()


class _FakeClient:
    """Answers check_workers' two calls as a cluster of the given worker reports would."""

    def __init__(self, reports: dict[str, dict]) -> None:
        self.reports = reports

    def scheduler_info(self) -> dict:
        return {"workers": dict.fromkeys(self.reports, {})}

    def run(self, fn, *args) -> dict[str, dict]:
        return self.reports


def test_workers_with_other_libraries_or_code_are_refused(tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"RIFF")
    good = probe_worker(str(clip), str(tmp_path))
    assert good["versions"] == environment() and {"scipy", "feature_code", "feature_format"} <= set(good["versions"])
    old = {**good, "versions": {**good["versions"], "scipy": "1.9.0"}}
    reports = {"tcp://10.0.0.7:40000": old, "tcp://10.0.0.8:40000": good}
    with pytest.raises(StoreError, match=(r"Found differences:\n  worker tcp://10.0.0.7:40000: scipy 1.9.0 "
                                          rf"\(client: {good['versions']['scipy']}\)\nInstall")):
        check_workers(_FakeClient(reports), source_file=clip, store_dir=tmp_path)
    edited = {**good, "versions": {**good["versions"], "feature_code": "0" * 32}}
    with pytest.raises(StoreError, match="worker tcp://10.0.0.7:40000: feature_code 0{32}"):
        check_workers(_FakeClient({"tcp://10.0.0.7:40000": edited}), source_file=clip, store_dir=tmp_path)
    assert check_workers(_FakeClient({"tcp://10.0.0.8:40000": good}), source_file=clip, store_dir=tmp_path)


def test_a_local_cluster_that_cannot_start_is_one_line_naming_the_loopback(monkeypatch):
    """No loopback (a fresh network namespace) made LocalCluster time out with a chained traceback."""
    import distributed

    from siamese_audio.cluster import dask_client
    from siamese_audio.errors import SiameseAudioError

    def refuse(*args, **kwargs):
        raise RuntimeError("Cluster failed to start: Timed out trying to connect to tcp://127.0.0.1:43485 after 30 s")

    monkeypatch.setattr(distributed, "LocalCluster", refuse)
    with pytest.raises(SiameseAudioError) as err, dask_client(workers=1):
        pass
    message = str(err.value)
    assert "\n" not in message and "loopback" in message and "Timed out" in message and "--scheduler" in message

"""Issue 14: the client reads no audio, the workers hash the sources (BLAKE3), the hash cache.

The cache is keyed by (path, size, mtime_ns, inode, device): a file whose stat changed is hashed
again, a corrupt cache is ignored, ``--rehash`` reads everything, and the version id is a function
of the bytes only (the same files under new mtimes give the same id).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import blake3
import pytest

from siamese_audio.features import store
from siamese_audio.features.fingerprint import SOURCE_HASH
from siamese_audio.features.store import open_version
from siamese_audio.files import content_hash
from siamese_audio.manifests.dummies import make_esc50
from siamese_audio.manifests.sources import FileStat
from siamese_audio.pipeline import hashcache
from siamese_audio.pipeline.hashcache import HashCache, cache_path
from siamese_audio.pipeline.hashing import hash_batch
from tests.hostile import cli


def age(root: Path, seconds: float = 3600) -> None:
    """Set every file's mtime ``seconds`` in the past (files written just now are too fresh to cache)."""
    when = time.time() - seconds
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (when, when))


def audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.wav"))


def hashed(result) -> tuple[int, int]:
    """(files taken from the cache, files hashed by the workers) of a build."""
    h = result.timing["hash"]
    return h["cached"], h["hashed"]


@pytest.fixture
def tool_logs(caplog, monkeypatch):
    """The tool's warnings in ``caplog`` (the console script's set-up stops them propagating)."""
    monkeypatch.setattr(logging.getLogger("siamese_audio"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="siamese_audio")
    return caplog


@pytest.fixture
def aged_audiomnist(audiomnist_dir):
    age(audiomnist_dir)
    return audiomnist_dir


# --------------------------------------------------------------------------------------------
# The client never reads the audio


class _AudioOpens:
    """Counts opens of the dataset's audio files in this process (Python's audit events)."""

    def __init__(self) -> None:
        self.watched: set[str] = set()
        self.opened: list[str] = []
        self.active = False

    def __call__(self, event: str, args: tuple) -> None:
        if self.active and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if path in self.watched or os.path.realpath(path) in self.watched:
                self.opened.append(path)


_OPENS = _AudioOpens()
sys.addaudithook(_OPENS)  # audit hooks cannot be removed: this one only records while a test activates it


def _bytes_read() -> int:
    """``rchar`` of this process: every byte it read through read(2) and friends, sockets included."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").is_file(), reason="needs Linux's /proc/self/io")
def test_the_client_reads_no_audio_byte(tmp_path, run_build, monkeypatch):
    """The client (this process; the workers are other processes) neither opens nor reads an audio file."""
    import soundfile

    warm = make_esc50(tmp_path / "warm", classes=("dog",), clips_per_class=2, seconds=1.0)
    run_build("esc50", warm, tmp_path / "s")  # imports and first-use costs of this process, before counting
    src = make_esc50(tmp_path / "esc50", classes=("dog", "rain", "siren", "wind"), clips_per_class=5,
                     seconds=5.0)
    files = audio_files(src)
    total = sum(p.stat().st_size for p in files)
    assert total > 5_000_000
    _OPENS.watched = {str(p) for p in files} | {os.path.realpath(p) for p in files}

    def refuse(*args, **kwargs):
        raise AssertionError("the client decoded audio")

    monkeypatch.setattr(soundfile, "SoundFile", refuse)
    monkeypatch.setattr(soundfile, "read", refuse)
    monkeypatch.setattr(soundfile, "info", refuse)
    before = _bytes_read()
    _OPENS.active = True
    try:
        result = run_build("esc50", src, tmp_path / "s")
    finally:
        _OPENS.active = False
    read = _bytes_read() - before
    assert result.n_stored == 20 and hashed(result) == (0, 20)
    assert _OPENS.opened == []
    # Metadata, markers, the catalog and task results are read; the audio (over 5 MB) is not.
    assert read < total / 4, f"the client read {read} bytes; the audio is {total}"
    catalog = open_version(result.path).catalog.set_index("clip_id")
    for p in files[:3]:  # the workers' hashes are BLAKE3 of the files' bytes
        assert catalog.loc[p.stem, "source_hash"] == blake3.blake3(p.read_bytes()).hexdigest()
        assert catalog.loc[p.stem, "source_hash_algorithm"] == SOURCE_HASH == "blake3"


def test_hash_tasks_name_unreadable_files_and_refuse_a_fifo_without_blocking(tmp_path):
    good = tmp_path / "a.wav"
    good.write_bytes(b"RIFF" + bytes(5000))
    os.mkfifo(tmp_path / "pipe.wav")
    out: list = []
    worker = threading.Thread(target=lambda: out.extend(hash_batch(
        (str(good), str(tmp_path / "pipe.wav"), str(tmp_path / "gone.wav")), "blake3")), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "hashing a FIFO blocked"
    (digest, size, mtime_ns, reason), fifo, gone = out
    assert digest == blake3.blake3(good.read_bytes()).hexdigest() == content_hash(good, "blake3")
    assert (size, mtime_ns, reason) == (5004, good.stat().st_mtime_ns, "")
    assert fifo[0] is None and fifo[3] == f"{tmp_path / 'pipe.wav'}: cannot read the file (not a regular file)"
    assert gone[0] is None and "gone.wav: cannot read the file (No such file or directory)" in gone[3]


# --------------------------------------------------------------------------------------------
# The hash cache in builds


def test_a_rebuild_of_unchanged_files_reads_none_and_starts_no_cluster(aged_audiomnist, tmp_path, run_build):
    from siamese_audio.pipeline.build import BuildConfig, build

    first = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    assert hashed(first) == (0, 12) and first.timing["hash"]["cache_written"]
    assert cache_path(tmp_path / "s", aged_audiomnist).is_file()
    # Nothing answers at this address: a rebuild that needed a worker would fail to connect.
    again = build(BuildConfig(dataset="audiomnist", source_dir=aged_audiomnist, store_root=tmp_path / "s",
                              scheduler="tcp://127.0.0.1:9", progress=False,
                              layout=store.StoreLayout(clips_per_shard=4)))
    assert again.already_sealed and again.version_id == first.version_id
    assert hashed(again) == (12, 0)


def test_a_changed_file_is_hashed_again_and_changes_the_id(aged_audiomnist, tmp_path, run_build):
    first = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    victim = aged_audiomnist / "data" / "01" / "0_01_0.wav"
    data = bytearray(victim.read_bytes())
    data[-2] ^= 0x01  # the same size: only the mtime tells (and the bytes)
    victim.write_bytes(bytes(data))
    second = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    assert hashed(second) == (11, 1)
    assert second.version_id != first.version_id and not second.already_sealed
    catalog = open_version(second.path).catalog.set_index("clip_id")
    assert catalog.loc["0_01_0", "source_hash"] == content_hash(victim, "blake3")


def test_a_touched_but_equal_file_is_hashed_again_and_keeps_the_id(aged_audiomnist, tmp_path, run_build):
    first = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    victim = aged_audiomnist / "data" / "03" / "1_03_1.wav"
    os.utime(victim, (time.time() - 60, time.time() - 60))  # new mtime, same bytes
    second = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    assert hashed(second) == (11, 1)
    assert second.already_sealed and second.version_id == first.version_id
    third = run_build("audiomnist", aged_audiomnist, tmp_path / "s")  # the new stat is cached now
    assert hashed(third) == (12, 0)


def test_the_version_id_is_a_function_of_content_not_of_mtimes_or_places(aged_audiomnist, tmp_path, run_build):
    import shutil

    first = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    copy = tmp_path / "copy"
    shutil.copytree(aged_audiomnist, copy)  # new inodes, new mtimes
    age(copy, seconds=7200)
    moved = run_build("audiomnist", copy, tmp_path / "s")
    assert hashed(moved) == (0, 12)  # another dataset directory: its own cache, empty
    assert moved.already_sealed and moved.version_id == first.version_id
    age(aged_audiomnist, seconds=100)  # every mtime changes
    touched = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    assert hashed(touched) == (0, 12) and touched.version_id == first.version_id


def test_a_corrupt_cache_is_ignored_and_rewritten(aged_audiomnist, tmp_path, run_build, tool_logs):
    first = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    path = cache_path(tmp_path / "s", aged_audiomnist)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01  # one hash digit (or a bracket) changed: the checksum tells
    path.write_bytes(bytes(data))
    second = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    assert hashed(second) == (0, 12) and second.version_id == first.version_id
    assert "hash cache ignored (its checksum does not match its content)" in tool_logs.text
    assert HashCache.load(tmp_path / "s", aged_audiomnist, SOURCE_HASH).entries  # rewritten, valid again
    path.write_bytes(b"\x00garbage")
    third = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    assert hashed(third) == (0, 12) and third.version_id == first.version_id


def test_rehash_reads_every_file_even_when_a_tool_kept_size_and_mtime(aged_audiomnist, tmp_path, run_build,
                                                                      capsys):
    """What defeats the cache (documented): bytes rewritten in place with the old size and mtime restored."""
    first = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    victim = aged_audiomnist / "data" / "02" / "0_02_1.wav"
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[-2] ^= 0x01
    with open(victim, "r+b") as f:  # in place: same inode
        f.write(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    stale = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    assert stale.already_sealed and stale.version_id == first.version_id  # the cache was trusted
    args = ["build", "audiomnist", str(aged_audiomnist), "--store", str(tmp_path / "s"), "--workers", "1",
            "--clips-per-shard", "4", "--no-progress", "--json"]
    code, out, err = cli(capsys, *args, "--rehash")
    assert code == 0, err
    fresh = json.loads(out)
    assert fresh["timing"]["hash"]["hashed"] == 12 and fresh["timing"]["hash"]["cached"] == 0
    assert fresh["version_id"] != first.version_id and not fresh["already_sealed"]
    code, out, err = cli(capsys, *args)  # the cache now holds the new hash
    assert json.loads(out)["version_id"] == fresh["version_id"] and json.loads(out)["already_sealed"]


def test_repair_hashes_every_source_again(aged_audiomnist, tmp_path, run_build):
    first = run_build("audiomnist", aged_audiomnist, tmp_path / "s")
    store.shard_path(first.path, 1).chmod(0o644)
    store.shard_path(first.path, 1).unlink()
    repaired = run_build("audiomnist", aged_audiomnist, tmp_path / "s", repair=True)
    assert hashed(repaired) == (0, 12) and repaired.repaired == ["logmel/c/1/0/0: missing"]


# --------------------------------------------------------------------------------------------
# The cache file on its own


def _stat(size=10, mtime_ns=10**18, inode=5, device=7) -> FileStat:
    return FileStat(size, mtime_ns, inode, device)


def test_cache_round_trip_and_keys(tmp_path):
    cache = HashCache.load(tmp_path / "store", tmp_path / "data", "blake3")
    assert cache.entries == {} and cache.lookup("a.wav", _stat()) is None
    assert cache.save({"a.wav": (_stat(), "aa"), "b/c.wav": (_stat(size=3), "bb")}, listed_at_ns=2 * 10**18)
    again = HashCache.load(tmp_path / "store", tmp_path / "data", "blake3")
    assert again.lookup("a.wav", _stat()) == "aa" and again.lookup("b/c.wav", _stat(size=3)) == "bb"
    for changed in (_stat(size=11), _stat(mtime_ns=10**18 + 1), _stat(inode=6), _stat(device=8)):
        assert again.lookup("a.wav", changed) is None
    assert not again.save({"a.wav": (_stat(), "aa"), "b/c.wav": (_stat(size=3), "bb")},
                          listed_at_ns=2 * 10**18)  # nothing new: not written
    other_root = HashCache.load(tmp_path / "store", tmp_path / "other", "blake3")
    assert other_root.entries == {}
    other_algorithm = HashCache.load(tmp_path / "store", tmp_path / "data", "sha256")
    assert other_algorithm.entries == {}
    unused = HashCache.load(tmp_path / "store", tmp_path / "data", "blake3", use=False)
    assert unused.entries == {}


def test_files_modified_just_before_their_listing_are_not_cached(tmp_path):
    cache = HashCache.load(tmp_path / "store", tmp_path / "data", "blake3")
    now = 5 * 10**18
    cache.save({"old.wav": (_stat(mtime_ns=now - 10**10), "o"),
                "racy.wav": (_stat(mtime_ns=now - int(hashcache.RACY_S * 1e9) + 1), "r")}, listed_at_ns=now)
    assert set(HashCache.load(tmp_path / "store", tmp_path / "data", "blake3").entries) == {"old.wav"}


@pytest.mark.parametrize("damage", ["truncate", "header", "count", "entry", "not json"])
def test_a_damaged_cache_file_is_ignored_whole(tmp_path, damage, tool_logs):
    cache = HashCache.load(tmp_path / "store", tmp_path / "data", "blake3")
    cache.save({"a.wav": (_stat(), "aa"), "b.wav": (_stat(), "bb")}, listed_at_ns=2 * 10**18)
    path = cache.path
    head, body = path.read_bytes().split(b"\n", 1)
    header = json.loads(head)
    if damage == "truncate":
        path.write_bytes(head + b"\n" + body[:-5])
    elif damage == "header":
        path.write_bytes(json.dumps({**header, "version": 99}).encode() + b"\n" + body)
    elif damage == "count":
        path.write_bytes(json.dumps({**header, "entries": 3}).encode() + b"\n" + body)
    elif damage == "entry":  # a well-formed checksum over a malformed entry
        import hashlib

        bad = b'[["a.wav",10,"x",5,7,"aa"]]'
        path.write_bytes(json.dumps({**header, "entries": 1, "body_blake2b": hashlib.blake2b(bad).hexdigest()})
                         .encode() + b"\n" + bad)
    else:
        path.write_bytes(b"{not json\n[]")
    assert HashCache.load(tmp_path / "store", tmp_path / "data", "blake3").entries == {}
    assert "hash cache ignored" in tool_logs.text


def test_an_unwritable_cache_is_a_warning_not_a_failure(tmp_path, tool_logs):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / hashcache.CACHE_DIR).write_text("a file where the folder should be")
    cache = HashCache.load(tmp_path / "store", tmp_path / "data", "blake3")
    assert not cache.save({"a.wav": (_stat(), "aa")}, listed_at_ns=2 * 10**18)
    assert "cannot write the hash cache" in tool_logs.text

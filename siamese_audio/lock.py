"""Locks: one build at a time per feature version, one command at a time per output folder.

A build claims ``STORE/DATASET/VERSION_ID.lock`` (next to the version directory)
by creating it with ``O_CREAT | O_EXCL``, which is atomic on local filesystems and
on NFSv3+; the file holds who claimed it (host, pid, process start time, when).
Another build of the same version waits for it (``wait_s``) or stops with a
:class:`~siamese_audio.errors.StoreError` naming the lock file and its holder.

A lock left by a killed build (``SIGKILL``, a crashed node) is *stale*. It is
taken over automatically when its holder ran on this host and that process is
gone (or its pid now belongs to another process). A lock from another host
cannot be checked from here: the message says which process to look for and
which file to delete.

The same lock guards every output folder (a run, a study, a report, explanations):
:func:`hold_directory` claims ``FOLDER/.lock`` before a command writes there, and a
second command into that folder stops at once naming the holder. A lock path that
is not a regular file (a FIFO, a link to a device) is refused, never read.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from siamese_audio.errors import StoreError
from siamese_audio.files import KIB, file_kind, read_regular

#: The lock file of an output folder (:func:`hold_directory`).
DIRECTORY_LOCK = ".lock"
#: A lock file holds one JSON line of about 150 bytes.
MAX_LOCK_BYTES = 64 * KIB

# An empty or unreadable lock older than this was left by a process killed while writing it.
UNREADABLE_GRACE_S = 10.0


@dataclass(frozen=True)
class LockHolder:
    """Who holds a build lock (the lock file's JSON content)."""

    host: str
    pid: int
    pid_start: str  # the process's start time in clock ticks (Linux /proc), "" when unknown
    since: float  # time.time() when the lock was claimed
    token: str  # unique per claim: tells our own lock from a later one

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"process {self.pid} on host {self.host} (since {when})"


def lock_path(version_path: str | os.PathLike[str]) -> Path:
    """The lock file of a feature version: ``VERSION_DIR.lock`` beside the directory."""
    version_path = Path(version_path)
    return version_path.with_name(f"{version_path.name}.lock")


def _process_start(pid: int) -> str:
    """Start time of ``pid`` (field 22 of /proc/PID/stat), "" where /proc is absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def holder_is_alive(holder: LockHolder) -> bool | None:
    """Whether the holder process still runs: ``None`` when it is on another host."""
    if holder.host != socket.gethostname():
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    if _process_state(holder.pid) in ("Z", "X"):
        return False  # killed, not yet reaped
    start = _process_start(holder.pid)
    if holder.pid_start and start and start != holder.pid_start:
        return False  # the pid was reused by another process
    return True


def read_holder(path: Path) -> LockHolder | None:
    """The lock's holder, or ``None`` when the file is absent, empty or damaged."""
    try:
        data = json.loads(read_regular(path, max_bytes=MAX_LOCK_BYTES, what="lock file"))
        return LockHolder(host=str(data["host"]), pid=int(data["pid"]), pid_start=str(data["pid_start"]),
                          since=float(data["since"]), token=str(data["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class BuildLock:
    """A claimed build lock; release it with :meth:`release` or as a context manager."""

    def __init__(self, path: Path, holder: LockHolder, took_over: LockHolder | None) -> None:
        self.path = path
        self.holder = holder
        self.took_over = took_over  # the stale holder this claim replaced, if any
        self.created_folder: Path | None = None  # removed on release when still empty (hold_directory)

    def release(self) -> None:
        """Delete the lock file if it is still ours (and the folder it created, if left empty)."""
        current = read_holder(self.path)
        if current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)
        if self.created_folder is not None:
            try:
                self.created_folder.rmdir()
            except OSError:
                pass  # not empty: the command wrote its outputs

    def __enter__(self) -> BuildLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_create(path: Path) -> LockHolder | None:
    holder = LockHolder(host=socket.gethostname(), pid=os.getpid(), pid_start=_process_start(os.getpid()),
                        since=time.time(), token=uuid.uuid4().hex)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(fd, (json.dumps(asdict(holder), sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return holder


def _break_stale(path: Path, stale: LockHolder | None) -> bool:
    """Delete the lock if it still is ``stale``; one breaker at a time (its own O_EXCL file)."""
    breaker = path.with_name(path.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - breaker.stat().st_mtime > 2 * UNREADABLE_GRACE_S:
                breaker.unlink(missing_ok=True)  # its owner was killed while breaking
        except FileNotFoundError:
            pass
        return False
    os.close(fd)
    try:
        current = read_holder(path)
        if (current is None and stale is None) or (current and stale and current.token == stale.token):
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        breaker.unlink(missing_ok=True)


def acquire(path: str | os.PathLike[str], *, wait_s: float = 0.0, poll_s: float = 0.5,
            what: str = "this feature version") -> BuildLock:
    """Claim the lock file ``path``; take over a stale one; wait up to ``wait_s`` for a live one.

    Raises
    ------
    StoreError
        The lock is still held after ``wait_s`` seconds; the message names the
        lock file and its holder.
    """
    path = Path(path)
    deadline = time.monotonic() + max(0.0, wait_s)
    unreadable_until = time.monotonic() + 2.0  # empty only while written; stale only while broken
    taken_over: LockHolder | None = None
    while True:
        mine = _try_create(path)
        if mine is not None:
            return BuildLock(path, mine, taken_over)
        _refuse_odd(path, what)
        holder = read_holder(path)
        if holder is None:
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: try again at once
            if age > UNREADABLE_GRACE_S and _break_stale(path, None):
                continue
            if time.monotonic() < unreadable_until:
                time.sleep(0.05)
                continue
        elif holder_is_alive(holder) is False:
            if _break_stale(path, holder):
                taken_over = holder
                continue
            if time.monotonic() < unreadable_until:
                time.sleep(0.05)  # another build is taking it over right now
                continue
        if time.monotonic() >= deadline:
            raise StoreError(_busy_message(path, holder, what, wait_s))
        time.sleep(poll_s)


def _refuse_odd(path: Path, what: str) -> None:
    """A lock path that is not a regular file (a FIFO, a link, a device) is no lock of ours: refuse it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise StoreError(f"{what}: expected its lock {path} to be a regular file written by a siamese-audio "
                         f"command; it is {file_kind(mode)}. Nothing was read or written; delete it if no "
                         "command of yours is running, then run the command again.")


class FolderBusyError(StoreError):
    """An output folder is held by another command (the message names it)."""


def hold_directory(directory: str | os.PathLike[str], *, what: str, error: type[Exception] = FolderBusyError
                   ) -> BuildLock:
    """Claim ``DIRECTORY/.lock`` for one command writing there; created folders are removed if left empty.

    Stops at once (no waiting) when another live command holds it; a lock left by a command that is
    gone on this host is taken over, as the build's is.

    Raises
    ------
    error
        One line naming the folder, the lock and its holder.
    """
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DIRECTORY_LOCK
    try:
        held = acquire(path, what=what)
    except StoreError as exc:
        if created:
            try:
                directory.rmdir()
            except OSError:
                pass
        holder = read_holder(path)
        if holder is None and "expected its lock" in str(exc):
            raise error(str(exc)) from None
        alive = holder_is_alive(holder) if holder else True
        advice = ("it runs on another host, so it cannot be checked from here: if it is gone, delete the lock "
                  "and run the command again" if alive is None else "let it finish, or choose another folder")
        who = holder.describe() if holder else "a process that has not written its name yet"
        raise error(f"{what} is in use by another command: {path} is held by {who}; {advice}. "
                    "Nothing was written.") from None
    held.created_folder = directory if created else None
    return held


def _busy_message(path: Path, holder: LockHolder | None, what: str, wait_s: float) -> str:
    who = holder.describe() if holder else "a process that has not written its name yet"
    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
    alive = holder_is_alive(holder) if holder else True
    if alive is None:
        advice = (f"That process runs on another host, so it cannot be checked from here: if it is gone, "
                  f"delete {path} and build again to resume")
    elif alive:
        advice = "Let it finish (building again then finds the version sealed and does nothing)"
    else:
        advice = "That process is gone and another build is taking the lock over; build again to resume"
    return (f"{what} is being built by another build{waited}: expected no lock, found {path} "
            f"held by {who}. {advice}.")

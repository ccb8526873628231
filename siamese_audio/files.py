"""File helpers every stage shares: content hashes and the one way to write a file atomically.

Every file the tool writes (store shards, markers, catalog and seal, split
manifests, checkpoints, metrics, reports, figures) goes through
:func:`write_atomic`: a temporary file in the same folder, fsync, rename. A
reader, or a process killed mid-write, never sees half a file.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

#: Hash algorithms :func:`content_hash` knows. SHA-256 where people compare with published
#: checksums (downloads) and in seals; BLAKE3 (several times faster, also cryptographic) for the
#: content ids of source files, computed by the feature build's workers.
HASH_ALGORITHMS = ("sha256", "blake3")
_CHUNK = 1 << 20

#: Files that make a folder a feature version (``features.layout``'s ``PLAN`` and ``SEAL``): the
#: plan is written first, so a version being built is recognised as well as a sealed one.
VERSION_MARKERS = ("build.json", "SEAL.json")

#: Upper sizes of the side files the tool reads whole (a lock, a seal, a plan, a hash cache ...).
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


def _hasher(algorithm: str):
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "blake3":
        from blake3 import blake3

        return blake3(max_threads=1)  # one thread: a Dask worker process per core already
    raise ValueError(f"Expected a hash algorithm among {HASH_ALGORITHMS}. Got {algorithm!r}.")


def content_hash(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hash of a regular file's bytes, hex: SHA-256 (seals, downloads) or BLAKE3 (source content ids).

    Raises
    ------
    OSError
        Unreadable, or not a regular file: a FIFO or a device is refused without
        blocking (opened non-blocking, checked with ``fstat`` before any read).
    """
    return hash_file(path, algorithm)[0]


def hash_file(path: str | os.PathLike[str], algorithm: str) -> tuple[str, os.stat_result]:
    """:func:`content_hash` and the ``fstat`` of the file as it was opened (size, mtime of what was hashed)."""
    h = _hasher(algorithm)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest(), st


def read_regular(path: str | os.PathLike[str], *, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, read without blocking on anything else.

    The file is opened non-blocking and checked with ``fstat`` before any read: a FIFO, a device
    (a symlink to ``/dev/zero``), a socket or a folder is refused at once, and so is a file larger
    than ``max_bytes`` (a file that grows while read is cut at ``max_bytes + 1`` and refused).

    Raises
    ------
    FileNotFoundError
        The file is absent.
    OSError
        Not a regular file (``EINVAL``), too large (``EFBIG``) or unreadable; ``strerror`` says which.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        check_regular_stat(st, path, max_bytes=max_bytes, what=what)
        data = f.read(max_bytes + 1)
        while len(data) <= max_bytes and (more := f.read(max_bytes + 1 - len(data))):
            data += more
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"{what} grew past {max_bytes:,} bytes while read", os.fspath(path))
    return data


def check_regular_stat(st: os.stat_result, path: str | os.PathLike[str], *, max_bytes: int,
                       what: str = "file") -> None:
    """Refuse (``OSError``) what is not a regular file of at most ``max_bytes``; see :func:`read_regular`."""
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, f"expected the {what} to be a regular file; it is {file_kind(st.st_mode)}",
                      os.fspath(path))
    if st.st_size > max_bytes:
        raise OSError(errno.EFBIG, f"expected the {what} to hold at most {max_bytes:,} bytes; it holds "
                      f"{st.st_size:,}", os.fspath(path))


def check_regular(path: str | os.PathLike[str], *, max_bytes: int, what: str = "file") -> os.stat_result:
    """``stat`` ``path`` (following links) and refuse what :func:`read_regular` would refuse; no open."""
    st = os.stat(path)
    check_regular_stat(st, path, max_bytes=max_bytes, what=what)
    return st


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words: 'a FIFO', 'a character device' ..."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def version_containing(path: str | os.PathLike[str]) -> Path | None:
    """The feature version folder that ``path`` lies in (or is), sealed or being built; None if none.

    A version is a folder holding one of :data:`VERSION_MARKERS`. Both the path as written and the
    path with its links resolved are checked, so a link into a version is seen too. ``path`` need
    not exist.
    """
    seen: set[str] = set()
    for candidate in (os.path.realpath(os.fspath(path)), os.path.abspath(os.fspath(path))):
        current = Path(candidate)
        for folder in (current, *current.parents):
            if str(folder) in seen:
                continue
            seen.add(str(folder))
            try:
                if any((folder / marker).is_file() for marker in VERSION_MARKERS):
                    return folder
            except OSError:
                continue
    return None


def refuse_inside_version(path: str | os.PathLike[str], *, option: str, error: type[Exception]) -> None:
    """Raise ``error`` (one line naming the version) when ``path`` lies inside a feature version.

    Every command that writes calls this on its output before any work: only the build writes
    into a version, and a file added to one (even unsealed) makes every reader refuse it.
    """
    version = version_containing(path)
    if version is None:
        return
    sealed = "sealed" if (version / VERSION_MARKERS[1]).is_file() else "being built"
    raise error(f"{option} {shorten(os.fspath(path))}: expected a place outside the feature stores. It is inside "
                f"feature version {shorten(str(version))} ({sealed}), whose files only its build writes; "
                "nothing was written. Choose a folder outside the store.")


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was: for messages that echo input."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def first_names(names: Any, limit: int = 5, *, width: int = 80) -> str:
    """'N: a, b, c and K more' for a message: the count and the first ``limit`` names, each shortened."""
    names = [str(n) for n in names]
    head = ", ".join(repr(shorten(n, width)) for n in names[:limit])
    more = f" and {len(names) - limit:,} more" if len(names) > limit else ""
    return f"{len(names):,} ({head}{more})"


#: First characters that make a spreadsheet read a CSV cell as a formula (CSV injection).
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, made inert with a leading quote; others as they are."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(frame: Any, **to_csv_kwargs: Any) -> str:
    """``frame.to_csv(...)`` (a pandas DataFrame) with every text cell, index label and header through :func:`csv_cell`."""
    safe = frame.map(csv_cell)
    safe.index = safe.index.map(csv_cell)
    safe.columns = safe.columns.map(csv_cell)
    return safe.to_csv(**to_csv_kwargs)


def probe_writable(directory: str | os.PathLike[str]) -> str | None:
    """Create and remove a file named after this host and process in ``directory``.

    Returns ``None`` when that works, else the operating system's reason (for a message that names
    the directory). Used to check, on each worker of a cluster, that a shared directory is writable.
    """
    probe = Path(directory) / f".probe-{os.uname().nodename}-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then rename.

    The temporary name (``.NAME.tmp-XXXXXXXX``) is unique across processes and
    hosts sharing the folder (``O_EXCL``), and the file gets ordinary
    permissions (not mkstemp's 0600).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-", suffix="")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """:func:`write_atomic` of ``text`` in UTF-8."""
    write_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """:func:`write_atomic` of ``obj`` as sorted, indented JSON (byte-deterministic)."""
    write_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig_kwargs: Any) -> Path:
    """Render a matplotlib figure as PNG in memory and :func:`write_atomic` it; close the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", **savefig_kwargs)
    finally:
        plt.close(fig)
    write_atomic(path, buffer.getvalue())
    return Path(path)


def write_parquet_atomic(path: str | os.PathLike[str], table: Any, **write_table_kwargs: Any) -> None:
    """Encode a pyarrow table as Parquet in memory and :func:`write_atomic` it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **write_table_kwargs)
    write_atomic(path, sink.getvalue().to_pybytes())

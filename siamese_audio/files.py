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

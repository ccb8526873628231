"""File helpers every stage shares: content hashes and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, hex (source fingerprints, seals, downloads)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then rename.

    A reader (or a process killed mid-write) never sees half a file. The
    temporary name is unique across processes and hosts sharing the folder, and
    the file gets ordinary permissions (not mkstemp's 0600).
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


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """:func:`write_atomic` of ``obj`` as sorted, indented JSON (byte-deterministic)."""
    write_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())

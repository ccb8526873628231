"""The one output rule of every subcommand: ``--json`` prints exactly one JSON line on stdout."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from siamese_audio.errors import SiameseAudioError


def emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    """Print the result: one JSON line (sorted keys) with ``--json``, else ``text``."""
    if as_json:
        print(json.dumps(payload, sort_keys=True, default=str))
    else:
        print(text)


def check_out_dir(path: str | os.PathLike[str], *, option: str, error: type[SiameseAudioError]) -> Path:
    """The folder a command writes into, checked before the work: created if missing, and writable.

    Raises
    ------
    error
        One line naming the folder and the option: a file, or a place where nothing can be
        created (``/proc``, a read-only or full filesystem, missing permissions).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{option} {path}: expected a folder for the outputs. It is a file.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{option} {path}: expected a folder where the outputs can be written. "
                    f"Cannot ({exc.strerror or exc}).") from None
    return path

"""The one output rule of every subcommand: ``--json`` prints exactly one JSON line on stdout."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from siamese_audio.errors import SiameseAudioError
from siamese_audio.files import refuse_inside_version


def emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    """Print the result: one JSON line (sorted keys) with ``--json``, else ``text``."""
    if as_json:
        print(json.dumps(payload, sort_keys=True, default=str))
    else:
        print(text)


def check_out_dir(path: str | os.PathLike[str], *, option: str, error: type[SiameseAudioError]) -> Path:
    """The folder a command writes into, checked before the work and left as it is.

    It must be a folder or not exist yet; the nearest folder that exists must let this process
    create entries (a probe folder is made and removed there). Nothing is created, so a command
    refused later leaves no empty output folder behind.

    Raises
    ------
    error
        One line naming the folder and the option: a place inside a feature version, a file, or
        a place where nothing can be created (``/proc``, a read-only or full filesystem, missing permissions).
    """
    path = Path(path)
    refuse_inside_version(path, option=option, error=error)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "It is a file." if existing == path else f"{existing} is a file."
        raise error(f"{option} {path}: expected a folder for the outputs. {what}")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".probe-"))
    except OSError as exc:
        raise error(f"{option} {path}: expected a folder where the outputs can be written. "
                    f"Cannot create anything in {existing} ({exc.strerror or exc}).") from None
    return path

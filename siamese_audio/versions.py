"""Library versions, collected one way for every record that carries them.

The feature version id, the worker check of a cluster build, checkpoints and
evaluation reports all say which versions computed them; they call
:func:`library_versions` with the names that matter to them.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

PACKAGE = "siamese-audio"


def package_version() -> str:
    """This tool's installed version (``"unknown"`` when run from a tree that is not installed)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def library_versions(names: Iterable[str], *, python: bool = False) -> dict[str, str]:
    """Installed versions of the distributions ``names`` (``"absent"`` when not installed).

    ``"libsndfile"`` is the C library under soundfile (read from soundfile);
    ``python=True`` adds the interpreter's version.
    """
    versions: dict[str, str] = {}
    if python:
        versions["python"] = platform.python_version()
    for name in names:
        if name == "libsndfile":
            try:
                import soundfile

                versions[name] = str(soundfile.__libsndfile_version__)
            except (ImportError, OSError):
                versions[name] = "absent"
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions

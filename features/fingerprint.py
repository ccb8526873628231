"""The feature version id: a fingerprint of everything that determines the bytes."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

# Modules whose source determines the stored bytes: editing one makes a new version.
_CODE_FILES = ("transform.py", "mel.py", "audio.py", "store.py", "config.py")
_LIBRARIES = ("numpy", "scipy", "librosa", "soundfile", "zarr", "numcodecs", "pyarrow")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that compute or encode the features (and libsndfile)."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    import soundfile

    versions["libsndfile"] = soundfile.__libsndfile_version__
    return versions


def code_version() -> dict[str, str]:
    """The package version and a hash of the feature code's sources."""
    try:
        version = metadata.version("siamese-audio")
    except metadata.PackageNotFoundError:
        version = "unknown"
    here = Path(__file__).parent
    h = hashlib.blake2b(digest_size=16)
    for name in _CODE_FILES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return {"siamese_audio": version, "feature_code": h.hexdigest()}


def version_id(
    *,
    dataset: str,
    sources: Iterable[tuple[str, str, str]],
    feature_config: dict[str, Any],
    layout: dict[str, Any],
    seed: int,
    crop_long: bool,
) -> tuple[str, dict[str, Any]]:
    """Fingerprint of a feature version.

    Parameters
    ----------
    sources : iterable of (clip_id, source_path, content_hash)
        Every clip that will be decoded, in any order (sorted here).

    Returns
    -------
    version_id : str
        20 hex characters.
    inputs : dict
        What went into it, without the per-file list (stored with the version).
    """
    inputs = {
        "dataset": dataset,
        "feature_config": feature_config,
        "layout": layout,
        "seed": int(seed),
        "crop_long": bool(crop_long),
        "code": code_version(),
        "libraries": library_versions(),
    }
    h = hashlib.blake2b(digest_size=10)
    h.update(json.dumps(inputs, sort_keys=True).encode())
    for clip_id, path, digest in sorted(sources):
        h.update(f"\n{clip_id}\t{path}\t{digest}".encode())
    return h.hexdigest(), inputs

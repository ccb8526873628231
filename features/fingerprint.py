"""The feature version id: a fingerprint of everything that determines the stored bytes.

What it covers, and nothing else:

- the source files' content hashes (:data:`SOURCE_HASH`, with their clip ids and relative paths):
  the bytes, never their names' timestamps, so the same files under new mtimes keep the id;
- the feature config, the store layout, the pad seed and the crop flag;
- :data:`FEATURE_FORMAT_VERSION`, which stands for the code that turns those
  inputs into bytes (everything under ``features/``: decoding, resampling,
  padding and cropping decisions, the log-mel, the shard encoding, the
  catalog, plan and marker records);
- the versions of the libraries that compute or encode the bytes
  (:data:`BYTE_LIBRARIES`).

The code itself is not hashed, so a docstring edit keeps the id. Instead
``tests/test_fingerprint.py`` builds fixed generated inputs and compares the
SHA-256 of the stored arrays and records with values recorded for the current
format version: a change in the bytes fails CI until the format version is
bumped and the new values are recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from siamese_audio.versions import library_versions

#: Bump whenever the same inputs would give other stored bytes (and record the golden values).
#: 1: the store as first released (before format versions, ids hashed some feature sources).
#: 2: clips that 1 stored (or crashed on) are rejected, with their reason in the catalog: a log-mel
#:    that is not finite, a header whose rate, channels or length is out of bounds, a file that is
#:    not regular, a name with control characters or not UTF-8, a number past int64 (issue 15).
#: 3: source content ids are BLAKE3 (were SHA-256), and the catalog says so in a new column,
#:    ``source_hash_algorithm``; the build plan records it too (issue 14).
FEATURE_FORMAT_VERSION = 3

#: The hash of the source files' bytes that the version id and the catalog carry (``source_hash``).
SOURCE_HASH = "blake3"

#: Libraries whose versions can change the stored bytes (librosa is no longer one: the
#: runtime computes its log-mel in NumPy and scipy.fft).
BYTE_LIBRARIES = ("numpy", "scipy", "soundfile", "libsndfile", "zarr", "numcodecs", "pyarrow")


def byte_library_versions() -> dict[str, str]:
    """Versions of :data:`BYTE_LIBRARIES` in this process."""
    return library_versions(BYTE_LIBRARIES)


def code_digest() -> str:
    """Hash of the feature code's sources (``features/*.py``).

    Not part of the version id (see the module docstring). A cluster build
    compares it between the client and every worker, so that workers running
    another checkout of the code are refused before they write anything.
    """
    here = Path(__file__).parent
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(here.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


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
        "feature_format": FEATURE_FORMAT_VERSION,
        "source_hash": SOURCE_HASH,
        "libraries": byte_library_versions(),
    }
    h = hashlib.blake2b(digest_size=10)
    h.update(json.dumps(inputs, sort_keys=True).encode())
    for clip_id, path, digest in sorted(sources):
        h.update(f"\n{clip_id}\t{path}\t{digest}".encode())
    return h.hexdigest(), inputs

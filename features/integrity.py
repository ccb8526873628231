"""Sealing a version and checking it: checksums and sizes of every file.

The seal (``SEAL.json``) lists every file of a version with its SHA-256 and
size. What it protects against: a version changed after it was written (a
flipped bit on disk, a file edited, truncated, added or removed by mistake, a
copy that did not finish). What it does not: anyone who can write the version
can also recompute the seal; it is a checksum, not a signature.

Three levels of checking, from cheap to thorough:

- :func:`read_seal` parses the seal and validates its schema;
- :func:`open_problems` (what readers and a no-op build run on open): every
  sealed file present with its size, no file the seal does not list, and the
  checksums of every file but the shards (metadata, catalog, plan, markers);
  the reader checks each shard's checksum when it first reads it;
- :func:`verify` recomputes every checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from siamese_audio.errors import StoreError
from siamese_audio.features.layout import ARRAY, CATALOG, PLAN, SEAL, data_files, shard_path
from siamese_audio.files import MIB, content_hash, read_regular, write_json_atomic

#: Files every sealed version has, besides its shards and batch markers.
REQUIRED = ("zarr.json", f"{ARRAY}/zarr.json", PLAN, CATALOG)
SEAL_KEYS = ("files", "version_id")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: About 130 bytes a file: 512 MiB seals some 4 million files (2 shards and markers per 32 clips).
MAX_SEAL_BYTES = 512 * MIB


def seal(version_path: Path, *, version_id: str, shard_checksums: dict[int, str]) -> dict[str, Any]:
    """Record checksums of every file and mark the version sealed (read-only).

    Shard checksums come from the tasks that wrote them; every other file is
    hashed here.
    """
    version_path = Path(version_path)
    shard_files = {
        shard_path(version_path, i).relative_to(version_path).as_posix(): digest
        for i, digest in shard_checksums.items() if digest
    }
    files = {}
    for path in data_files(version_path):
        rel = path.relative_to(version_path).as_posix()
        digest = shard_files.get(rel) or content_hash(path)
        files[rel] = {"sha256": digest, "size": path.stat().st_size}
    missing = sorted(set(shard_files) - set(files))
    if missing:
        raise StoreError(f"{version_path}: shards written but missing on disk: {missing[:5]}")
    record = {"version_id": version_id, "files": files}
    write_json_atomic(version_path / SEAL, record)
    for path in [*data_files(version_path), version_path / SEAL]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return record


def is_shard(rel: str) -> bool:
    """Whether ``rel`` (relative to the version) names a shard of the array."""
    return rel.startswith(f"{ARRAY}/c/")


def listing_problems(version_path: Path, record: dict[str, Any]) -> list[str]:
    """Compare the files on disk with the seal's list, by name and size (reads no content)."""
    version_path = Path(version_path)
    expected = record["files"]
    present = {p.relative_to(version_path).as_posix(): p for p in data_files(version_path)}
    problems = []
    for rel in sorted(expected):
        if rel not in present:
            problems.append(f"{rel}: missing")
            continue
        size = present[rel].stat().st_size
        if size != expected[rel]["size"]:
            problems.append(f"{rel}: {size} bytes, the seal says {expected[rel]['size']}")
    problems += [f"{rel}: not part of the sealed version" for rel in sorted(set(present) - set(expected))]
    return problems


def content_problems(version_path: Path, record: dict[str, Any], rels: list[str]) -> list[str]:
    """Recompute the checksums of the sealed files ``rels``; name those that differ or cannot be read."""
    return [f"{rel}: {what}" for rel, what in _content_changes(version_path, record, rels)]


def _content_changes(version_path: Path, record: dict[str, Any], rels: list[str]) -> list[tuple[str, str]]:
    changes = []
    for rel in rels:
        try:
            digest = content_hash(Path(version_path) / rel)
        except FileNotFoundError:
            changes.append((rel, "missing"))
            continue
        except OSError as exc:
            changes.append((rel, f"cannot be read ({exc.strerror or exc})"))
            continue
        if digest != record["files"][rel]["sha256"]:
            changes.append((rel, "content changed (checksum differs)"))
    return changes


def open_problems(version_path: Path, record: dict[str, Any]) -> list[str]:
    """What a reader checks on open: the listing and sizes, and the checksum of every file but the shards."""
    problems = listing_problems(version_path, record)
    if problems:
        return problems
    return content_problems(version_path, record, sorted(r for r in record["files"] if not is_shard(r)))


def verify(version_path: str | os.PathLike[str]) -> list[str]:
    """Recompute every checksum of a sealed version; return what changed ([] if intact).

    Raises
    ------
    StoreError
        The version is missing, unsealed, or its seal is malformed.
    """
    return [f"{rel}: {what}" for rel, what in changed_files(version_path)]


def changed_files(version_path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """:func:`verify` as ``(relative path, what changed)`` pairs: missing and changed files, then unsealed ones."""
    version_path = Path(version_path)
    record = read_seal(version_path)
    present = {p.relative_to(version_path).as_posix() for p in data_files(version_path)}
    missing = [(rel, "missing") for rel in sorted(set(record["files"]) - present)]
    changed = _content_changes(version_path, record, sorted(set(record["files"]) & present))
    extra = [(rel, "not part of the sealed version") for rel in sorted(present - set(record["files"]))]
    return sorted(missing + changed) + extra


def check_seal(record: Any, where: Path) -> dict[str, Any]:
    """Validate a seal's schema; return it.

    A seal is ``{"version_id": str, "files": {relative path: {"sha256": 64 hex, "size": int >= 0}}}``
    listing at least the version's metadata, plan and catalog, with relative paths inside the
    version (no ``..``, no absolute or hidden paths).

    Raises
    ------
    StoreError
        Naming the seal and the first thing that does not fit.
    """
    def bad(what: str) -> StoreError:
        return StoreError(f"{where}: malformed seal: {what}. Readers refuse the version; "
                          "rebuild it (siamese-audio build ... --repair) or check where this file came from.")

    if not isinstance(record, dict):
        raise bad(f"expected a JSON object, got {type(record).__name__}")
    unknown = sorted(str(k) for k in record if k not in SEAL_KEYS)
    missing = [k for k in SEAL_KEYS if k not in record]
    if missing or unknown:
        raise bad(f"expected the keys {list(SEAL_KEYS)}; missing {missing}, unknown {unknown}")
    if not isinstance(record["version_id"], str) or not record["version_id"]:
        raise bad(f"expected version_id to be a non-empty string, got {record['version_id']!r}")
    files = record["files"]
    if not isinstance(files, dict):
        raise bad(f"expected files to be an object, got {type(files).__name__}")
    for rel, info in files.items():
        if not _inside(rel):
            raise bad(f"expected relative paths inside the version, got {rel!r}")
        if not isinstance(info, dict) or set(info) != {"sha256", "size"}:
            raise bad(f"expected {rel!r} to map to {{'sha256', 'size'}}, got {info!r}"[:300])
        if not isinstance(info["sha256"], str) or not _SHA256.fullmatch(info["sha256"]):
            raise bad(f"expected the sha256 of {rel!r} to be 64 lowercase hex digits, got {info['sha256']!r}"[:300])
        size = info["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"expected the size of {rel!r} to be a non-negative integer, got {size!r}"[:300])
    absent = [r for r in REQUIRED if r not in files]
    if absent:
        raise bad(f"it does not list {absent} (every file of a version is sealed)")
    return record


def _inside(rel: Any) -> bool:
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    parts = PurePosixPath(rel).parts
    return (not rel.startswith("/") and PurePosixPath(rel).as_posix() == rel and rel != SEAL
            and all(p not in ("", ".", "..") and not p.startswith(".") for p in parts))


def read_seal(version_path: Path) -> dict[str, Any]:
    """Read and validate ``SEAL.json`` of a version (:class:`StoreError` when absent or malformed)."""
    version_path = Path(version_path)
    if not version_path.is_dir():
        raise StoreError(f"{version_path}: expected a feature version directory. It does not exist.")
    if not (version_path / PLAN).is_file() and not os.path.lexists(version_path / SEAL):
        raise StoreError(
            f"{version_path}: expected a feature version directory "
            f"(STORE_ROOT/DATASET/VERSION_ID with {PLAN} and {SEAL}). Found neither."
        )
    if not os.path.lexists(version_path / SEAL):
        raise StoreError(
            f"{version_path}: this feature version is not sealed (its build did not finish). "
            "Run the build again to finish it."
        )
    try:
        record = json.loads(read_regular(version_path / SEAL, max_bytes=MAX_SEAL_BYTES, what="seal"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise StoreError(f"{version_path / SEAL}: cannot read the seal ({exc}).") from None
    return check_seal(record, version_path / SEAL)


def sha256_of(data: bytes) -> str:
    """SHA-256 of bytes in memory, hex (what the seal records)."""
    return hashlib.sha256(data).hexdigest()

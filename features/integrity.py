"""Sealing a version and checking it: checksums and sizes of every file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from siamese_audio.errors import StoreError
from siamese_audio.features.layout import PLAN, SEAL, data_files, shard_path
from siamese_audio.files import content_hash, write_json_atomic


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


def verify(version_path: str | os.PathLike[str]) -> list[str]:
    """Recompute every checksum of a sealed version; return what changed ([] if intact)."""
    version_path = Path(version_path)
    record = read_seal(version_path)
    problems = []
    expected = record["files"]
    present = {p.relative_to(version_path).as_posix(): p for p in data_files(version_path)}
    for rel in sorted(expected):
        if rel not in present:
            problems.append(f"{rel}: missing")
            continue
        if content_hash(present[rel]) != expected[rel]["sha256"]:
            problems.append(f"{rel}: content changed (checksum differs)")
    for rel in sorted(set(present) - set(expected)):
        problems.append(f"{rel}: not part of the sealed version")
    return problems


def read_seal(version_path: Path) -> dict[str, Any]:
    if not version_path.is_dir():
        raise StoreError(f"{version_path}: expected a feature version directory. It does not exist.")
    if not (version_path / PLAN).is_file() and not (version_path / SEAL).is_file():
        raise StoreError(
            f"{version_path}: expected a feature version directory "
            f"(STORE_ROOT/DATASET/VERSION_ID with {PLAN} and {SEAL}). Found neither."
        )
    if not (version_path / SEAL).is_file():
        raise StoreError(
            f"{version_path}: this feature version is not sealed (its build did not finish). "
            "Run the build again to finish it."
        )
    try:
        return json.loads((version_path / SEAL).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{version_path / SEAL}: cannot read the seal ({exc}).") from exc

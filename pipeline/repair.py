"""A sealed version damaged after its build: say so on a rebuild, and ``build --repair`` it from the sources.

A rebuild of a sealed version checks it as readers do on open (the seal's schema,
every file present with its size and nothing else, the checksums of every file
but the shards). When that finds damage, the build stops and says how to repair.
``--repair`` recomputes every checksum, removes what is damaged (shards and their
batch markers, the catalog), rewrites damaged metadata from the build plan,
removes the seal, and lets the build resume: the
batches of the damaged shards run again from the sources, the catalog and the
seal are written again. Builds are deterministic, so the repaired files must
equal what the old seal recorded; the repair checks that at the end.

The repair deletes and rewrites only files that belong to a version (its metadata,
plan, catalog, shards and markers). A file that does not (a run or a report
written into the version by mistake) is never deleted: the repair stops before
changing anything and names those files, to be moved out first.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from siamese_audio.errors import StoreError
from siamese_audio.features import store
from siamese_audio.features.integrity import changed_files, open_problems, read_seal
from siamese_audio.files import first_names, write_atomic

log = logging.getLogger(__name__)

_SHARD = re.compile(rf"{store.ARRAY}/c/([0-9]+)/0/0")
_MARKER = re.compile(rf"{store.MARKERS}/([0-9]{{6}})\.json")
#: Files a fresh, empty version holds: rewritten from the plan when damaged.
METADATA = ("zarr.json", f"{store.ARRAY}/zarr.json", store.PLAN)


def belongs(rel: str, n_batches: int) -> bool:
    """Whether ``rel`` (relative to a version) is a file a build of ``n_batches`` batches writes."""
    match = _SHARD.fullmatch(rel) or _MARKER.fullmatch(rel)
    if match:
        return int(match.group(1)) < n_batches
    return rel in METADATA or rel == store.CATALOG


def foreign_files(path: Path, n_batches: int) -> list[str]:
    """Files in a version (as its seal would cover them) that no build of it writes."""
    return [rel for rel in (p.relative_to(path).as_posix() for p in store.data_files(path))
            if not belongs(rel, n_batches)]


def damage(path: Path, *, full: bool) -> list[str]:
    """What is wrong with a sealed version ([] when intact): every checksum when ``full``, else the open checks."""
    try:
        record = read_seal(path)
    except StoreError as exc:
        return [str(exc)]
    return store.verify(path) if full else open_problems(path, record)


def damaged_message(path: Path, vid: str, problems: list[str]) -> str:
    """Why a rebuild stops on a damaged sealed version, and the two ways to repair it."""
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return (
        f"{path}: feature version {vid} is sealed but damaged ({'; '.join(problems[:3])}{more}). "
        "Run the same build command with --repair to rewrite the damaged files from the sources, "
        f"or delete {path} and build again."
    )


def unseal_damaged(path: Path, *, n_batches: int, fresh_metadata) -> tuple[dict[str, Any] | None, list[str]]:
    """Remove what is damaged so that resuming the build rewrites it, then remove the seal (lock held).

    Parameters
    ----------
    n_batches : int
        Batches (shards) of the version.
    fresh_metadata : callable
        ``fresh_metadata(directory)`` creates an empty version of the same plan in ``directory``.

    Returns
    -------
    old_files : dict or None
        The old seal's files (what the repaired files must equal), None when the seal was unreadable.
    problems : list of str
        What was damaged ([]: intact, nothing was changed).

    Raises
    ------
    StoreError
        The version holds files that do not belong to it (nothing is changed; they are named).
    """
    foreign = foreign_files(path, n_batches)
    if foreign:
        raise StoreError(
            f"{path}: cannot repair feature version {path.name}: it holds {first_names(foreign)} files that are "
            "not part of a feature version (written there by something else). The repair deletes only the "
            f"version's own files: move those out of {path}, then run the build with --repair again. "
            "Nothing was changed.")
    try:
        record = read_seal(path)
        changes = changed_files(path)
    except StoreError as exc:
        record, changes = None, [(store.SEAL, str(exc))]
    if not changes:
        return None, []
    problems = [f"{rel}: {what}" for rel, what in changes]
    batches: set[int] = set()
    if record is None:  # nothing says which files are intact: write every batch again
        batches = set(range(n_batches))
    remove: list[Path] = []
    metadata: list[str] = []
    for rel, _what in changes if record is not None else []:
        shard, marker = _SHARD.fullmatch(rel), _MARKER.fullmatch(rel)
        if (shard or marker) and int((shard or marker).group(1)) < n_batches:
            batches.add(int((shard or marker).group(1)))
        elif rel in METADATA:
            metadata.append(rel)
        elif rel == store.CATALOG:  # written again when sealing
            remove.append(path / rel)
    for i in sorted(batches):
        remove += [store.shard_path(path, i), store.marker_path(path, i)]
    for file in remove:
        file.unlink(missing_ok=True)
    if metadata:
        _rewrite_metadata(path, metadata, fresh_metadata)
    (path / store.SEAL).unlink()
    log.info(f"Repairing {path}: {len(batches)} batch(es) to write again"
             + (f", metadata {metadata} rewritten" if metadata else "") + ": " + "; ".join(problems[:5]))
    return (record["files"] if record is not None else None), problems


def _rewrite_metadata(path: Path, rels: list[str], fresh_metadata) -> None:
    tmp = path.with_name(f".{path.name}.repair-{os.getpid()}")
    store.remove_tree(tmp)
    try:
        fresh_metadata(tmp)
        for rel in rels:
            write_atomic(path / rel, (tmp / rel).read_bytes())
    finally:
        store.remove_tree(tmp)


def check_repaired(path: Path, old_files: dict[str, Any] | None) -> None:
    """After the repair's build: every file must be what the old seal recorded (builds are deterministic)."""
    if old_files is None:
        return
    new_files = read_seal(path)["files"]
    differ = sorted(rel for rel in set(old_files) | set(new_files) if old_files.get(rel) != new_files.get(rel))
    if differ:
        raise StoreError(
            f"{path}: repaired and sealed again, but {differ[:5]} now hold other bytes than the old seal "
            "recorded: the sources are the same (same version id), so the environment or the dataset's "
            "location changed since the build (rejection reasons name the source paths). The version is "
            "consistent with its new seal."
        )

"""Content hashes of a dataset's source files, computed by the workers (the client reads no audio).

The first phase of a build's graph: the client knows each file's ``stat`` from
the listing; files whose stat matches the hash cache (:mod:`~siamese_audio.pipeline.hashcache`)
keep their cached hash, the others are cut into batches (by bytes) and hashed by
the Dask workers in parallel, each returning its files' hashes and the ``fstat``
of what it read. The version id is computed from these; the transform phase
runs after. On one machine the workers' second read of each file hits the page cache.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from siamese_audio.files import hash_file
from siamese_audio.manifests.sources import DatasetScan
from siamese_audio.pipeline.hashcache import HashCache

log = logging.getLogger(__name__)

#: A hash task's share of the bytes: about a tenth of a second of BLAKE3 on one core, so the
#: ~1 ms a Dask task costs is noise; at most MAX_FILES_PER_TASK files (many tiny files).
BYTES_PER_TASK = 64 << 20
MAX_FILES_PER_TASK = 512


def hash_batch(paths: tuple[str, ...], algorithm: str) -> list[tuple[str | None, int, int, str]]:
    """Worker task: hash each file; ``(digest or None, size, mtime_ns, reason)`` per path, in order.

    The size and mtime are the ``fstat`` of the file as it was read, so the client
    can tell a file that changed between its listing and its hashing.
    """
    out = []
    for path in paths:
        try:
            digest, st = hash_file(path, algorithm)
        except OSError as exc:
            out.append((None, 0, 0, f"{path}: cannot read the file ({exc.strerror or exc})"))
            continue
        out.append((digest, st.st_size, st.st_mtime_ns, ""))
    return out


@dataclass
class Hashed:
    """Every clip's content hash, and what the hashing phase did.

    ``hashes[i]`` is the hash of ``scan.clips[i]`` ("" when unreadable, then listed
    in ``unreadable`` as ``(index, reason)``).
    """

    hashes: list[str]
    unreadable: list[tuple[int, str]]
    timing: dict[str, Any] = field(default_factory=dict)


def cached_hashes(scan: DatasetScan, cache: HashCache) -> list[str | None]:
    """The cached hash of every clip whose stat matches its cache entry (None: to hash)."""
    return [cache.lookup(c.source_path, c.stat) for c in scan.clips]


def hash_sources(client, scan: DatasetScan, cache: HashCache, known: list[str | None], *,
                 listed_at_ns: int, meanwhile: Callable[[], None] | None = None) -> Hashed:
    """Hash on the workers every clip that ``known`` lacks; update the cache.

    Parameters
    ----------
    client : distributed.Client or None
        Needed only when some hash is not known.
    known : list
        :func:`cached_hashes` of ``scan``.
    listed_at_ns : int
        When the files were listed (``time.time_ns()``): files modified just before are not cached.
    meanwhile : callable, optional
        Client work to do while the workers hash (called once, after the tasks are submitted).
    """
    t0 = time.perf_counter()
    todo = [i for i, h in enumerate(known) if h is None]
    hashes = [h or "" for h in known]
    unreadable: list[tuple[int, str]] = []
    changed: set[int] = set()
    n_bytes = sum(scan.clips[i].stat.size for i in todo if scan.clips[i].stat is not None)
    batches: list[list[int]] = []
    if todo:
        batches = _batches(scan, todo, n_workers=len(client.scheduler_info().get("workers", {})) or 1)
        paths = [tuple(str(scan.root / scan.clips[i].source_path) for i in b) for b in batches]
        futures = client.map(hash_batch, paths, [cache.algorithm] * len(paths), pure=False,
                             key=[f"hash-{k}-{os.getpid()}-{t0}" for k in range(len(paths))])
        if meanwhile is not None:
            meanwhile()
        for batch, results in zip(batches, client.gather(futures)):
            for i, (digest, size, mtime_ns, reason) in zip(batch, results):
                if digest is None:
                    unreadable.append((i, reason))
                    continue
                hashes[i] = digest
                st = scan.clips[i].stat
                if st is None or (size, mtime_ns) != (st.size, st.mtime_ns):
                    changed.add(i)
        if changed:
            log.warning(f"{len(changed)} source file(s) changed while the build listed them (e.g. "
                        f"{scan.clips[min(changed)].source_path}); their hashes are of the bytes read, not cached.")
    keep = {c.source_path: (c.stat, hashes[i]) for i, c in enumerate(scan.clips)
            if hashes[i] and c.stat is not None and i not in changed}
    written = cache.save(keep, listed_at_ns=listed_at_ns)
    return Hashed(hashes=hashes, unreadable=sorted(unreadable), timing={
        "hash_s": time.perf_counter() - t0, "files": len(known), "cached": len(known) - len(todo),
        "hashed": len(todo), "hashed_bytes": n_bytes, "tasks": len(batches), "cache_written": written,
    })


def _batches(scan: DatasetScan, todo: list[int], *, n_workers: int) -> list[list[int]]:
    """Consecutive files cut into tasks of about :data:`BYTES_PER_TASK` (at least 4 tasks per worker)."""
    sizes = [(scan.clips[i].stat.size if scan.clips[i].stat is not None else 0) for i in todo]
    target = max(1 << 20, min(BYTES_PER_TASK, sum(sizes) // (4 * n_workers) + 1))
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i, size in zip(todo, sizes):
        current.append(i)
        total += size
        if total >= target or len(current) >= MAX_FILES_PER_TASK:
            batches.append(current)
            current, total = [], 0
    if current:
        batches.append(current)
    return batches


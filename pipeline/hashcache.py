"""A cache of source content hashes, so that rebuilding unchanged files does not read them again.

As git's index and DVC's state do, an entry says: the file at this absolute path,
with this size, modification time (ns), inode and device, had this content hash.
A rebuild lists the files (``stat``, no read) and takes the hash of every file
whose five values are all equal to an entry's; any other file is hashed again by
the workers. One cache file per dataset directory, under the store root::

    STORE_ROOT/.hash-cache/{blake2b of the dataset directory's absolute path}.json

What it assumes, and what defeats it: a file whose bytes changed has a new size or
a new mtime (or a new inode: most tools write a new file and rename it). A tool
that rewrites a file in place keeping its size and then restores its mtime (``touch
-r``, ``rsync`` without ``--checksum`` onto an equal-size file, some copy tools with
"preserve times") defeats it: the build would take the old hash, so the version id
would not describe the new bytes. ``build --rehash`` (and ``--repair``) hashes every
file again and rewrites the cache. A file modified within :data:`RACY_S` seconds of
its listing is not cached at all (its mtime may not yet tell a second change apart,
git's "racy clean" problem).

The cache is never trusted over the file: a cache that cannot be read, has another
format or algorithm, or whose checksum does not match its content is ignored whole
(with a warning) and rewritten; an entry whose stat differs from the file's is not
used. The version id is a function of content only: the same bytes under new mtimes
are hashed again (a miss) and give the same hashes, so the same id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from siamese_audio.files import GIB, read_regular, write_atomic
from siamese_audio.manifests.sources import FileStat

log = logging.getLogger(__name__)

#: A cache entry is about 150 bytes: 1 GiB holds some 7 million source files.
MAX_CACHE_BYTES = 1 * GIB

CACHE_DIR = ".hash-cache"
FORMAT = "siamese-audio source hash cache"
FORMAT_VERSION = 1
#: Files modified less than this many seconds before they were listed are not cached.
RACY_S = 2.0

Entry = tuple[int, int, int, int, str]  # size, mtime_ns, inode, device, digest


def cache_path(store_root: Path, source_root: Path) -> Path:
    """The cache file of the dataset directory ``source_root`` under ``store_root``."""
    key = hashlib.blake2b(os.fsencode(Path(source_root).resolve()), digest_size=10).hexdigest()
    return Path(store_root) / CACHE_DIR / f"{key}.json"


@dataclass
class HashCache:
    """The hashes of one dataset directory's files, keyed by path relative to it and ``stat``.

    Attributes
    ----------
    path : Path
        The cache file.
    source_root : Path
        The dataset directory (absolute); entries are relative to it.
    algorithm : str
        The hash of every entry ("blake3").
    entries : dict
        Relative path -> (size, mtime_ns, inode, device, digest), as loaded.
    """

    path: Path
    source_root: Path
    algorithm: str
    entries: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def load(cls, store_root: Path, source_root: Path, algorithm: str, *, use: bool = True) -> HashCache:
        """The cache of ``source_root`` (empty when absent, unreadable, corrupt or ``use`` is False)."""
        source_root = Path(source_root).resolve()
        cache = cls(cache_path(store_root, source_root), source_root, algorithm)
        if use:
            cache.entries = _read(cache.path, source_root, algorithm)
        return cache

    def lookup(self, rel: str, stat: FileStat | None) -> str | None:
        """The cached hash of ``rel`` if its stat equals the entry's, else None."""
        entry = self.entries.get(rel)
        if entry is None or stat is None:
            return None
        if entry[:4] != (stat.size, stat.mtime_ns, stat.inode, stat.device):
            return None
        return entry[4]

    def save(self, known: dict[str, tuple[FileStat, str]], *, listed_at_ns: int | None = None) -> bool:
        """Replace the cache by ``known`` (relative path -> (stat at listing, digest)); return whether written.

        Files modified within :data:`RACY_S` of ``listed_at_ns`` are left out. Nothing is
        written when the entries are those loaded (a no-op rebuild writes nothing). A
        cache that cannot be written is a warning, never a failed build.
        """
        listed_at_ns = time.time_ns() if listed_at_ns is None else listed_at_ns
        racy = listed_at_ns - int(RACY_S * 1e9)
        entries = {rel: (st.size, st.mtime_ns, st.inode, st.device, digest)
                   for rel, (st, digest) in known.items() if st.mtime_ns < racy}
        if entries == self.entries:
            return False
        body = json.dumps([[rel, *entry] for rel, entry in sorted(entries.items())],
                          separators=(",", ":")).encode()
        header = {"format": FORMAT, "version": FORMAT_VERSION, "algorithm": self.algorithm,
                  "source_root": os.fsdecode(self.source_root), "entries": len(entries),
                  "body_blake2b": hashlib.blake2b(body).hexdigest()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(header, sort_keys=True).encode() + b"\n" + body)
        except OSError as exc:
            log.warning(f"{self.path}: cannot write the hash cache ({exc.strerror or exc}); the next build "
                        "hashes every source file again.")
            return False
        self.entries = entries
        return True


def _read(path: Path, source_root: Path, algorithm: str) -> dict[str, Entry]:
    """The entries of a cache file; {} (with a warning naming why) when it cannot be trusted."""
    try:
        data = read_regular(path, max_bytes=MAX_CACHE_BYTES, what="hash cache")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        return _ignored(path, f"cannot read it: {exc.strerror or exc}")
    head, sep, body = data.partition(b"\n")
    try:
        header = json.loads(head)
        if not isinstance(header, dict) or not sep:
            raise ValueError("no header line")
    except (ValueError, RecursionError) as exc:
        return _ignored(path, f"malformed header ({exc})")
    expected = {"format": FORMAT, "version": FORMAT_VERSION, "algorithm": algorithm,
                "source_root": os.fsdecode(source_root)}
    differ = [k for k, v in expected.items() if header.get(k) != v]
    if differ:
        if differ == ["algorithm"]:  # a cache of another hash: not an error, just of no use
            log.info(f"{path}: hash cache of {header.get('algorithm')!r} hashes, not {algorithm!r}: not used.")
            return {}
        return _ignored(path, f"its header does not match ({', '.join(differ)})")
    if header.get("body_blake2b") != hashlib.blake2b(body).hexdigest():
        return _ignored(path, "its checksum does not match its content")
    try:
        rows = json.loads(body)
        entries = {}
        for rel, size, mtime_ns, inode, device, digest in rows:
            if not (isinstance(rel, str) and isinstance(digest, str)
                    and all(type(v) is int for v in (size, mtime_ns, inode, device))):
                raise ValueError(f"malformed entry {rel!r}")
            entries[rel] = (size, mtime_ns, inode, device, digest)
    except (ValueError, TypeError, RecursionError) as exc:
        return _ignored(path, f"malformed entries ({exc})"[:200])
    if len(entries) != header.get("entries"):
        return _ignored(path, "it does not hold the number of entries its header says")
    return entries


def _ignored(path: Path, why: str) -> dict[str, Entry]:
    log.warning(f"{path}: hash cache ignored ({why}); every source file is hashed again and the cache rewritten.")
    return {}

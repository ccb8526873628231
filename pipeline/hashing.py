"""Content hashes of a dataset's source files (what the version id is a function of)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from siamese_audio.files import content_hash
from siamese_audio.manifests.sources import DatasetScan


def hash_sources(scan: DatasetScan) -> tuple[list[str], list[tuple[int, str]]]:
    """Content hashes of every clip (threads: hashing releases the GIL).

    Returns
    -------
    hashes : list of str
        One per clip of ``scan.clips`` ("" for an unreadable one).
    unreadable : list of (index, reason)
    """
    def one(i: int) -> tuple[int, str | None, str]:
        try:
            return i, content_hash(scan.root / scan.clips[i].source_path), ""
        except OSError as exc:
            return i, None, f"{scan.root / scan.clips[i].source_path}: cannot read the file ({exc.strerror or exc})"

    hashes = [""] * len(scan.clips)
    unreadable = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for i, digest, reason in pool.map(one, range(len(scan.clips))):
            if digest is None:
                unreadable.append((i, reason))
            else:
                hashes[i] = digest
    return hashes, unreadable

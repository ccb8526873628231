"""Writing a version: create it, write whole shards and their markers, clean up after a kill.

Every file is written through :func:`siamese_audio.files.write_atomic`
(temporary file, fsync, rename), so a reader or a killed writer never sees
half a file, and writing the same content twice leaves the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from siamese_audio.features.config import FeatureConfig
from siamese_audio.features.layout import ARRAY, MARKERS, PLAN, StoreLayout, codecs, marker_path, shard_path
from siamese_audio.files import MIB, read_regular, write_atomic, write_json_atomic


def configure_zarr_for_workers() -> None:
    """Lower zarr's own concurrency: Dask already runs one task per core.

    Workers write shards without zarr (:mod:`~siamese_audio.features.shard`), so this
    does not import it (0.3 s of CPU per worker): the settings go into the environment,
    where zarr's configuration reads them when something imports it, and into zarr's
    configuration directly when it is already imported.
    """
    import sys

    os.environ.setdefault("ZARR_ASYNC__CONCURRENCY", "4")
    os.environ.setdefault("ZARR_THREADING__MAX_WORKERS", "1")
    zarr = sys.modules.get("zarr")
    if zarr is not None:
        zarr.config.set({"async.concurrency": 4, "threading.max_workers": 1})


def create_version(
    version_path: Path,
    *,
    n_clips: int,
    config: FeatureConfig,
    layout: StoreLayout,
    attributes: dict[str, Any],
    plan: dict[str, Any],
) -> None:
    """Create an empty, unsealed version: the array's metadata and the build plan.

    Created in a temporary sibling directory and renamed into place, so a
    version directory either does not exist or has complete metadata.
    """
    import zarr
    from zarr.storage import LocalStore

    version_path = Path(version_path)
    tmp = version_path.with_name(f".{version_path.name}.creating-{os.getpid()}")
    if tmp.exists():
        remove_tree(tmp)
    tmp.mkdir(parents=True)
    store = LocalStore(tmp)
    group = zarr.open_group(store=store, mode="w", zarr_format=3)
    filters, compressors = codecs(layout.codec)
    group.create_array(
        ARRAY,
        shape=(n_clips, config.n_mels, config.n_frames),
        chunks=(1, config.n_mels, config.n_frames),
        shards=(layout.clips_per_shard, config.n_mels, config.n_frames),
        dtype="float32",
        filters=filters,
        compressors=compressors,
        fill_value=float("nan"),
        dimension_names=("clip", "mel", "frame"),
        attributes=attributes,
    )
    (tmp / MARKERS).mkdir()
    write_json_atomic(tmp / PLAN, plan)
    try:
        os.rename(tmp, version_path)
    except OSError:
        remove_tree(tmp)
        if not (version_path / PLAN).is_file():
            raise
        # Another process created it first: it holds the same plan (same version id).


def remove_leftovers(version_path: Path) -> list[str]:
    """Delete what writers killed mid-write leave behind; return the paths removed.

    zarr's ``*.partial`` files and the ``.NAME.tmp-*`` files of atomic writes
    files inside the version, and ``.VERSION.creating-PID`` directories beside it.
    Call it only while holding the version's build lock and with no task of this
    build running: a live writer's temporary file would be removed under it.
    """
    version_path = Path(version_path)
    removed = []
    for tmp in sorted(version_path.parent.glob(f".{version_path.name}.creating-*")):
        remove_tree(tmp)
        removed.append(str(tmp))
    if version_path.is_dir():
        for root, _dirs, names in os.walk(version_path):
            for name in names:
                if name.endswith(".partial") or (name.startswith(".") and ".tmp-" in name):
                    (Path(root) / name).unlink(missing_ok=True)
                    removed.append(str(Path(root) / name))
    return removed


def remove_tree(path: Path) -> None:
    """Delete a directory tree, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)


def write_shard(version_path: Path, shard_index: int, block: np.ndarray, clips_per_shard: int,
                codec: str) -> str:
    """Write one whole shard atomically and return the SHA-256 of its bytes ("" when all-NaN).

    The shard's bytes are encoded in memory (:func:`features.shard.encode_shard`,
    identical to zarr's) and written through a temporary file and a rename, so a
    reader or a killed writer never sees half a shard, and writing the same
    block twice leaves the same file.

    Parameters
    ----------
    block : np.ndarray [shape=(k, n_mels, n_frames), dtype=float32]
        ``k`` = clips_per_shard, or fewer for the last shard.
    codec : str
        The layout's codec (one of :data:`CODECS`).
    """
    from siamese_audio.features.shard import encode_shard

    data = encode_shard(block, chunks_per_shard=clips_per_shard, codec=codec)
    path = shard_path(version_path, shard_index)
    if data is None:
        path.unlink(missing_ok=True)
        return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def write_marker(version_path: Path, batch_index: int, result: dict[str, Any]) -> None:
    """Record that batch ``batch_index`` is fully written (atomic)."""
    write_json_atomic(marker_path(version_path, batch_index), result)


def read_marker(version_path: Path, batch_index: int) -> dict[str, Any] | None:
    path = marker_path(version_path, batch_index)
    try:
        return json.loads(read_regular(path, max_bytes=64 * MIB, what="batch marker"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        return None  # a damaged marker: the batch is simply written again

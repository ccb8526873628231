"""Where a feature version keeps what: file names, the shard layout, the codec.

Layout of one version, ``STORE_ROOT/{dataset}/{version_id}/``::

    zarr.json                 Zarr v3 group
    logmel/                   float32 array (N, n_mels, n_frames), one clip per chunk,
                              ``clips_per_shard`` clips per shard; attributes hold the
                              feature config, dataset, version id and build inputs
    build.json                the build plan (clips, rows, batches): what resume checks
    _batches/NNNNNN.json      one marker per written shard (clip results, shard checksum)
    catalog.parquet           one row per clip (written when sealing)
    SEAL.json                 checksums and sizes of every file above; present = sealed

A shard is written by exactly one task (zarr v3 loses data when two writers
touch one shard). Rows whose clip was rejected keep the fill value (NaN).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamese_audio.errors import StoreError

ARRAY = "logmel"
SEAL = "SEAL.json"
PLAN = "build.json"
CATALOG = "catalog.parquet"
MARKERS = "_batches"
CODECS = ("none", "zstd", "blosc-zstd", "blosc-lz4")
#: Hard ceiling of clips per shard (a shard's index alone is 16 bytes a clip).
MAX_CLIPS_PER_SHARD = 1 << 20
#: A shard (held whole by the task writing it, then compressed) may take this share of memory at most.
SHARD_MEMORY_SHARE = 8


@dataclass(frozen=True)
class StoreLayout:
    """How clips are laid out on disk (part of the version fingerprint).

    Attributes
    ----------
    clips_per_shard : int
        Clips per shard file; one Dask task writes one shard.
    codec : str
        ``"blosc-lz4"`` (byte-shuffled LZ4, the default), ``"blosc-zstd"``,
        ``"zstd"`` or ``"none"``. Chosen by ``benchmarks/bench_codec.py`` on the
        real samples: LZ4 stores AudioMNIST log-mels in 48% of their raw size
        (ESC-50: 64%), within 2 points of the smallest codec, with the fastest
        compressed random one-clip reads and writes.
    """

    clips_per_shard: int = 32
    codec: str = "blosc-lz4"

    def __post_init__(self) -> None:
        if (isinstance(self.clips_per_shard, bool) or not isinstance(self.clips_per_shard, int)
                or not 1 <= self.clips_per_shard <= MAX_CLIPS_PER_SHARD):
            raise StoreError(
                f"Expected clips_per_shard to be an integer from 1 to {MAX_CLIPS_PER_SHARD:,}. "
                f"Got {self.clips_per_shard!r}."
            )
        if self.codec not in CODECS:
            raise StoreError(f"Expected codec among {CODECS}. Got {self.codec!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {"clips_per_shard": self.clips_per_shard, "codec": self.codec}


def check_clips_per_shard(clips_per_shard: int, *, n_clips: int, clip_shape: tuple[int, int],
                          available: int) -> None:
    """Refuse more clips per shard than the data or the memory allow, naming the limit.

    The data: more clips per shard than the dataset holds (beyond the default 32) only makes
    one larger, emptier shard. The memory: one task holds a whole shard of float32 clips (and its
    compressed copy); it may take at most ``1/SHARD_MEMORY_SHARE`` of ``available`` bytes.

    Raises
    ------
    StoreError
        One line with the limit and what sets it.
    """
    default = StoreLayout().clips_per_shard
    clip_bytes = 4 * clip_shape[0] * clip_shape[1]
    by_data = max(default, n_clips)
    by_memory = max(1, available // (SHARD_MEMORY_SHARE * clip_bytes))
    if clips_per_shard <= min(by_data, by_memory):
        return
    if by_data <= by_memory:
        why = f"the dataset has {n_clips:,} clips: a shard needs no more (or the default {default})"
    else:
        why = (f"a shard holds {clip_bytes:,} bytes a clip ({clip_shape[0]} x {clip_shape[1]} float32) and may take "
               f"1/{SHARD_MEMORY_SHARE} of the {available / 2**30:.1f} GiB of memory available")
    raise StoreError(f"Expected --clips-per-shard at most {min(by_data, by_memory):,} ({why}). "
                     f"Got {clips_per_shard:,}.")


def codecs(codec: str) -> tuple[list, list]:
    """(filters, compressors) for zarr.create_array."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if codec == "none":
        return [], []
    if codec == "zstd":
        return [], [ZstdCodec(level=1)]
    if codec == "blosc-zstd":
        return [], [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=4)]
    return [], [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)]


def shard_path(version_path: Path, shard_index: int) -> Path:
    """File of shard ``shard_index`` (zarr v3 default chunk keys)."""
    return Path(version_path) / ARRAY / "c" / str(shard_index) / "0" / "0"


def marker_path(version_path: Path, batch_index: int) -> Path:
    """Marker file of batch ``batch_index`` (one per written shard)."""
    return Path(version_path) / MARKERS / f"{batch_index:06d}.json"


def is_sealed(version_path: str | os.PathLike[str]) -> bool:
    """Whether the version's seal is present (the build finished)."""
    return (Path(version_path) / SEAL).is_file()


def data_files(version_path: Path) -> list[Path]:
    """Every file of a version that its seal covers (all but the seal and hidden temporaries), sorted."""
    files = []
    for root, dirs, names in os.walk(version_path):
        dirs.sort()
        for name in sorted(names):
            if name == SEAL or name.startswith("."):
                continue
            files.append(Path(root) / name)
    return files

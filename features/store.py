"""The Zarr feature store: create a version, write whole shards, seal, verify, open read-only.

This module is the store's public face, imported as ``from siamese_audio.features
import store``; the work is in four modules of one idea each:

- :mod:`~siamese_audio.features.layout`: file names, the shard layout, codecs (and the
  layout of a version on disk);
- :mod:`~siamese_audio.features.writer`: create a version, write whole shards and
  their markers, clean up what a killed writer left;
- :mod:`~siamese_audio.features.integrity`: seal (checksums and sizes), verify;
- :mod:`~siamese_audio.features.reader`: :class:`FeatureVersion`, a sealed version
  opened read-only.
"""

from __future__ import annotations

from siamese_audio.features.integrity import read_seal, seal, verify
from siamese_audio.features.layout import (
    ARRAY,
    CATALOG,
    CODECS,
    MARKERS,
    PLAN,
    SEAL,
    StoreLayout,
    data_files,
    is_sealed,
    marker_path,
    shard_path,
)
from siamese_audio.features.reader import FeatureVersion, open_version
from siamese_audio.features.writer import (
    configure_zarr_for_workers,
    create_version,
    read_marker,
    remove_leftovers,
    remove_tree,
    write_marker,
    write_shard,
)

__all__ = [
    "ARRAY", "CATALOG", "CODECS", "MARKERS", "PLAN", "SEAL", "FeatureVersion", "StoreLayout",
    "configure_zarr_for_workers", "create_version", "data_files", "is_sealed", "marker_path", "open_version",
    "read_marker", "read_seal", "remove_leftovers", "remove_tree", "seal", "shard_path", "verify",
    "write_marker", "write_shard",
]

"""Dispatcher from a dataset name to its adapter."""

from __future__ import annotations

from pathlib import Path

from siamese_audio.errors import DatasetLayoutError
from siamese_audio.manifests import audiomnist, esc50
from siamese_audio.manifests.sources import DatasetScan

ADAPTERS = {"audiomnist": audiomnist.scan, "esc50": esc50.scan}


def scan_dataset(dataset: str, root: str | Path) -> DatasetScan:
    """Scan ``root`` with the adapter of ``dataset`` (one of :data:`ADAPTERS`)."""
    try:
        adapter = ADAPTERS[dataset]
    except KeyError:
        raise DatasetLayoutError(
            f"Expected a dataset among {sorted(ADAPTERS)}. Got {dataset!r}."
        ) from None
    if not Path(root).is_dir():
        raise DatasetLayoutError(f"{root}: expected a dataset directory. It does not exist.")
    return adapter(root)

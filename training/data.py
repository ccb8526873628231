"""Training inputs: a sealed feature version read-only, a split, and batch readers.

Training never loads the store whole: :class:`StoreReader` reads only the clips
a batch needs (the store chunks one clip each); :class:`ResidentReader` loads
the training split once into device memory and indexes it there (``--resident``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamese_audio.errors import TrainingError

ReadFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TrainingInputs:
    """What one training run reads.

    Attributes
    ----------
    version : features.store.FeatureVersion
        The sealed version, opened read-only; ``version.version_id`` is pinned.
    split : manifests.splits.Split
    split_path : Path
        Where the split manifest was read from.
    train_rows, val_rows : dict[str, np.ndarray]
        Class -> sorted store rows [shape=(n_clips,), int64] of the training and validation classes.
    """

    version: Any
    split: Any
    train_rows: dict[str, np.ndarray]
    val_rows: dict[str, np.ndarray]
    split_path: Path

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_mels, n_frames)`` of one clip."""
        return tuple(self.version.shape)  # type: ignore[return-value]


def open_training_inputs(
    features: str | Path,
    split: str | Path,
    *,
    expect_version_id: str | None = None,
    expect_split_id: str | None = None,
    verify: bool = True,
) -> TrainingInputs:
    """Open a sealed feature version and a split manifest for training.

    Parameters
    ----------
    features : str or Path
        Version directory ``STORE_ROOT/{dataset}/{version_id}``.
    split : str or Path
        Split manifest (Parquet).
    expect_version_id, expect_split_id : str, optional
        When resuming: the ids the checkpoint pinned.
    verify : bool
        Recompute the version's checksums and refuse it when altered.

    Raises
    ------
    StoreError
        Missing or unsealed version (from :func:`features.store.open_version`).
    SplitError
        Unreadable split, another dataset, or classes the catalog lacks.
    TrainingError
        Altered version, or ids that differ from the expected ones.
    """
    from siamese_audio.features.store import open_version
    from siamese_audio.manifests.split_catalog import clip_rows
    from siamese_audio.manifests.splits import read_split

    version = open_version(features)
    if expect_version_id is not None and version.version_id != expect_version_id:
        raise TrainingError(
            f"Feature version {version.path}: expected version id {expect_version_id} "
            f"(pinned by the checkpoint). Got {version.version_id}."
        )
    if verify:
        problems = version.verify()
        if problems:
            shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} problems)" if len(problems) > 5 else "")
            raise TrainingError(
                f"Feature version {version.path} was altered after sealing; refusing to train on it: {shown}"
            )
    manifest = read_split(split)
    if expect_split_id is not None and manifest.split_id != expect_split_id:
        raise TrainingError(
            f"Split {split}: expected split id {expect_split_id} (pinned by the checkpoint). "
            f"Got {manifest.split_id}."
        )
    rows = clip_rows(manifest, version)
    return TrainingInputs(
        version=version,
        split=manifest,
        train_rows={c: np.asarray(r, dtype=np.int64) for c, r in rows["train"].items()},
        val_rows={c: np.asarray(r, dtype=np.int64) for c, r in rows["validation"].items()},
        split_path=Path(split).resolve(),
    )


def _as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device, non_blocking=True)


class StoreReader:
    """Reads the clips of a batch from the store (or any ``read(rows)`` function).

    Parameters
    ----------
    read : callable
        ``read(rows [shape=(N,), int64]) -> float32 [shape=(N, n_mels, n_frames)]``,
        e.g. ``FeatureVersion.read``.
    device : torch.device
    """

    def __init__(self, read: ReadFn, device: torch.device) -> None:
        self.read = read
        self.device = device

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """Clips of ``rows`` [shape=(N,)] as a float32 tensor [shape=(N, n_mels, n_frames)] on the device."""
        return _as_tensor(self.read(rows), self.device)


class ResidentReader:
    """Holds every clip of the given classes in device memory; batches index it.

    Parameters
    ----------
    read : callable
        As for :class:`StoreReader`; called once per ``chunk`` clips at construction.
    class_rows : Mapping[str, np.ndarray]
        Class -> rows; all of them are loaded.
    device : torch.device
    chunk : int
        Clips read per call while loading (bounds host memory).
    """

    def __init__(
        self, read: ReadFn, class_rows: Mapping[str, np.ndarray], device: torch.device, *, chunk: int = 1024
    ) -> None:
        self.rows = np.unique(np.concatenate([np.asarray(r, dtype=np.int64) for r in class_rows.values()]))
        first = read(self.rows[:1])
        self.data = torch.empty((self.rows.shape[0], *first.shape[1:]), dtype=torch.float32, device=device)
        for start in range(0, self.rows.shape[0], chunk):
            part = self.rows[start:start + chunk]
            self.data[start:start + part.shape[0]] = _as_tensor(read(part), device)
        self.device = device

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """Clips of ``rows`` [shape=(N,)], which must be among the loaded rows, [shape=(N, n_mels, n_frames)]."""
        rows = np.asarray(rows, dtype=np.int64)
        index = np.searchsorted(self.rows, rows)
        if np.any(index >= self.rows.shape[0]) or np.any(self.rows[np.minimum(index, self.rows.shape[0] - 1)] != rows):
            missing = sorted(set(rows.tolist()) - set(self.rows.tolist()))[:5]
            raise TrainingError(f"Resident reader: rows {missing} were not loaded (not in the training split).")
        return self.data[torch.from_numpy(index).to(self.device)]


def _stat_rows(class_rows: Mapping[str, np.ndarray], seed: int, max_clips: int) -> np.ndarray:
    """Up to ``max_clips`` rows of the given classes, drawn with their own generator (sorted).

    A generator of its own (seeded by ``seed``), so the batches' random stream is untouched.
    """
    rows = np.unique(np.concatenate([np.asarray(r, dtype=np.int64) for r in class_rows.values()]))
    rng = np.random.default_rng([seed, 0x5EED])
    if rows.shape[0] > max_clips:
        rows = np.sort(rng.choice(rows, size=max_clips, replace=False))
    return rows


def input_stats(
    read: ReadFn, class_rows: Mapping[str, np.ndarray], *, seed: int, max_clips: int = 512, per_band: bool = False,
    chunk: int = 256,
) -> tuple[Any, Any]:
    """Mean and standard deviation of the values of up to ``max_clips`` training clips.

    Parameters
    ----------
    read : callable
        ``read(rows) -> float32 [shape=(N, n_mels, n_frames)]``.
    class_rows : mapping
        The training classes' rows: statistics never see validation or test classes.
    per_band : bool
        One mean and deviation per mel band instead of one overall.
    chunk : int
        Clips read at a time (float64 sums: bounded memory, no precision loss).

    Returns
    -------
    mean, std : float, or np.ndarray [shape=(n_mels,), dtype=float32] with ``per_band``
    """
    rows = _stat_rows(class_rows, seed, max_clips)
    total = squares = None
    count = 0
    for start in range(0, rows.shape[0], chunk):
        values = read(rows[start:start + chunk]).astype(np.float64)
        axes = (0, 2) if per_band else None
        part, part_sq = values.sum(axis=axes), np.square(values).sum(axis=axes)
        total = part if total is None else total + part
        squares = part_sq if squares is None else squares + part_sq
        count += values.shape[0] * (values.shape[2] if per_band else values[0].size)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    if per_band:
        return mean.astype(np.float32), std.astype(np.float32)
    return float(mean), float(std)

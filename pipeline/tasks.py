"""What one Dask task does: decode, transform and write one whole shard of clips.

Only small results (per-clip status and the shard's checksum) go back to the client.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from features import store
from features.config import FeatureConfig
from manifests.errors import AudioDecodeError

# features.audio / features.transform (scipy.signal, librosa) are imported inside the
# task functions: the client only pickles references to them and starts faster.


@functools.cache
def tune_malloc() -> bool:
    """Keep freed multi-MB buffers in the heap instead of returning them to the OS.

    With glibc's defaults every FFT over a fresh 1-4 MB buffer page-faults it in
    again: measured here, that alone took the AudioMNIST log-mel from 2.7 to
    6.2 ms a clip. Same effect as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_
    in the environment, but set from inside the worker, so it also holds on
    clusters started by hand. A no-op (False) where glibc is absent.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = libc.mallopt(m_mmap_threshold, 256 << 20) == 1
        ok &= libc.mallopt(m_trim_threshold, 512 << 20) == 1
        ok &= libc.mallopt(m_top_pad, 64 << 20) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class ClipTask:
    """One clip of a batch: its store row, id and absolute source path."""

    row: int
    clip_id: str
    path: str


@dataclass(frozen=True)
class BatchSpec:
    """Everything a worker needs to write one shard (small, picklable)."""

    version_path: str
    batch_index: int
    clips: tuple[ClipTask, ...]
    config: FeatureConfig
    seed: int
    crop_long: bool
    clips_per_shard: int
    codec: str


def _too_long(n: int, config: FeatureConfig) -> str:
    return (
        f"{n} samples at {config.sample_rate} Hz ({n / config.sample_rate:.2f} s) is longer than the "
        f"preset's {config.n_samples} ({config.n_samples / config.sample_rate:.2f} s); "
        "rejected (use --crop-long to keep its start)"
    )


def prepare_clip(clip: ClipTask, config: FeatureConfig, seed: int, crop_long: bool) -> tuple[np.ndarray | None, dict]:
    """Decode, resample and pad one clip.

    Returns
    -------
    y : np.ndarray [shape=(config.n_samples,)] or None when rejected
    info : dict
        Catalog fields: sample_rate, channels, n_samples, pad_offset, cropped, status, reason.
    """
    from features.audio import load_resampled
    from features.transform import pad_offset, pad_to

    info = {"row": clip.row, "clip_id": clip.clip_id, "sample_rate": 0, "channels": 0,
            "n_samples": 0, "pad_offset": 0, "cropped": False, "status": "rejected", "reason": ""}
    try:
        y, decoded = load_resampled(clip.path, target_sr=config.sample_rate)
    except AudioDecodeError as exc:
        info["reason"] = str(exc)
        return None, info
    info.update(sample_rate=decoded.sample_rate, channels=decoded.channels,
                n_samples=int(decoded.samples.shape[0]))
    if y.shape[0] > config.n_samples:
        if not crop_long:
            info["reason"] = f"{clip.path}: " + _too_long(int(y.shape[0]), config)
            return None, info
        info["cropped"] = True
        info["reason"] = f"cropped from {y.shape[0]} to {config.n_samples} samples (kept the start)"
        y = y[: config.n_samples]
    offset = pad_offset(seed=seed, clip_id=clip.clip_id, n=int(y.shape[0]), target=config.n_samples)
    info.update(pad_offset=offset, status="stored")
    return pad_to(y, target=config.n_samples, offset=offset), info


def warm_worker(config: FeatureConfig) -> int:
    """Import the feature code and build the mel filter bank once in this worker.

    The client submits it to every worker as soon as the cluster is up, so this
    start-up overlaps with scanning and hashing the dataset on the client.
    """
    from features.transform import LogMel

    tune_malloc()
    store.configure_zarr_for_workers()
    LogMel(config)
    return os.getpid()


def check_batch(clips: tuple[ClipTask, ...], config: FeatureConfig, crop_long: bool) -> list[dict]:
    """Decode-only pass for ``--strict``: what each clip's status would be. Writes nothing."""
    return [prepare_clip(c, config, 0, crop_long)[1] for c in clips]


def write_batch(spec: BatchSpec) -> dict:
    """Compute every clip of one shard and write the shard, then its marker.

    Idempotent: the same spec always writes the same bytes, so a batch that
    runs twice (a worker died after writing) leaves the store unchanged.

    Returns
    -------
    dict
        ``{"batch": i, "shard_sha256": str, "clips": [catalog fields per clip]}`` (the
        marker's content) plus ``cpu_s``, ``wall_s`` and ``worker_pid`` of this task.
    """
    import time

    cpu0, wall0 = time.process_time(), time.perf_counter()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    store.configure_zarr_for_workers()
    tune_malloc()
    if store.is_sealed(spec.version_path):
        # A task left running by a killed client, finishing after the resumed build sealed
        # the version: its shard is already there, byte for byte; touch nothing.
        marker = store.read_marker(spec.version_path, spec.batch_index) or {"clips": []}
        return {**marker, "batch": spec.batch_index, "cpu_s": time.process_time() - cpu0,
                "wall_s": time.perf_counter() - wall0, "worker_pid": os.getpid()}
    from features.transform import LogMel

    config = spec.config
    extract = LogMel(config)
    first_row = spec.batch_index * spec.clips_per_shard
    n = len(spec.clips)
    block = np.full((n, config.n_mels, config.n_frames), np.nan, dtype=np.float32)
    infos = []
    for clip in spec.clips:
        y, info = prepare_clip(clip, config, spec.seed, spec.crop_long)
        if y is not None:
            block[clip.row - first_row] = extract(y)
        infos.append(info)
    digest = store.write_shard(spec.version_path, spec.batch_index, block, spec.clips_per_shard, spec.codec)
    result = {"batch": spec.batch_index, "shard_sha256": digest, "clips": infos}
    store.write_marker(spec.version_path, spec.batch_index, result)
    # Timings go back to the client only, never into the marker (store bytes stay deterministic).
    return {**result, "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
            "worker_pid": os.getpid()}

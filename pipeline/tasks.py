"""What one Dask task does: compute one whole shard of clips and write it with its marker.

The bytes are decided in :mod:`siamese_audio.features.clip` (and written by the
store's writer); this module only runs it inside a worker (threads, malloc,
zarr settings) and times it. Only small results (per-clip status and the
shard's checksum) go back to the client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from siamese_audio.features import store
from siamese_audio.features.clip import ClipTask, compute_block, prepare_clip
from siamese_audio.features.config import FeatureConfig
from siamese_audio.memory import keep_feature_buffers

# features.transform (scipy.fft) is imported inside the task functions: the client only
# pickles references to them and starts faster.


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


def warm_worker(config: FeatureConfig) -> int:
    """Import the feature code and build the mel filter bank once in this worker.

    The client submits it to every worker as soon as the cluster is up, so this
    start-up overlaps with scanning and hashing the dataset on the client.
    """
    from siamese_audio.features.transform import LogMel

    keep_feature_buffers()
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
    keep_feature_buffers()
    if store.is_sealed(spec.version_path):
        # A task left running by a killed client, finishing after the resumed build sealed
        # the version: its shard is already there, byte for byte; touch nothing.
        marker = store.read_marker(spec.version_path, spec.batch_index) or {"clips": []}
        return {**marker, "batch": spec.batch_index, "cpu_s": time.process_time() - cpu0,
                "wall_s": time.perf_counter() - wall0, "worker_pid": os.getpid()}
    block, infos = compute_block(spec.clips, spec.config, seed=spec.seed, crop_long=spec.crop_long,
                                 first_row=spec.batch_index * spec.clips_per_shard)
    digest = store.write_shard(spec.version_path, spec.batch_index, block, spec.clips_per_shard, spec.codec)
    result = {"batch": spec.batch_index, "shard_sha256": digest, "clips": infos}
    store.write_marker(spec.version_path, spec.batch_index, result)
    # Timings go back to the client only, never into the marker (store bytes stay deterministic).
    return {**result, "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
            "worker_pid": os.getpid()}

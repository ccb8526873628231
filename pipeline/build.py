"""The feature build: list a dataset, hash it on the workers, fingerprint it, run the Dask graph, seal.

One function, :func:`build`, in the order a build happens; each step is a
module of its own: listing (:mod:`siamese_audio.manifests.datasets`: names and
``stat``, no audio byte read by the client), the hash cache
(:mod:`~siamese_audio.pipeline.hashcache`), hashing on the workers, the first
phase of the graph (:mod:`~siamese_audio.pipeline.hashing`), the version id
(:mod:`siamese_audio.features.fingerprint`), the lock
(:mod:`~siamese_audio.lock`), the plan and resume (:mod:`~siamese_audio.pipeline.plan`),
the graph (:mod:`~siamese_audio.pipeline.run`, :mod:`~siamese_audio.pipeline.tasks`),
the catalog records (:mod:`siamese_audio.features.records`), the seal and the
summary (:mod:`~siamese_audio.pipeline.summary`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamese_audio import lock
from siamese_audio.errors import AudioDecodeError, DatasetLayoutError, FeatureConfigError, StoreError
from siamese_audio.features import catalog, store
from siamese_audio.features.config import FeatureConfig, preset
from siamese_audio.features.fingerprint import SOURCE_HASH
from siamese_audio.features.fingerprint import version_id as fingerprint
from siamese_audio.features.layout import check_clips_per_shard
from siamese_audio.features.records import catalog_records
from siamese_audio.files import refuse_inside_version
from siamese_audio.manifests.datasets import scan_dataset
from siamese_audio.manifests.sources import DatasetScan
from siamese_audio.memory import available_bytes
from siamese_audio.pipeline import repair
from siamese_audio.pipeline.hashcache import HashCache
from siamese_audio.pipeline.hashing import Hashed, cached_hashes, hash_sources
from siamese_audio.pipeline.paths import local_path
from siamese_audio.pipeline.plan import Planned, batch_specs, batches_of, create, open_or_create
from siamese_audio.pipeline.run import run_batches, strict_check
from siamese_audio.pipeline.summary import BuildResult, result_from_catalog
from siamese_audio.pipeline.tasks import warm_worker

__all__ = ["BuildConfig", "BuildResult", "build", "local_path"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    """Inputs of one feature build (the CLI fills it; nothing else is read).

    ``source_dir`` and ``store_root`` are paths, or ``file://`` URLs, that the
    client and every Dask worker see alike. ``lock_wait_s``: how long to wait
    when another build holds this version's lock (0: stop at once with a
    :class:`StoreError` naming the lock and its holder). ``repair``: when the
    version is sealed but damaged, rewrite what is damaged from the sources
    (:mod:`~siamese_audio.pipeline.repair`); without it such a build stops and says so.
    ``rehash``: hash every source file again instead of trusting the hash cache for
    files whose size, mtime, inode and device are unchanged (``--repair`` does too).
    """

    dataset: str
    source_dir: Path | str
    store_root: Path | str
    seed: int = 0
    crop_long: bool = False
    strict: bool = False
    workers: int | None = None
    scheduler: str | None = None
    layout: store.StoreLayout = field(default_factory=store.StoreLayout)
    feature_config: FeatureConfig | None = None  # default: the dataset's preset
    progress: bool = True
    lock_wait_s: float = 0.0
    repair: bool = False  # a damaged sealed version: rewrite its damaged files from the sources
    rehash: bool = False  # ignore the hash cache: read and hash every source file again

    def __post_init__(self) -> None:
        # One rule for seeds, as training and evaluation have it.
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise FeatureConfigError(f"Build config: expected seed to be a non-negative integer. Got {self.seed!r}.")


def build(cfg: BuildConfig) -> BuildResult:
    """Build (or finish, or find already built) the feature version of ``cfg``.

    The client lists the dataset (names and ``stat``) and never reads an audio
    byte: content hashes come from the hash cache or from the workers. A rebuild
    of a sealed version whose files all match the cache starts no cluster at all.

    Raises
    ------
    DatasetLayoutError
        The dataset directory is unusable or holds no clip.
    AudioDecodeError
        With ``strict``, when any clip would be rejected (nothing is written).
    StoreError
        The store cannot be written.
    """
    t0 = time.perf_counter()
    config = cfg.feature_config or preset(cfg.dataset)
    source_dir = local_path(cfg.source_dir, what="source directory").resolve()
    store_root = local_path(cfg.store_root, what="store root").resolve()
    refuse_inside_version(local_path(cfg.store_root, what="store root"), option="--store", error=StoreError)
    listed_at_ns = time.time_ns()
    scan = scan_dataset(cfg.dataset, source_dir)
    if not scan.clips:
        raise DatasetLayoutError(
            f"{source_dir}: expected audio clips in the {cfg.dataset} layout. Found none "
            f"({len(scan.rejections)} files or rows rejected)."
        )
    check_clips_per_shard(cfg.layout.clips_per_shard, n_clips=len(scan.clips), clip_shape=config.shape,
                          available=available_bytes())
    cache = HashCache.load(store_root, source_dir, SOURCE_HASH, use=not (cfg.rehash or cfg.repair))
    known = cached_hashes(scan, cache)
    timing: dict[str, Any] = {"scan_s": time.perf_counter() - t0}
    if not cfg.repair and all(h is not None for h in known):
        # Every file as the cache knows it: the version id needs no worker. A sealed version is a no-op.
        sources = _sources(scan, Hashed(hashes=list(known), unreadable=[]))
        vid, _ = _fingerprint(cfg, config, sources)
        path = store_root / cfg.dataset / vid
        if store.is_sealed(path):
            result = _sealed(path, vid, cfg)
            result.timing = {**timing, "hash": {"files": len(known), "cached": len(known), "hashed": 0},
                             "total_s": time.perf_counter() - t0}
            return result
    from siamese_audio.cluster import dask_client

    with dask_client(workers=cfg.workers, scheduler=cfg.scheduler) as client:
        warming = _warm_workers(client, config)  # held: a released future may be cancelled
        result = _build_with(client, cfg, config, scan, cache, known, store_root, listed_at_ns, timing)
        del warming
    result.timing = {**timing, "total_s": time.perf_counter() - t0}
    return result


def _warm_workers(client, config: FeatureConfig) -> list:
    """Start every worker's imports now; they overlap with checking the workers and hashing."""
    workers = list(client.scheduler_info().get("workers", {}))
    return [client.submit(warm_worker, config, pure=False, workers=[w], allow_other_workers=True)
            for w in workers]


@dataclass(frozen=True)
class _Sources:
    """A scanned dataset: the clips to compute (with content hashes) and what was rejected up front."""

    scan: DatasetScan
    root: Path
    clips: list[tuple[Any, str]]
    layout_rejects: list[dict[str, Any]]


def _sources(scan: DatasetScan, hashed: Hashed) -> _Sources:
    bad = {i for i, _ in hashed.unreadable}
    layout_rejects = [
        {"clip_id": r.clip_id, "class": r.label, "source_path": r.source_path, "reason": r.reason,
         "columns": r.columns}
        for r in scan.rejections
    ] + [
        {"clip_id": scan.clips[i].clip_id, "class": scan.clips[i].label,
         "source_path": scan.clips[i].source_path, "reason": reason, "columns": scan.clips[i].columns}
        for i, reason in hashed.unreadable
    ]
    clips = [(c, hashed.hashes[i]) for i, c in enumerate(scan.clips) if i not in bad]
    if not clips:
        raise DatasetLayoutError(
            f"{scan.root}: expected audio clips in the {scan.dataset} layout. Found none "
            f"({len(layout_rejects)} files or rows rejected)."
        )
    return _Sources(scan=scan, root=scan.root, clips=clips, layout_rejects=layout_rejects)


def _fingerprint(cfg: BuildConfig, config: FeatureConfig, sources: _Sources) -> tuple[str, dict[str, Any]]:
    return fingerprint(
        dataset=cfg.dataset, sources=[(c.clip_id, c.source_path, h) for c, h in sources.clips],
        feature_config=config.to_dict(), layout=cfg.layout.to_dict(), seed=cfg.seed,
        crop_long=cfg.crop_long,
    )


def _sealed(path: Path, vid: str, cfg: BuildConfig) -> BuildResult:
    """A rebuild of a sealed version: check it as a reader's open does, then nothing to do."""
    damage = repair.damage(path, full=False)
    if damage:
        raise StoreError(repair.damaged_message(path, vid, damage))
    log.info(f"Feature version {vid} is already built and sealed at {path}: nothing to do.")
    return result_from_catalog(vid, path, already_sealed=True)


def _build_with(client, cfg: BuildConfig, config: FeatureConfig, scan: DatasetScan, cache: HashCache,
                known: list[str | None], store_root: Path, listed_at_ns: int, timing: dict[str, Any]) -> BuildResult:
    dataset_dir = store_root / cfg.dataset
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{dataset_dir}: expected a writable store directory. Cannot create it ({exc}).") from exc
    from siamese_audio.pipeline.workers import check_workers

    # Before the workers hash: they must see the sources and the store at the client's paths.
    check_workers(client, source_file=scan.root / scan.clips[0].source_path, store_dir=dataset_dir)
    hashed = hash_sources(client, scan, cache, known, listed_at_ns=listed_at_ns, meanwhile=_client_imports)
    timing["hash"] = hashed.timing
    sources = _sources(scan, hashed)
    vid, inputs = _fingerprint(cfg, config, sources)
    path = dataset_dir / vid
    if store.is_sealed(path) and not cfg.repair:
        return _sealed(path, vid, cfg)
    with lock.acquire(lock.lock_path(path), wait_s=cfg.lock_wait_s,
                      what=f"Feature version {vid} ({path})") as held:
        if held.took_over is not None:
            log.info(f"Took over the lock {held.path} of a build that is gone: {held.took_over.describe()}.")
        planned = Planned(vid, inputs, path)
        old_files, repaired = None, []
        if store.is_sealed(path) and cfg.repair:
            old_files, repaired = repair.unseal_damaged(
                path, n_batches=len(batches_of(sources.clips, sources.root, cfg.layout.clips_per_shard)),
                fresh_metadata=lambda where: create(planned, where, cfg.dataset, config, cfg.layout, cfg.seed,
                                                    cfg.crop_long, sources.clips))
        if store.is_sealed(path):
            done = "is intact: nothing to repair" if cfg.repair else "was built and sealed meanwhile: nothing to do"
            log.info(f"Feature version {vid} at {path} {done}.")
            return result_from_catalog(vid, path, already_sealed=True)
        store.remove_leftovers(path)
        result = _write_version(client, cfg, config, sources, planned, timing)
        repair.check_repaired(path, old_files)
        result.repaired = repaired
        return result


def _client_imports() -> None:
    """What the client imports to plan and seal (zarr, pyarrow: ~0.5 s), done while the workers hash."""
    import pyarrow.json  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import zarr  # noqa: F401


def _write_version(client, cfg: BuildConfig, config: FeatureConfig, sources: _Sources,
                   planned: Planned, timing: dict[str, Any]) -> BuildResult:
    """Create or resume the version, run the batches, seal it (lock held)."""
    t0 = time.perf_counter()
    batches = batches_of(sources.clips, sources.root, cfg.layout.clips_per_shard)
    if cfg.strict:
        strict_check(client, batches, config, cfg.crop_long, sources.layout_rejects)
    todo = open_or_create(planned, cfg.dataset, config, cfg.layout, cfg.seed, cfg.crop_long, sources.clips,
                          n_batches=len(batches))
    if len(todo) < len(batches):
        log.info(f"Resuming feature version {planned.version_id}: {len(batches) - len(todo)} of {len(batches)} "
                 "batches already written.")
    specs = batch_specs(planned.path, batches, todo, config, seed=cfg.seed, crop_long=cfg.crop_long,
                        layout=cfg.layout)
    timing["plan_s"] = time.perf_counter() - t0
    timing.update(run_batches(client, specs, progress=cfg.progress))
    t0 = time.perf_counter()
    result = _seal(planned, sources, len(batches))
    timing["seal_s"] = time.perf_counter() - t0
    return result


def _seal(planned: Planned, sources: _Sources, n_batches: int) -> BuildResult:
    """Write the catalog from the batch markers, then the seal; return the summary."""
    path, vid = planned.path, planned.version_id
    infos: dict[int, dict] = {}
    checksums: dict[int, str] = {}
    for i in range(n_batches):
        marker = store.read_marker(path, i)
        if marker is None:
            raise StoreError(f"{path}: batch {i} has no marker after the build; run the build again.")
        checksums[i] = marker["shard_sha256"]
        for info in marker["clips"]:
            infos[info["row"]] = info
    records = catalog_records(sources.clips, infos, sources.layout_rejects)
    if not any(r["status"] == "stored" for r in records):
        store.remove_tree(path)
        raise AudioDecodeError(
            f"{sources.root}: every clip was rejected, so no feature version was kept. First reasons:\n  "
            + "\n  ".join(r["reason"] for r in records[:10])
        )
    store.remove_leftovers(path)  # temporaries of tasks killed mid-write (a worker died)
    try:
        catalog.write_catalog(path / store.CATALOG, records, sources.scan.column_types)
        store.seal(path, version_id=vid, shard_checksums=checksums)
    except OSError as exc:  # a full disk: every write is atomic, the version stays unsealed and resumable
        raise StoreError(
            f"{path}: cannot write the catalog or the seal ({exc.strerror or exc}). The version is not sealed; "
            "fix the cause (free space) and run the build again: it resumes and seals it."
        ) from None
    result = result_from_catalog(vid, path, already_sealed=False)
    for w in result.warnings:
        log.warning(w)
    return result

"""The feature build: scan a dataset, fingerprint it, run the Dask graph, seal the version.

One function, :func:`build`, in the order a build happens; each step is a
module of its own: scanning (:mod:`siamese_audio.manifests.datasets`), hashing
(:mod:`~siamese_audio.pipeline.hashing`), the version id
(:mod:`siamese_audio.features.fingerprint`), the lock
(:mod:`~siamese_audio.pipeline.lock`), the plan and resume (:mod:`~siamese_audio.pipeline.plan`),
the graph (:mod:`~siamese_audio.pipeline.run`, :mod:`~siamese_audio.pipeline.tasks`),
the catalog records (:mod:`siamese_audio.features.records`), the seal and the
summary (:mod:`~siamese_audio.pipeline.summary`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamese_audio.errors import AudioDecodeError, DatasetLayoutError, FeatureConfigError, StoreError
from siamese_audio.features import catalog, store
from siamese_audio.features.config import FeatureConfig, preset
from siamese_audio.features.fingerprint import version_id as fingerprint
from siamese_audio.features.records import catalog_records
from siamese_audio.manifests.datasets import scan_dataset
from siamese_audio.manifests.sources import DatasetScan
from siamese_audio.pipeline import lock, repair
from siamese_audio.pipeline.hashing import hash_sources
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

    def __post_init__(self) -> None:
        # One rule for seeds, as training and evaluation have it.
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise FeatureConfigError(f"Build config: expected seed to be a non-negative integer. Got {self.seed!r}.")


def build(cfg: BuildConfig) -> BuildResult:
    """Build (or finish, or find already built) the feature version of ``cfg``.

    Raises
    ------
    DatasetLayoutError
        The dataset directory is unusable or holds no clip.
    AudioDecodeError
        With ``strict``, when any clip would be rejected (nothing is written).
    StoreError
        The store cannot be written.
    """
    config = cfg.feature_config or preset(cfg.dataset)
    from siamese_audio.pipeline.cluster import dask_client

    with dask_client(workers=cfg.workers, scheduler=cfg.scheduler) as client:
        warming = _warm_workers(client, config)  # held: a released future may be cancelled
        result = _build_with(client, cfg, config)
        del warming
        return result


def _warm_workers(client, config: FeatureConfig) -> list:
    """Start every worker's imports now; they overlap with scanning and hashing."""
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


def _scan_and_hash(dataset: str, source_dir: Path) -> _Sources:
    scan = scan_dataset(dataset, source_dir)
    hashes, unreadable = hash_sources(scan)
    bad = {i for i, _ in unreadable}
    layout_rejects = [
        {"clip_id": r.clip_id, "class": r.label, "source_path": r.source_path, "reason": r.reason,
         "columns": r.columns}
        for r in scan.rejections
    ] + [
        {"clip_id": scan.clips[i].clip_id, "class": scan.clips[i].label,
         "source_path": scan.clips[i].source_path, "reason": reason, "columns": scan.clips[i].columns}
        for i, reason in unreadable
    ]
    clips = [(c, hashes[i]) for i, c in enumerate(scan.clips) if i not in bad]
    if not clips:
        raise DatasetLayoutError(
            f"{source_dir}: expected audio clips in the {dataset} layout. Found none "
            f"({len(layout_rejects)} files or rows rejected)."
        )
    return _Sources(scan=scan, root=source_dir, clips=clips, layout_rejects=layout_rejects)


def _build_with(client, cfg: BuildConfig, config: FeatureConfig) -> BuildResult:
    source_dir = local_path(cfg.source_dir, what="source directory").resolve()
    store_root = local_path(cfg.store_root, what="store root").resolve()
    sources = _scan_and_hash(cfg.dataset, source_dir)
    vid, inputs = fingerprint(
        dataset=cfg.dataset, sources=[(c.clip_id, c.source_path, h) for c, h in sources.clips],
        feature_config=config.to_dict(), layout=cfg.layout.to_dict(), seed=cfg.seed,
        crop_long=cfg.crop_long,
    )
    path = store_root / cfg.dataset / vid
    if store.is_sealed(path):
        damage = repair.damage(path, full=False)  # --repair checks every checksum, under the lock
        if not cfg.repair:
            if damage:
                raise StoreError(repair.damaged_message(path, vid, damage))
            log.info(f"Feature version {vid} is already built and sealed at {path}: nothing to do.")
            return result_from_catalog(vid, path, already_sealed=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path.parent}: expected a writable store directory. Cannot create it ({exc}).") from exc
    from siamese_audio.pipeline.cluster import check_workers

    check_workers(client, source_file=source_dir / sources.clips[0][0].source_path, store_dir=path.parent)
    with lock.acquire(lock.lock_path(path), wait_s=cfg.lock_wait_s,
                      what=f"Feature version {vid} ({path})") as held:
        if held.took_over is not None:
            log.info(f"Took over the lock {held.path} of a build that is gone: {held.took_over.describe()}.")
        planned = Planned(vid, inputs, path)
        old_files, repaired = None, []
        if store.is_sealed(path) and cfg.repair:
            old_files, repaired = repair.unseal_damaged(
                path, n_batches=len(batches_of(sources.clips, source_dir, cfg.layout.clips_per_shard)),
                fresh_metadata=lambda where: create(planned, where, cfg.dataset, config, cfg.layout, cfg.seed,
                                                    cfg.crop_long, sources.clips))
        if store.is_sealed(path):
            done = "is intact: nothing to repair" if cfg.repair else "was built and sealed meanwhile: nothing to do"
            log.info(f"Feature version {vid} at {path} {done}.")
            return result_from_catalog(vid, path, already_sealed=True)
        store.remove_leftovers(path)
        result = _write_version(client, cfg, config, sources, planned)
        repair.check_repaired(path, old_files)
        result.repaired = repaired
        return result


def _write_version(client, cfg: BuildConfig, config: FeatureConfig, sources: _Sources,
                   planned: Planned) -> BuildResult:
    """Create or resume the version, run the batches, seal it (lock held)."""
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
    timing = run_batches(client, specs, progress=cfg.progress)
    result = _seal(planned, sources, len(batches))
    result.timing = timing
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

"""The feature build: scan a dataset, fingerprint it, run the Dask graph, seal the version."""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features import catalog, store
from features.config import FeatureConfig, preset
from features.fingerprint import version_id as fingerprint
from manifests.datasets import scan_dataset
from manifests.errors import AudioDecodeError, DatasetLayoutError, StoreError
from manifests.files import content_hash
from manifests.sources import DatasetScan
from pipeline import lock
from pipeline.tasks import BatchSpec, ClipTask, check_batch, warm_worker, write_batch


@dataclass(frozen=True)
class BuildConfig:
    """Inputs of one feature build (the CLI fills it; nothing else is read).

    ``source_dir`` and ``store_root`` are paths, or ``file://`` URLs, that the
    client and every Dask worker see alike. ``lock_wait_s``: how long to wait
    when another build holds this version's lock (0: stop at once with a
    :class:`StoreError` naming the lock and its holder).
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


@dataclass
class BuildResult:
    """What a build did; ``to_json`` is what ``build --json`` prints."""

    version_id: str
    path: Path
    n_stored: int
    n_rejected: int
    already_sealed: bool
    rejected: list[dict[str, str]]
    warnings: list[str]
    class_counts: dict[str, int]
    timing: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id, "path": str(self.path), "n_stored": self.n_stored,
            "n_rejected": self.n_rejected, "already_sealed": self.already_sealed,
            "rejected": self.rejected, "warnings": self.warnings, "class_counts": self.class_counts,
            "timing": self.timing,
        }


def _hash_sources(scan: DatasetScan) -> tuple[list[str], list[tuple[int, str]]]:
    """Content hashes of every clip (threads: hashing releases the GIL)."""
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


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(/.*)$")


def local_path(value: str | os.PathLike[str], *, what: str = "store root") -> Path:
    """A local (or shared-filesystem) path from a path or a ``file://`` URL.

    Accepts ``file:///abs/path``, ``file://localhost/abs/path`` and ``file:/abs/path``
    (what :class:`pathlib.Path` makes of ``file:///abs/path``).

    Raises
    ------
    StoreError
        Another URL scheme (``s3://``, ``gs://`` ...) or a ``file://`` URL naming another host.
    """
    text = os.fspath(value)
    match = _URL.match(text)
    if not match:
        return Path(text)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme != "file":
        raise StoreError(
            f"Expected the {what} to be a path or a file:// URL that every worker sees. Got {text!r}: "
            f"{scheme}:// stores are not supported (the store writes shards through zarr's LocalStore); "
            "mount the bucket as a shared filesystem instead."
        )
    if rest.startswith("//"):
        host, _, tail = rest[2:].partition("/")
        if host not in ("", "localhost"):
            raise StoreError(
                f"Expected a file:// URL without a host (file:///path). Got {text!r}, on host {host!r}."
            )
        rest = "/" + tail
    return Path(urllib.parse.unquote(rest))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
    from pipeline.cluster import dask_client

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


def _build_with(client, cfg: BuildConfig, config: FeatureConfig) -> BuildResult:
    source_dir = local_path(cfg.source_dir, what="source directory").resolve()
    store_root = local_path(cfg.store_root, what="store root").resolve()
    scan = scan_dataset(cfg.dataset, source_dir)
    hashes, unreadable = _hash_sources(scan)
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
            f"{source_dir}: expected audio clips in the {cfg.dataset} layout. Found none "
            f"({len(layout_rejects)} files or rows rejected)."
        )
    vid, inputs = fingerprint(
        dataset=cfg.dataset, sources=[(c.clip_id, c.source_path, h) for c, h in clips],
        feature_config=config.to_dict(), layout=cfg.layout.to_dict(), seed=cfg.seed,
        crop_long=cfg.crop_long,
    )
    path = store_root / cfg.dataset / vid
    if store.is_sealed(path):
        _log(f"Feature version {vid} is already built and sealed at {path}: nothing to do.")
        return _result_from_catalog(vid, path, already_sealed=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path.parent}: expected a writable store directory. Cannot create it ({exc}).") from exc
    from pipeline.cluster import check_workers

    check_workers(client, source_file=source_dir / clips[0][0].source_path, store_dir=path.parent)
    with lock.acquire(lock.lock_path(path), wait_s=cfg.lock_wait_s,
                      what=f"Feature version {vid} ({path})") as held:
        if held.took_over is not None:
            _log(f"Took over the lock {held.path} of a build that is gone: {held.took_over.describe()}.")
        if store.is_sealed(path):
            _log(f"Feature version {vid} was built and sealed at {path} meanwhile: nothing to do.")
            return _result_from_catalog(vid, path, already_sealed=True)
        store.remove_leftovers(path)
        return _write_version(client, cfg, config, scan, clips, layout_rejects, vid, inputs, path, source_dir)


def _write_version(client, cfg: BuildConfig, config: FeatureConfig, scan: DatasetScan, clips, layout_rejects,
                   vid: str, inputs: dict, path: Path, source_dir: Path) -> BuildResult:
    """Create or resume the version at ``path``, run the batches, seal it (lock held)."""
    per_shard = cfg.layout.clips_per_shard
    tasks = [ClipTask(row, c.clip_id, str(source_dir / c.source_path)) for row, (c, _) in enumerate(clips)]
    batches = [tuple(tasks[s : s + per_shard]) for s in range(0, len(tasks), per_shard)]

    if cfg.strict:
        _strict_check(client, batches, config, cfg, layout_rejects)
    if not path.exists():
        plan = {
            "version_id": vid, "dataset": cfg.dataset, "n_clips": len(clips),
            "clips_per_shard": per_shard,
            "clips": [[row, c.clip_id, c.source_path, h] for row, (c, h) in enumerate(clips)],
        }
        attrs = {"version_id": vid, "dataset": cfg.dataset, "feature_config": config.to_dict(),
                 "layout": cfg.layout.to_dict(), "seed": cfg.seed, "crop_long": cfg.crop_long,
                 "fingerprint_inputs": inputs, "n_clips": len(clips)}
        store.create_version(path, n_clips=len(clips), config=config, layout=cfg.layout,
                             attributes=attrs, plan=plan)
    else:
        _check_plan(path, vid, len(clips))
    done = {i for i in range(len(batches)) if store.read_marker(path, i) is not None}
    todo = [i for i in range(len(batches)) if i not in done]
    if done:
        _log(f"Resuming feature version {vid}: {len(done)} of {len(batches)} batches already written.")
    specs = [BatchSpec(str(path), i, batches[i], config, cfg.seed, cfg.crop_long, per_shard, cfg.layout.codec)
             for i in todo]
    timing = _run_batches(client, specs, progress=cfg.progress)

    result = _seal(path, vid, scan, clips, layout_rejects, len(batches))
    result.timing = timing
    return result


def _strict_check(client, batches, config, cfg, layout_rejects) -> None:
    from distributed import as_completed

    problems = [f"{r['source_path'] or r['clip_id']}: {r['reason']}" for r in layout_rejects]
    futures = [client.submit(check_batch, b, config, cfg.crop_long, pure=False) for b in batches]
    for fut in as_completed(futures):
        problems += [c["reason"] for c in fut.result() if c["status"] != "stored"]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise AudioDecodeError(
            f"--strict: {len(problems)} clip(s) would be rejected; nothing was written.\n  {shown}{more}"
        )


def _check_plan(path: Path, vid: str, n_clips: int) -> None:
    try:
        plan = json.loads((path / store.PLAN).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: cannot resume, its {store.PLAN} is unreadable ({exc}).") from exc
    if plan.get("version_id") != vid or plan.get("n_clips") != n_clips:
        raise StoreError(
            f"{path}: cannot resume, its build plan is for version {plan.get('version_id')} "
            f"with {plan.get('n_clips')} clips; expected {vid} with {n_clips}."
        )


def _run_batches(client, specs: list[BatchSpec], *, progress: bool) -> dict[str, Any]:
    """Run the write tasks; return timings (graph wall time, per-task CPU seconds)."""
    import time

    from distributed import as_completed
    from tqdm import tqdm

    if not specs:
        return {}
    t0 = time.perf_counter()
    tasks = []
    n_clips = sum(len(s.clips) for s in specs)
    futures = [client.submit(write_batch, s, pure=False, key=f"write-batch-{s.batch_index}-{s.version_path[-20:]}")
               for s in specs]
    with tqdm(total=n_clips, unit="clip", desc="build", file=sys.stderr, disable=not progress) as bar:
        for fut in as_completed(futures):
            result = fut.result()
            bar.update(len(result["clips"]))
            tasks.append({k: result[k] for k in ("batch", "cpu_s", "wall_s", "worker_pid")}
                         | {"clips": len(result["clips"])})
    return {"graph_wall_s": time.perf_counter() - t0, "tasks": sorted(tasks, key=lambda t: t["batch"])}


def _seal(path: Path, vid: str, scan: DatasetScan, clips, layout_rejects, n_batches: int) -> BuildResult:
    infos: dict[int, dict] = {}
    checksums: dict[int, str] = {}
    for i in range(n_batches):
        marker = store.read_marker(path, i)
        if marker is None:
            raise StoreError(f"{path}: batch {i} has no marker after the build; run the build again.")
        checksums[i] = marker["shard_sha256"]
        for info in marker["clips"]:
            infos[info["row"]] = info
    records = []
    for row, (clip, digest) in enumerate(clips):
        info = infos[row]
        stored = info["status"] == "stored"
        records.append({
            **clip.columns, "row": row if stored else -1, "clip_id": clip.clip_id, "class": clip.label,
            "source_path": clip.source_path, "source_hash": digest,
            **{k: info[k] for k in ("sample_rate", "channels", "n_samples", "pad_offset", "cropped",
                                    "status", "reason")},
        })
    for r in layout_rejects:
        records.append({
            **r["columns"], "row": -1, "clip_id": r["clip_id"], "class": r["class"],
            "source_path": r["source_path"], "source_hash": "", "sample_rate": 0, "channels": 0,
            "n_samples": 0, "pad_offset": 0, "cropped": False, "status": "rejected", "reason": r["reason"],
        })
    if not any(r["status"] == "stored" for r in records):
        store._remove_tree(path)
        raise AudioDecodeError(
            f"{scan.root}: every clip was rejected, so no feature version was kept. First reasons:\n  "
            + "\n  ".join(r["reason"] for r in records[:10])
        )
    store.remove_leftovers(path)  # temporaries of tasks killed mid-write (a worker died)
    catalog.write_catalog(path / store.CATALOG, records, scan.column_types)
    store.seal(path, version_id=vid, shard_checksums=checksums)
    result = _result_from_catalog(vid, path, already_sealed=False)
    for w in result.warnings:
        _log(f"warning: {w}")
    return result


def _result_from_catalog(vid: str, path: Path, *, already_sealed: bool) -> BuildResult:
    """Summary of a sealed version from its catalog (pyarrow only: pandas costs 0.3 s to import)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path / store.CATALOG, columns=["clip_id", "class", "source_path", "status",
                                                         "reason"]).to_pylist()
    stored = [r for r in rows if r["status"] == "stored"]
    rejected = [r for r in rows if r["status"] != "stored"]
    counts = Counter(r["class"] for r in stored)
    all_classes = sorted({r["class"] for r in rows} - {""})
    warnings = [
        f"class {c!r} has {counts.get(c, 0)} stored clip(s); one-shot needs at least 2"
        for c in all_classes if counts.get(c, 0) < 2
    ]
    return BuildResult(
        version_id=vid, path=path, n_stored=len(stored), n_rejected=len(rejected),
        already_sealed=already_sealed,
        rejected=[{"clip_id": r["clip_id"], "source_path": r["source_path"], "reason": r["reason"]}
                  for r in rejected],
        warnings=warnings, class_counts=dict(sorted(counts.items())),
    )

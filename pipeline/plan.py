"""The build plan: batches of clips, a new version or a resumed one, and what is left to write."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamese_audio.errors import StoreError
from siamese_audio.features import store
from siamese_audio.features.clip import ClipTask
from siamese_audio.features.config import FeatureConfig
from siamese_audio.features.records import array_attributes, plan_record
from siamese_audio.files import GIB, read_regular
from siamese_audio.pipeline.tasks import BatchSpec

#: A plan lists every clip (about 200 bytes each).
MAX_PLAN_BYTES = 2 * GIB


@dataclass(frozen=True)
class Planned:
    """A version to write: its id, what went into the id, and its directory."""

    version_id: str
    inputs: dict[str, Any]
    path: Path


def batches_of(clips: list[tuple[Any, str]], root: Path, per_shard: int) -> list[tuple[ClipTask, ...]]:
    """The clips in store-row order, cut into one batch per shard."""
    tasks = [ClipTask(row, c.clip_id, str(root / c.source_path)) for row, (c, _) in enumerate(clips)]
    return [tuple(tasks[s : s + per_shard]) for s in range(0, len(tasks), per_shard)]


def open_or_create(planned: Planned, dataset: str, config: FeatureConfig, layout: store.StoreLayout, seed: int,
                   crop_long: bool, clips: list[tuple[Any, str]], *, n_batches: int) -> list[int]:
    """Create the version (metadata and plan), or check the plan of a partly built one.

    Returns
    -------
    list of int
        The batches without a marker: what is left to write.
    """
    path = planned.path
    if not path.exists():
        create(planned, path, dataset, config, layout, seed, crop_long, clips)
    else:
        check_plan(path, planned.version_id, len(clips))
    return [i for i in range(n_batches) if store.read_marker(path, i) is None]


def create(planned: Planned, path: Path, dataset: str, config: FeatureConfig, layout: store.StoreLayout, seed: int,
           crop_long: bool, clips: list[tuple[Any, str]]) -> None:
    """Create the empty version of ``planned`` at ``path``: array metadata and build plan."""
    plan = plan_record(version_id=planned.version_id, dataset=dataset, clips=clips,
                       clips_per_shard=layout.clips_per_shard)
    attrs = array_attributes(version_id=planned.version_id, dataset=dataset, config=config, layout=layout,
                             seed=seed, crop_long=crop_long, fingerprint_inputs=planned.inputs, n_clips=len(clips))
    store.create_version(path, n_clips=len(clips), config=config, layout=layout, attributes=attrs, plan=plan)


def check_plan(path: Path, vid: str, n_clips: int) -> None:
    """Refuse to resume a version whose plan is unreadable or for other clips."""
    try:
        plan = json.loads(read_regular(path / store.PLAN, max_bytes=MAX_PLAN_BYTES, what="build plan"))
    except (OSError, ValueError, RecursionError) as exc:
        raise StoreError(f"{path}: cannot resume, its {store.PLAN} is unreadable ({exc}).") from None
    if not isinstance(plan, dict):
        raise StoreError(f"{path}: cannot resume, its {store.PLAN} is not a JSON object.")
    if plan.get("version_id") != vid or plan.get("n_clips") != n_clips:
        raise StoreError(
            f"{path}: cannot resume, its build plan is for version {plan.get('version_id')} "
            f"with {plan.get('n_clips')} clips; expected {vid} with {n_clips}."
        )


def batch_specs(path: Path, batches: list[tuple[ClipTask, ...]], todo: list[int], config: FeatureConfig, *,
                seed: int, crop_long: bool, layout: store.StoreLayout) -> list[BatchSpec]:
    """One task spec per batch left to write."""
    return [BatchSpec(str(path), i, batches[i], config, seed, crop_long, layout.clips_per_shard, layout.codec)
            for i in todo]

"""The records a version stores besides its arrays: the build plan, the array attributes, the catalog rows.

Like :mod:`siamese_audio.features.clip`, these decide stored bytes (``build.json``,
``logmel/zarr.json``, ``catalog.parquet``), so they live in ``features/`` under the
format version and its golden test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from siamese_audio.features.config import FeatureConfig
from siamese_audio.features.fingerprint import SOURCE_HASH
from siamese_audio.features.layout import StoreLayout


def plan_record(*, version_id: str, dataset: str, clips: Sequence[tuple[Any, str]],
                clips_per_shard: int) -> dict[str, Any]:
    """Content of ``build.json``: what a resumed build checks before it continues.

    Parameters
    ----------
    clips : sequence of (ClipSource, content_hash)
        In store-row order; hashes are :data:`~siamese_audio.features.fingerprint.SOURCE_HASH`.
    """
    return {
        "version_id": version_id, "dataset": dataset, "n_clips": len(clips), "clips_per_shard": clips_per_shard,
        "source_hash_algorithm": SOURCE_HASH,
        "clips": [[row, c.clip_id, c.source_path, h] for row, (c, h) in enumerate(clips)],
    }


def array_attributes(*, version_id: str, dataset: str, config: FeatureConfig, layout: StoreLayout, seed: int,
                     crop_long: bool, fingerprint_inputs: dict[str, Any], n_clips: int) -> dict[str, Any]:
    """Attributes of the ``logmel`` array (in its ``zarr.json``)."""
    return {"version_id": version_id, "dataset": dataset, "feature_config": config.to_dict(),
            "layout": layout.to_dict(), "seed": seed, "crop_long": crop_long,
            "fingerprint_inputs": fingerprint_inputs, "n_clips": n_clips}


def catalog_records(
    clips: Sequence[tuple[Any, str]], infos: dict[int, dict[str, Any]], layout_rejects: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One catalog row per clip: stored or rejected while computing, and rejected while scanning.

    Parameters
    ----------
    clips : sequence of (ClipSource, content_hash)
        The planned clips, in store-row order.
    infos : dict
        Row -> catalog fields returned by the tasks (:func:`~siamese_audio.features.clip.prepare_clip`).
    layout_rejects : iterable of dict
        Files or rows rejected before any task ran: ``clip_id, class, source_path, reason, columns``.
    """
    records = []
    for row, (clip, digest) in enumerate(clips):
        info = infos[row]
        stored = info["status"] == "stored"
        records.append({
            **clip.columns, "row": row if stored else -1, "clip_id": clip.clip_id, "class": clip.label,
            "source_path": clip.source_path, "source_hash": digest,
            "source_hash_algorithm": SOURCE_HASH if digest else "",
            **{k: info[k] for k in ("sample_rate", "channels", "n_samples", "pad_offset", "cropped",
                                    "status", "reason")},
        })
    for r in layout_rejects:
        records.append({
            **r["columns"], "row": -1, "clip_id": r["clip_id"], "class": r["class"],
            "source_path": r["source_path"], "source_hash": "", "source_hash_algorithm": "", "sample_rate": 0,
            "channels": 0, "n_samples": 0, "pad_offset": 0, "cropped": False, "status": "rejected", "reason": r["reason"],
        })
    return records

"""What ``inspect`` shows about a version, sealed or not."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from siamese_audio.errors import StoreError
from siamese_audio.features import store
from siamese_audio.files import read_regular
from siamese_audio.pipeline.plan import MAX_PLAN_BYTES


def inspect_version(path: str | Path) -> dict[str, Any]:
    """Counts per class, rejected clips and reasons, config, sealed or not."""
    import pandas as pd
    import zarr
    from zarr.storage import LocalStore

    path = Path(path)
    if not (path / store.PLAN).is_file():
        raise StoreError(f"{path}: expected a feature version directory (with {store.PLAN}). Not found.")
    arr = zarr.open_array(store=LocalStore(path, read_only=True), path=store.ARRAY, mode="r")
    attrs = dict(arr.attrs)
    sealed = store.is_sealed(path)
    info: dict[str, Any] = {
        "path": str(path), "version_id": attrs.get("version_id"), "dataset": attrs.get("dataset"),
        "sealed": sealed, "feature_config": attrs.get("feature_config"), "layout": attrs.get("layout"),
        "seed": attrs.get("seed"), "crop_long": attrs.get("crop_long"), "shape": list(arr.shape),
    }
    if (path / store.CATALOG).is_file():
        cat = pd.read_parquet(path / store.CATALOG)
        stored = cat[cat["status"] == "stored"]
        rej = cat[cat["status"] != "stored"]
        info.update(
            n_stored=int(len(stored)), n_rejected=int(len(rej)),
            class_counts=dict(sorted(Counter(stored["class"]).items())),
            rejected=[{"clip_id": r.clip_id, "source_path": r.source_path, "reason": r.reason}
                      for r in rej.itertuples()],
        )
    else:
        try:
            plan = json.loads(read_regular(path / store.PLAN, max_bytes=MAX_PLAN_BYTES, what="build plan"))
            n_batches = -(-int(plan["n_clips"]) // int(plan["clips_per_shard"]))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError, RecursionError) as exc:
            raise StoreError(f"{path}: its {store.PLAN} is unreadable ({exc}).") from None
        done = sum(1 for _ in (path / store.MARKERS).glob("*.json"))
        info.update(n_stored=0, n_rejected=0, class_counts={}, rejected=[],
                    batches_written=done, batches_total=n_batches)
    return info

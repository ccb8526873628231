"""Small seeded factories of sealed feature versions, for tests and examples.

They write a real version (same layout, catalog and seal as a build) from
synthetic spectrograms, without audio: fast enough for unit tests of the
stages that read the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from siamese_audio.features import catalog, store
from siamese_audio.features.config import FeatureConfig


def make_synthetic_version(
    store_root: str | Path,
    *,
    dataset: str = "audiomnist",
    classes: Sequence[str],
    clips_per_class: int | dict[str, int] = 6,
    shape: tuple[int, int] = (16, 20),
    seed: int = 0,
    separation: float = 3.0,
    clips_per_shard: int = 8,
    sources: Mapping[str, Sequence[str]] | None = None,
    codec: str = "none",
) -> Path:
    """Write a sealed feature version whose classes are separable.

    Each class has a random prototype spectrogram; clips are the prototype
    scaled by ``separation`` plus unit Gaussian noise, in dB-like units.

    Parameters
    ----------
    classes : sequence of str
        Class ids (strings, e.g. "04").
    clips_per_class : int or dict
        Clips of every class, or per class.
    shape : (n_mels, n_frames)
    sources : mapping of str to sequence of str, optional
        Source recording of each clip of each class (ESC-50's ``src_file``
        column); without it the catalog has no such column (as AudioMNIST's).
    codec : str
        The store layout's codec (``"none"``: shards hold raw float32).

    Returns
    -------
    Path
        The version directory ``store_root/dataset/version_id`` (sealed).
    """
    import hashlib
    import json

    rng = np.random.default_rng(seed)
    counts = {c: (clips_per_class[c] if isinstance(clips_per_class, dict) else clips_per_class) for c in classes}
    n_mels, n_frames = shape
    config = FeatureConfig(
        name=f"synthetic-{dataset}", sample_rate=8000, n_samples=(n_frames - 1) * 64,
        n_fft=max(128, 2 * n_mels), hop_length=64, n_mels=n_mels,
    )
    records = []
    data = []
    for label in classes:
        proto = rng.standard_normal(shape).astype(np.float32)
        for k in range(counts[label]):
            clip_id = f"{label}_{k:03d}"
            data.append(separation * proto + rng.standard_normal(shape).astype(np.float32) - 40.0)
            records.append({
                "row": len(records), "clip_id": clip_id, "class": label,
                "source_path": f"synthetic/{clip_id}.wav", "source_hash": "", "sample_rate": 8000,
                "channels": 1, "n_samples": config.n_samples, "pad_offset": 0, "cropped": False,
                "status": "stored", "reason": "",
            })
            if sources is not None:
                records[-1]["src_file"] = str(sources[label][k])
    block = np.stack(data).astype(np.float32)
    described = {"dataset": dataset, "classes": list(classes), "counts": counts,
                 "shape": list(shape), "seed": seed, "separation": separation}
    if sources is not None:
        described["sources"] = {c: [str(name) for name in sources[c]] for c in classes}
    if codec != "none":
        described["codec"] = codec
    desc = json.dumps(described)
    version_id = "syn" + hashlib.blake2b(desc.encode(), digest_size=8).hexdigest()
    path = Path(store_root) / dataset / version_id
    if store.is_sealed(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = store.StoreLayout(clips_per_shard=clips_per_shard, codec=codec)
    attrs = {"version_id": version_id, "dataset": dataset, "feature_config": config.to_dict(),
             "layout": layout.to_dict(), "seed": seed, "synthetic": True}
    store.create_version(path, n_clips=len(records), config=config, layout=layout,
                         attributes=attrs, plan={"version_id": version_id, "synthetic": True})
    checksums = {}
    for i, start in enumerate(range(0, len(records), clips_per_shard)):
        checksums[i] = store.write_shard(path, i, block[start : start + clips_per_shard], clips_per_shard,
                                        layout.codec)
    catalog.write_catalog(path / store.CATALOG, records, {} if sources is None else {"src_file": "string"})
    store.seal(path, version_id=version_id, shard_checksums=checksums)
    return path

"""What checking a version as it is read costs: the reader with checksums vs the sizes-only reader, side by side.

Writes one sealed version of AudioMNIST-shaped clips (224 x 224 float32, 32 clips a shard, blosc-lz4,
log-mel-like values: a -80 dB floor over the padding, noise elsewhere), then times, with a warm page cache,
alternating the two readers in one run, in CPU seconds of the process:

* sizes only: the reader as it was before issue 15 (every sealed file present with its size; no checksum);
* checked: this reader (the seal's schema and listing, the checksums of every file but the shards on open,
  each shard's checksum when it is first read: the whole shard is read once).

Cases, each on a freshly opened version:

* ``open + catalog``: open the version and read its catalog (every reader does both);
* ``evaluate-like``: read every clip of 5 of 60 classes, 64 clips a call. Classes are interleaved across
  shards (store rows follow clip ids, ``{digit}_{speaker}_{rep}``), so this touches every shard: the worst
  case, where checking reads the whole store to use a twelfth of it;
* ``train-like``: 100 batches of 32 random clips (the first epochs of a run, most shards first seen);
* ``steady``: the same reads again once every shard was checked (what the rest of a run costs);
* ``verify()``: recompute every checksum (what ``train`` does on open, and ``siamese-audio verify``).

    PYTHONPATH=. python benchmarks/bench_integrity.py                 # ~1 minute on 2 cores, ~400 MB of /tmp
    PYTHONPATH=. python benchmarks/bench_integrity.py --clips 3840 --repeat 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from siamese_audio.errors import StoreError
from siamese_audio.features import catalog, store
from siamese_audio.features.config import FeatureConfig
from siamese_audio.features.layout import CATALOG
from siamese_audio.features.reader import FeatureVersion

N_CLASSES = 60


class SizesOnlyReader(FeatureVersion):
    """The reader before checksum-on-read: sizes of the sealed files on open, no checksum anywhere."""

    def _check_files(self) -> None:
        for rel, info in self._seal["files"].items():
            if (self.path / rel).stat().st_size != info["size"]:
                raise StoreError(f"{rel}: size differs")
        self._catalog_bytes = (self.path / CATALOG).read_bytes()

    def __init__(self, path) -> None:
        super().__init__(path)
        self._checked_shards.update(range(-(-self.n_rows // self._per_shard)))  # read straight, as before


def make_version(root: Path, *, clips: int, shape: tuple[int, int], per_shard: int) -> Path:
    rng = np.random.default_rng(0)
    n_mels, n_frames = shape
    config = FeatureConfig(name="bench", sample_rate=44_100, n_samples=(n_frames - 1) * 197, n_fft=4096,
                           hop_length=197, n_mels=n_mels)
    layout = store.StoreLayout(clips_per_shard=per_shard, codec="blosc-lz4")
    path = root / "audiomnist" / "bench"
    attrs = {"version_id": "bench", "dataset": "audiomnist", "feature_config": config.to_dict(),
             "layout": layout.to_dict()}
    store.create_version(path, n_clips=clips, config=config, layout=layout, attributes=attrs,
                         plan={"version_id": "bench"})
    records, sums = [], {}
    for shard, start in enumerate(range(0, clips, per_shard)):
        k = min(per_shard, clips - start)
        block = (rng.standard_normal((k, n_mels, n_frames), dtype=np.float32) * 8 - 40).astype(np.float32)
        for i in range(k):  # the padding: each clip's -80 dB floor over a random share of its frames
            block[i, :, rng.integers(n_frames // 4, 3 * n_frames // 4):] = -80.0
        sums[shard] = store.write_shard(path, shard, block, per_shard, layout.codec)
        for i in range(k):
            row = start + i
            records.append({"row": row, "clip_id": f"{row:06d}", "class": f"{row % N_CLASSES:02d}",
                            "source_path": f"x/{row}.wav", "source_hash": "", "sample_rate": 48_000,
                            "channels": 1, "n_samples": 1, "pad_offset": 0, "cropped": False,
                            "status": "stored", "reason": ""})
    catalog.write_catalog(path / CATALOG, records, {})
    store.seal(path, version_id="bench", shard_checksums=sums)
    return path


def timed(fn) -> float:
    """CPU seconds of this process (user + system: reads from the page cache are system time). On a shared,
    loaded machine this moves far less than wall time, which other processes' turns on the cores inflate."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1920, help="clips in the version (default 1920: 60 shards)")
    ap.add_argument("--shape", default="224x224", help="n_mels x n_frames (default AudioMNIST's 224x224)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each case per reader (median reported)")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-integrity-"))
    try:
        path = make_version(tmp, clips=args.clips, shape=shape, per_shard=32)
        shards = sum(p.stat().st_size for p in (path / store.ARRAY).rglob("*") if p.is_file())
        raw = args.clips * shape[0] * shape[1] * 4
        rows = np.arange(args.clips)
        eval_rows = rows[np.isin(rows % N_CLASSES, [3, 17, 29, 41, 58])]
        rng = np.random.default_rng(1)
        train_batches = [rng.choice(args.clips, 32, replace=False) for _ in range(100)]
        for _ in range(2):  # warm the page cache and the imports
            FeatureVersion(path).verify()
        cases = {
            "open + catalog": lambda reader: lambda: reader(path).catalog,
            "evaluate-like": lambda reader: (lambda v: lambda: [v.read(eval_rows[i:i + 64])
                                                                for i in range(0, len(eval_rows), 64)])(reader(path)),
            "train-like": lambda reader: (lambda v: lambda: [v.read(b) for b in train_batches])(reader(path)),
        }
        results: dict[str, dict[str, list[float]]] = {}
        for name, make in cases.items():
            for _ in range(args.repeat):
                for label, reader in (("sizes only", SizesOnlyReader), ("checked", FeatureVersion)):
                    fn = make(reader)
                    results.setdefault(name, {}).setdefault(label, []).append(timed(fn))
        for _ in range(args.repeat):
            for label, reader in (("sizes only", SizesOnlyReader), ("checked", FeatureVersion)):
                v = reader(path)
                v.read(rows)  # every shard checked (checked reader) or not (sizes only)
                results.setdefault("steady", {}).setdefault(label, []).append(
                    timed(lambda v=v: [v.read(b) for b in train_batches]))
            results.setdefault("verify()", {}).setdefault("checked", []).append(timed(FeatureVersion(path).verify))
        print(f"version: {args.clips} clips of {shape} float32 in {args.clips // 32} shards, blosc-lz4 "
              f"{shards / 2**20:.0f} MiB ({shards / raw:.0%} of raw); page cache warm; CPU seconds, median of {args.repeat}")
        print(f"{'case':16s} {'sizes only':>12s} {'checked':>12s} {'ratio':>8s}")
        base_eval = statistics.median(results["evaluate-like"]["sizes only"])
        for name, by in results.items():
            old = statistics.median(by["sizes only"]) if "sizes only" in by else None
            new = statistics.median(by["checked"])
            ratio = f"{new / old:7.2f}x" if old else f"{new / base_eval:7.2f}x of sizes-only evaluate-like"
            print(f"{name:16s} {(f'{old * 1000:9.1f} ms') if old else '':>12s} {new * 1000:9.1f} ms {ratio}")
        print(f"evaluate-like reads {len(eval_rows)} clips: "
              f"{statistics.median(results['evaluate-like']['checked']) / len(eval_rows) * 1000:.2f} ms/clip checked, "
              f"{base_eval / len(eval_rows) * 1000:.2f} ms/clip sizes only")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

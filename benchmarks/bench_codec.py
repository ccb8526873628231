"""Pick the store codec by measurement: bytes on disk and random one-clip reads.

Builds nothing from audio: it takes the log-mels of a built version (or of the
real AudioMNIST / ESC-50 samples, computed here) and writes them with each
codec into a sharded Zarr v3 array like the store's, then reads 300 random
clips one at a time.

    python benchmarks/bench_codec.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from siamese_audio.features import store
from siamese_audio.features.audio import load_resampled
from siamese_audio.features.config import preset
from siamese_audio.features.transform import LogMel, pad_offset, pad_to
from siamese_audio.manifests.datasets import scan_dataset


def features_of(dataset: str, root: Path, limit: int) -> np.ndarray:
    cfg = preset(dataset)
    scan = scan_dataset(dataset, root)
    extract = LogMel(cfg)
    out = []
    for clip in scan.clips[:limit]:
        y, _ = load_resampled(root / clip.source_path, target_sr=cfg.sample_rate)
        y = y[: cfg.n_samples]
        off = pad_offset(seed=0, clip_id=clip.clip_id, n=len(y), target=cfg.n_samples)
        out.append(extract(pad_to(y, target=cfg.n_samples, offset=off)))
    return np.stack(out)


def measure(data: np.ndarray, codec: str, tmp: Path, reads: int = 300) -> tuple[float, float, float]:
    import zarr
    from zarr.storage import LocalStore

    from siamese_audio.features.config import FeatureConfig

    path = tmp / codec
    n, m, f = data.shape
    cfg = FeatureConfig(name="bench", sample_rate=44100, n_samples=(f - 1) * 100, n_fft=2 * m + 2,
                        hop_length=100, n_mels=m)
    layout = store.StoreLayout(clips_per_shard=32, codec=codec)
    store.create_version(path, n_clips=n, config=cfg, layout=layout, attributes={}, plan={})
    t0 = time.perf_counter()
    for i, s in enumerate(range(0, n, 32)):
        store.write_shard(path, i, data[s : s + 32], 32, codec)
    write_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (path / store.ARRAY).rglob("*") if p.is_file())
    arr = zarr.open_array(store=LocalStore(path, read_only=True), path=store.ARRAY, mode="r")
    rows = np.random.default_rng(0).integers(0, n, reads)
    t0 = time.perf_counter()
    for r in rows:
        arr[int(r)]
    read_ms = (time.perf_counter() - t0) / reads * 1000
    return size / data.nbytes, read_ms, write_s / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args()
    for dataset, sub in (("audiomnist", "audiomnist"), ("esc50", "esc50")):
        root = args.data / sub
        if not root.is_dir():
            print(f"skip {dataset}: {root} absent")
            continue
        data = features_of(dataset, root, args.limit)
        tmp = Path(tempfile.mkdtemp())
        try:
            print(f"{dataset}: {data.shape[0]} clips of {data.shape[1:]} float32")
            for codec in store.CODECS:
                ratio, read_ms, write_ms = measure(data, codec, tmp)
                print(f"  {codec:10s} size {ratio:6.1%} of raw   random 1-clip read {read_ms:6.2f} ms"
                      f"   write {write_ms:5.2f} ms/clip")
        finally:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

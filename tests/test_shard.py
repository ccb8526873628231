"""Shards encoded by features.shard are byte-identical to zarr's own writes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from siamese_audio.features import store
from siamese_audio.features.config import FeatureConfig
from siamese_audio.features.shard import encode_shard

CFG = FeatureConfig(name="t", sample_rate=8000, n_samples=19 * 64, n_fft=128, hop_length=64, n_mels=16)


@pytest.mark.parametrize("codec", store.CODECS)
@pytest.mark.parametrize("case", ["full", "with-nan-clips", "partial-last", "all-nan"])
def test_encoded_shard_equals_zarrs_bytes(tmp_path, codec, case):
    rng = np.random.default_rng(0)
    n, per = 12, 8
    data = (rng.standard_normal((n, *CFG.shape)) * 10 - 40).astype(np.float32)
    data[:, :, :5] = -80.0  # compressible region, like padding
    shard_index, rows = (1, slice(8, 12)) if case == "partial-last" else (0, slice(0, 8))
    if case == "with-nan-clips":
        data[[2, 5]] = np.nan
    if case == "all-nan":
        data[:] = np.nan
    layout = store.StoreLayout(clips_per_shard=per, codec=codec)
    # zarr's own write
    ref = tmp_path / "ref"
    store.create_version(ref, n_clips=n, config=CFG, layout=layout, attributes={}, plan={})
    arr = zarr.open_array(store=LocalStore(ref), path=store.ARRAY, mode="r+")
    arr[rows] = data[rows]
    ref_file = store.shard_path(ref, shard_index)
    expected = ref_file.read_bytes() if ref_file.exists() else None
    ours = encode_shard(data[rows], chunks_per_shard=per, codec=codec)
    assert ours == expected
    # and what write_shard stores reads back through zarr
    mine = tmp_path / "mine"
    store.create_version(mine, n_clips=n, config=CFG, layout=layout, attributes={}, plan={})
    store.write_shard(mine, shard_index, data[rows], per, codec)
    back = zarr.open_array(store=LocalStore(mine), path=store.ARRAY, mode="r")[rows]
    np.testing.assert_array_equal(back, data[rows])


@pytest.mark.parametrize("codec", store.CODECS)
def test_fast_reader_equals_zarr_reads(tmp_path, codec):
    from siamese_audio.features import catalog
    from siamese_audio.features.store import open_version

    rng = np.random.default_rng(1)
    n, per = 13, 4
    data = (rng.standard_normal((n, *CFG.shape)) * 10 - 40).astype(np.float32)
    data[[1, 8, 9, 10, 11]] = np.nan  # a rejected clip, and a whole shard of them (no file)
    layout = store.StoreLayout(clips_per_shard=per, codec=codec)
    path = tmp_path / "v"
    store.create_version(path, n_clips=n, config=CFG, layout=layout,
                         attributes={"version_id": "v", "dataset": "audiomnist", "feature_config": CFG.to_dict(),
                                     "layout": layout.to_dict()}, plan={})
    sums = {i: store.write_shard(path, i, data[s : s + per], per, codec) for i, s in enumerate(range(0, n, per))}
    catalog.write_catalog(path / store.CATALOG, [], {})
    store.seal(path, version_id="v", shard_checksums=sums)
    v = open_version(path)
    rows = [12, 0, 1, 9, 5, 12, 3]
    via_zarr = v._array.get_orthogonal_selection((np.array(sorted(set(rows))),))
    np.testing.assert_array_equal(v.read(rows), via_zarr[[sorted(set(rows)).index(r) for r in rows]])
    np.testing.assert_array_equal(v.read(np.arange(n)), data)


def test_damaged_shard_index_is_named(tmp_path):
    from siamese_audio.errors import StoreError
    from siamese_audio.features import catalog
    from siamese_audio.features.store import open_version

    layout = store.StoreLayout(clips_per_shard=4, codec="blosc-lz4")
    path = tmp_path / "v"
    data = np.zeros((4, *CFG.shape), np.float32)
    store.create_version(path, n_clips=4, config=CFG, layout=layout,
                         attributes={"version_id": "v", "dataset": "audiomnist", "feature_config": CFG.to_dict(),
                                     "layout": layout.to_dict()}, plan={})
    sums = {0: store.write_shard(path, 0, data, 4, "blosc-lz4")}
    catalog.write_catalog(path / store.CATALOG, [], {})
    store.seal(path, version_id="v", shard_checksums=sums)
    shard = store.shard_path(path, 0)
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF
    shard.chmod(0o644)
    shard.write_bytes(bytes(raw))
    version = open_version(path)  # shards are checked when first read
    with pytest.raises(StoreError, match=r"altered \(logmel/c/0/0/0: content changed \(checksum differs\)"):
        version.read([0])

"""Issue 15, items 1-2: every reader refuses an altered or malformed version, naming the file, in one line.

Readers check a version cheaply: on open the seal's schema, the listing and sizes of every file and the
checksums of every file but the shards; each shard's checksum when it is first read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from siamese_audio.errors import StoreError
from siamese_audio.features import store
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import open_version
from siamese_audio.manifests.splits import Split, write_split
from tests.hostile import cli, flip, one_line_error, write_checkpoint

CLASSES = [f"{i:02d}" for i in range(1, 11)]
SPLIT = Split("audiomnist", "file", None, {"train": CLASSES[:5], "validation": CLASSES[5:7], "test": CLASSES[7:]})
TEST_SHARD = 4  # 4 clips a class, 8 clips a shard: rows 32-39 are test classes 09 and 10


@pytest.fixture
def v(tmp_path: Path) -> SimpleNamespace:
    path = make_synthetic_version(tmp_path / "store", classes=CLASSES, clips_per_class=4, shape=(16, 20), seed=1,
                                  clips_per_shard=8, codec="blosc-lz4")
    split_path = write_split(SPLIT, tmp_path / "split.parquet")
    checkpoint = write_checkpoint(tmp_path / "run" / "best.pt", open_version(path), SPLIT)
    return SimpleNamespace(path=path, split_path=split_path, checkpoint=checkpoint, out=tmp_path / "report")


def evaluate(capsys, v) -> tuple[int, str, str]:
    return cli(capsys, "evaluate", str(v.checkpoint), "--features", str(v.path), "--split", str(v.split_path),
               "--ways", "3", "--runs", "4", "--no-curve", "--no-baseline", "--device", "cpu", "--out", str(v.out))


def rewrite_seal(path: Path, change) -> None:
    seal_path = path / store.SEAL
    record = json.loads(seal_path.read_text())
    record = change(record)
    os.chmod(seal_path, 0o644)
    seal_path.write_text(json.dumps(record))


def test_an_intact_version_evaluates(v, capsys):
    code, out, err = evaluate(capsys, v)
    assert code == 0, err


@pytest.mark.parametrize("damage", ["one byte", "heavy"])
def test_evaluate_refuses_a_shard_altered_in_place(v, capsys, damage):
    shard = store.shard_path(v.path, TEST_SHARD)
    size = shard.stat().st_size
    if damage == "one byte":
        flip(shard, size // 2, 0x40)
    else:  # blosc headers of the first chunks zeroed: zarr or numcodecs would raise a RuntimeError
        flip(shard, 0)
        data = bytearray(shard.read_bytes())
        data[: size // 2] = bytes(size // 2)
        shard.write_bytes(bytes(data))
    assert shard.stat().st_size == size
    code, out, err = evaluate(capsys, v)
    line = one_line_error(err, "evaluate")
    assert code == 2 and out == ""
    assert f"logmel/c/{TEST_SHARD}/0/0: content changed (checksum differs)" in line
    assert not v.out.exists() or not any(v.out.rglob("report.json"))


def explain(capsys, v) -> tuple[int, str, str]:
    return cli(capsys, "explain", str(v.checkpoint), "--features", str(v.path), "--split", str(v.split_path),
               "--ways", "3", "--runs", "4", "--tasks", "1", "--min-size", "40", "--no-sonify", "--faithfulness",
               "none", "--device", "cpu", "--no-progress", "--out", str(v.out))


def test_explain_refuses_a_shard_altered_in_place(v, capsys):
    code, _, err = explain(capsys, v)
    assert code == 0, err
    flip(store.shard_path(v.path, TEST_SHARD), 300, 0x10)
    code, out, err = explain(capsys, v)
    assert code == 2 and f"logmel/c/{TEST_SHARD}/0/0: content changed" in one_line_error(err, "explain")


def test_reader_checks_each_shard_when_first_read(v):
    intact = open_version(v.path).read(np.arange(40))
    flip(store.shard_path(v.path, 1), 100)
    version = open_version(v.path)  # opening reads no shard
    np.testing.assert_array_equal(version.read([0, 20, 39]), intact[[0, 20, 39]])
    with pytest.raises(StoreError, match=r"logmel/c/1/0/0: content changed"):
        version.read([9])
    np.testing.assert_array_equal(version.read([0, 39]), intact[[0, 39]])  # other shards still read


def test_every_reader_refuses_a_catalog_altered_in_place(v, capsys):
    catalog = v.path / store.CATALOG
    size = catalog.stat().st_size
    flip(catalog, size // 2, 0x01)
    flip(catalog, size // 2 + 7, 0x02)
    assert catalog.stat().st_size == size
    with pytest.raises(StoreError, match=r"catalog.parquet: content changed"):
        open_version(v.path)
    code, _, err = evaluate(capsys, v)
    assert code == 2 and "catalog.parquet: content changed" in one_line_error(err, "evaluate")
    code, _, err = cli(capsys, "split-show", str(v.split_path), "--features", str(v.path))
    assert code == 2 and "catalog.parquet: content changed" in one_line_error(err, "split-show")
    code, _, err = cli(capsys, "train", "--features", str(v.path), "--split", str(v.split_path), "--out",
                       str(v.out.parent / "run2"), "--preset", "tiny", "--no-progress")
    assert code == 2 and "catalog.parquet" in one_line_error(err, "train")
    code, _, err = explain(capsys, v)
    assert code == 2 and "catalog.parquet: content changed" in one_line_error(err, "explain")


def test_a_file_the_seal_does_not_list_is_refused(v):
    extra = store.shard_path(v.path, 99)
    extra.parent.mkdir(parents=True)
    extra.write_bytes(store.shard_path(v.path, 0).read_bytes())
    with pytest.raises(StoreError, match=r"logmel/c/99/0/0: not part of the sealed version"):
        open_version(v.path)


def test_a_seal_that_forgets_a_shard_is_refused(v):
    rewrite_seal(v.path, lambda r: {**r, "files": {k: x for k, x in r["files"].items() if k != "logmel/c/2/0/0"}})
    with pytest.raises(StoreError, match=r"logmel/c/2/0/0: not part of the sealed version"):
        open_version(v.path)
    assert store.verify(v.path) == ["logmel/c/2/0/0: not part of the sealed version"]


@pytest.mark.parametrize("change,match", [
    (lambda r: {**r, "files": {}}, r"it does not list \['zarr.json', 'logmel/zarr.json', 'build.json', 'catalog"),
    (lambda r: {"version_id": r["version_id"]}, r"expected the keys \['files', 'version_id'\]; missing \['files'\]"),
    (lambda r: [r], "expected a JSON object, got list"),
    (lambda r: {**r, "files": {**r["files"], "../../etc/passwd": {"sha256": "0" * 64, "size": 1}}},
     "expected relative paths inside the version, got '../../etc/passwd'"),
    (lambda r: {**r, "files": {**r["files"], "catalog.parquet": {"sha256": "0" * 64, "size": "12"}}},
     "expected the size of 'catalog.parquet' to be a non-negative integer"),
    (lambda r: {**r, "files": {**r["files"], "zarr.json": {"sha256": "XYZ", "size": 1}}},
     "expected the sha256 of 'zarr.json' to be 64 lowercase hex digits"),
    (lambda r: {**r, "version_id": None}, "expected version_id to be a non-empty string"),
    (lambda r: {**r, "signed_by": "me"}, r"expected the keys .*; missing \[\], unknown \['signed_by'\]"),
])
def test_a_malformed_seal_is_refused_by_every_reader_in_one_line(v, capsys, change, match):
    rewrite_seal(v.path, change)
    for call in (open_version, store.verify):
        with pytest.raises(StoreError, match=f"SEAL.json: malformed seal: {match}"):
            call(v.path)
    for argv in (["verify", str(v.path)], ["split-show", str(v.split_path), "--features", str(v.path)]):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "malformed seal" in one_line_error(err, argv[0])
    code, _, err = evaluate(capsys, v)
    assert code == 2 and "malformed seal" in one_line_error(err, "evaluate")


def test_a_seal_that_is_not_json_is_refused(v, capsys):
    (v.path / store.SEAL).chmod(0o644)
    (v.path / store.SEAL).write_bytes(b"\xff\xfe{")
    code, _, err = cli(capsys, "verify", str(v.path))
    assert code == 2 and "SEAL.json: cannot read the seal" in one_line_error(err, "verify")


def test_the_store_docs_say_what_the_seal_protects_against_and_what_not():
    readme = (Path(__file__).resolve().parents[1] / "docs" / "store.md").read_text()
    section = readme[readme.index("**What the seal protects against, and what it does not.**"):]
    section = " ".join(section[: section.index("\n\n")].split())
    assert "a checksum, not a signature" in section and "recompute the seal" in section
    assert "--repair" in section and "split-show --features" in section

"""Issue 15, item 3: a damaged sealed version rebuilt says so and how to repair; ``build --repair`` repairs it."""

from __future__ import annotations

import json

import pytest

from siamese_audio.errors import StoreError
from siamese_audio.features import store
from siamese_audio.features.store import open_version
from tests.conftest import tree_bytes
from tests.hostile import cli, flip, one_line_error


@pytest.fixture
def built(audiomnist_dir, tmp_path, run_build):
    result = run_build("audiomnist", audiomnist_dir, tmp_path / "s")
    return result, tree_bytes(result.path)


def test_rebuilding_a_damaged_sealed_version_says_so_and_how_to_repair(built, audiomnist_dir, tmp_path, run_build):
    result, _ = built
    shard = store.shard_path(result.path, 1)
    shard.chmod(0o644)
    with open(shard, "ab") as f:
        f.write(b"\0")
    with pytest.raises(StoreError, match=r"is sealed but damaged \(logmel/c/1/0/0: \d+ bytes, the seal says \d+\)"
                                         r".*with --repair to rewrite the damaged files from the sources, "
                                         r"or delete .* and build again"):
        run_build("audiomnist", audiomnist_dir, tmp_path / "s")


def test_rebuild_checks_the_catalog_checksum_too(built, audiomnist_dir, tmp_path, run_build):
    result, _ = built
    flip(result.path / store.CATALOG, 200, 0x01)
    with pytest.raises(StoreError, match=r"sealed but damaged \(catalog.parquet: content changed"):
        run_build("audiomnist", audiomnist_dir, tmp_path / "s")


def test_repair_rewrites_every_kind_of_damage_byte_identical(built, audiomnist_dir, tmp_path, run_build):
    result, reference = built
    flip(store.shard_path(result.path, 0), 50)                     # same size: only checksums see it
    store.shard_path(result.path, 2).unlink()                       # a shard lost
    store.marker_path(result.path, 1).unlink()                      # a marker lost
    flip(result.path / store.CATALOG, 300)                          # the catalog
    flip(result.path / "logmel" / "zarr.json", 20, 0x01)            # array metadata
    repaired = run_build("audiomnist", audiomnist_dir, tmp_path / "s", repair=True)
    assert sorted(repaired.repaired) == sorted([
        "logmel/c/0/0/0: content changed (checksum differs)", "logmel/c/2/0/0: missing",
        "_batches/000001.json: missing", "catalog.parquet: content changed (checksum differs)",
        "logmel/zarr.json: content changed (checksum differs)"])
    assert not repaired.already_sealed and repaired.version_id == result.version_id
    assert tree_bytes(result.path) == reference
    assert open_version(result.path).verify() == []
    again = run_build("audiomnist", audiomnist_dir, tmp_path / "s", repair=True)
    assert again.already_sealed and again.repaired == []


def test_repair_of_a_malformed_seal_writes_every_batch_again(built, audiomnist_dir, tmp_path, run_build):
    result, reference = built
    (result.path / store.SEAL).chmod(0o644)
    (result.path / store.SEAL).write_text(json.dumps({"version_id": result.version_id, "files": {}}))
    with pytest.raises(StoreError, match="sealed but damaged .*malformed seal"):
        run_build("audiomnist", audiomnist_dir, tmp_path / "s")
    repaired = run_build("audiomnist", audiomnist_dir, tmp_path / "s", repair=True)
    assert "malformed seal" in repaired.repaired[0]
    assert tree_bytes(result.path) == reference


def test_cli_build_repair(built, audiomnist_dir, tmp_path, scheduler_address, capsys):
    result, reference = built
    flip(store.shard_path(result.path, 1), 10)
    args = ["build", "audiomnist", str(audiomnist_dir), "--store", str(tmp_path / "s"), "--scheduler",
            scheduler_address, "--clips-per-shard", "4", "--no-progress"]
    code, out, err = cli(capsys, *args)  # a same-size change in a shard: found by readers, not by a plain rebuild
    assert code == 0 and "already sealed" in out
    with pytest.raises(StoreError, match="logmel/c/1/0/0: content changed"):
        open_version(result.path).read([4])
    code, out, err = cli(capsys, *args, "--repair", "--json")
    assert code == 0, err
    assert json.loads(out)["repaired"] == ["logmel/c/1/0/0: content changed (checksum differs)"]
    assert tree_bytes(result.path) == reference
    store.shard_path(result.path, 1).chmod(0o644)
    with open(store.shard_path(result.path, 1), "ab") as f:
        f.write(b"x")
    code, out, err = cli(capsys, *args)
    assert code == 2 and "--repair" in one_line_error(err, "build")

"""Issue 24: outputs that cannot damage what they read, locks on output folders, bounded sizes and side files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from siamese_audio.errors import StoreError
from siamese_audio.features import store
from siamese_audio.features.store import StoreLayout, open_version
from siamese_audio.files import VERSION_MARKERS, version_containing
from siamese_audio.manifests.dummies import make_audiomnist
from siamese_audio.pipeline.build import BuildConfig, build
from tests.conftest import tree_bytes
from tests.hostile import cli, one_line_error


@pytest.fixture(scope="module")
def sealed(tmp_path_factory, scheduler_address):
    """One tiny sealed AudioMNIST version (built once for this module) and its bytes."""
    root = tmp_path_factory.mktemp("safety")
    source = make_audiomnist(root / "audiomnist", speakers=("01", "02", "03"), digits=3, reps=2)
    result = build(BuildConfig(dataset="audiomnist", source_dir=source, store_root=root / "store", progress=False,
                               scheduler=scheduler_address, layout=StoreLayout(clips_per_shard=4)))
    return result.path, source, tree_bytes(result.path)


def _untouched(path: Path, reference: dict[str, bytes]) -> None:
    assert tree_bytes(path) == reference
    assert store.verify(path) == []


def test_version_markers_are_the_layouts_plan_and_seal():
    assert set(VERSION_MARKERS) == {store.PLAN, store.SEAL}


def test_version_containing_sees_versions_through_links_and_unbuilt_paths(sealed, tmp_path):
    path, _, _ = sealed
    assert version_containing(path / "a" / "b" / "c.parquet") == path
    assert version_containing(path) == path
    link = tmp_path / "link"
    link.symlink_to(path)
    assert version_containing(link / "run") == path
    assert version_containing(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("command", [
    ["split", "audiomnist", "--scheme", "report", "--out", "{V}/catalog.parquet"],
    ["split", "audiomnist", "--scheme", "report", "--out", "{V}/SEAL.json"],
    ["train", "--features", "{V}", "--split", "x.parquet", "--out", "{V}/myrun"],
    ["train", "--resume", "{V}/myrun"],
    ["evaluate", "ck.pt", "--features", "{V}", "--split", "x.parquet", "--out", "{V}/report"],
    ["explain", "ck.pt", "--features", "{V}", "--split", "x.parquet", "--out", "{V}/explained"],
    ["tune", "--features", "{V}", "--split", "x.parquet", "--out", "{V}/study"],
    ["demo", "--out", "{V}/demo"],
    ["download", "audiomnist", "--to", "{V}/data"],
    ["build", "audiomnist", "{SRC}", "--store", "{V}/inner", "--no-progress"],
])
def test_every_writing_command_refuses_an_output_inside_a_version(sealed, capsys, command):
    path, source, reference = sealed
    argv = [a.replace("{V}", str(path)).replace("{SRC}", str(source)) for a in command]
    code, out, err = cli(capsys, *argv)
    line = one_line_error(err, argv[0])
    assert code == 2 and f"inside feature version {path}" in line and "(sealed)" in line, line
    _untouched(path, reference)


def test_an_unsealed_version_is_refused_too(tmp_path, capsys):
    version = tmp_path / "store" / "audiomnist" / "abc"
    version.mkdir(parents=True)
    (version / store.PLAN).write_text("{}")
    code, _, err = cli(capsys, "split", "audiomnist", "--scheme", "report", "--out", str(version / "s.parquet"))
    assert code == 2 and "(being built)" in one_line_error(err, "split")
    assert sorted(p.name for p in version.iterdir()) == [store.PLAN]


def test_repair_never_deletes_files_that_do_not_belong_and_names_them(sealed, scheduler_address, tmp_path):
    path, source, reference = sealed
    foreign = path / "myrun"
    foreign.mkdir()
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png"):
        (foreign / name).write_bytes(b"the run's own bytes")
    try:
        cfg = BuildConfig(dataset="audiomnist", source_dir=source, store_root=path.parents[1], progress=False,
                          scheduler=scheduler_address, layout=StoreLayout(clips_per_shard=4), repair=True)
        with pytest.raises(StoreError, match=r"cannot repair .* holds 4 \('myrun/best.pt', 'myrun/curves.png', "
                                             r"'myrun/last.pt', 'myrun/metrics.csv'\) files that are not part"
                                             r".*Nothing was changed"):
            build(cfg)
        assert all((foreign / n).read_bytes() == b"the run's own bytes" for n in os.listdir(foreign))
        assert store.is_sealed(path)
    finally:
        for name in os.listdir(foreign):
            (foreign / name).unlink()
        foreign.rmdir()
    _untouched(path, reference)
    open_version(path)

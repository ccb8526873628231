"""Shared fixtures: generated datasets in both layouts, a Dask cluster, real samples if present."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from siamese_audio.features.store import StoreLayout
from siamese_audio.manifests.dummies import make_audiomnist, make_esc50
from siamese_audio.pipeline.build import BuildConfig, build

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real AudioMNIST / ESC-50 samples); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a user's clone does not have it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def scheduler_address():
    """One local Dask cluster (2 worker processes) shared by the build tests."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def audiomnist_dir(tmp_path: Path) -> Path:
    return make_audiomnist(tmp_path / "audiomnist", speakers=("01", "02", "03"), digits=2, reps=2)


@pytest.fixture
def esc50_dir(tmp_path: Path) -> Path:
    return make_esc50(tmp_path / "esc50", classes=("dog", "rain", "siren"), clips_per_class=2, seconds=2.0)


@pytest.fixture
def run_build(scheduler_address):
    """Build with the shared cluster (or local workers when ``workers`` is given)."""
    def _run(dataset: str, source: Path, store_root: Path, *, workers: int | None = None,
             clips_per_shard: int = 4, **kw):
        cfg = BuildConfig(
            dataset=dataset, source_dir=source, store_root=store_root, progress=False,
            scheduler=None if workers else scheduler_address, workers=workers,
            layout=StoreLayout(clips_per_shard=clips_per_shard), **kw,
        )
        return build(cfg)
    return _run


def tree_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a directory, relative path → bytes (to compare stores byte for byte)."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}

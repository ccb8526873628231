"""The installed package, as a user meets it: one namespace, no top-level stage modules, layers that hold."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("manifests", "features", "pipeline", "training", "evaluation")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A non-editable install (``pip install .``, no dependencies) into its own folder.

    It installs from a copy of the checkout in a temporary folder, so the build's ``build/`` and
    ``*.egg-info`` land there and ``git status`` stays clean after ``make test``.
    """
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is needed to build the package without network access")
    site = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "siamese-audio"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "demo-output", "bench-output"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True)
    return site


@pytest.mark.slow
def test_a_plain_install_holds_one_namespace(installed):
    top = {p.name for p in installed.iterdir()} - {"bin"}
    assert "siamese_audio" in top
    assert not top & set(STAGES), f"top-level stage modules installed: {sorted(top & set(STAGES))}"
    for stage in STAGES:
        assert (installed / "siamese_audio" / stage / "__init__.py").is_file()


@pytest.mark.slow
def test_the_cli_runs_beside_a_users_own_features_and_training(installed, tmp_path):
    user = tmp_path / "project"
    (user / "training").mkdir(parents=True)
    (user / "features.py").write_text("raise ImportError('the user\\'s features.py was imported')\n")
    (user / "training" / "__init__.py").write_text("raise ImportError('the user\\'s training/ was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    run = subprocess.run([str(installed / "bin" / "siamese-audio"), "split", "esc50", "--scheme", "report",
                          "--out", "report.parquet", "--json"], cwd=user, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (user / "report.parquet").is_file()
    where = subprocess.run(
        [sys.executable, "-c", "import siamese_audio.features.store as s, siamese_audio.training.config as t, "
                               "siamese_audio.cli as c; print(s.__file__); print(t.__file__); print(c.__file__)"],
        cwd=user, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(installed)) for line in where.stdout.split()), where.stdout


def test_no_module_imports_a_top_level_stage_name():
    """Every import is ``siamese_audio.*``: no ``import features`` or ``from training ...`` anywhere."""
    import re

    pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(STAGES)})\b", re.MULTILINE)
    offenders = []
    for path in ROOT.rglob("*.py"):
        if any(part in (".venv", "build", "demo-output") for part in path.relative_to(ROOT).parts):
            continue
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in pattern.finditer(path.read_text())]
    assert not offenders, offenders

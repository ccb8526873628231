"""The CPU presets at their datasets' input sizes: plumbing on generated audio and on the real samples.

Whether the recipe learns is tested in test_training_recipes.py (generated textures) and measured on
the real ESC-50 by benchmarks/bench_accuracy.py; the full AudioMNIST is not available to this
project, so cpu-audiomnist is only checked here, on generated speakers and the real speakers in
../shared/data.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from siamese_audio.features.store import open_version
from siamese_audio.manifests.dummies import make_audiomnist
from siamese_audio.manifests.splits import make_random_split, write_split
from siamese_audio.training.checkpoint import load_checkpoint, load_embedder
from siamese_audio.training.config import check_compatible, preset
from siamese_audio.training.data import input_stats, open_training_inputs
from siamese_audio.training.loop import fit, run_data_from_inputs
from siamese_audio.training.model import build_model

torch.set_num_threads(2)


@pytest.mark.parametrize("name, shape", [("cpu-esc50", (128, 431)), ("cpu-audiomnist", (224, 224))])
def test_cpu_presets_fit_their_feature_presets(name, shape):
    model_cfg, train_cfg = preset(name)
    check_compatible(model_cfg, train_cfg, shape)
    model = build_model(model_cfg, shape, seed=0).eval()
    with torch.no_grad():
        assert model.embed(torch.randn(2, *shape)).shape == (2, model_cfg.fc_units)
        assert model.embed(torch.randn(2, shape[0], train_cfg.crop_frames)).shape == (2, model_cfg.fc_units)
    assert model.input_mean.shape == (shape[0],)  # per-band statistics
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


@pytest.mark.slow
def test_cpu_audiomnist_trains_and_evaluates_at_224_by_224(tmp_path, run_build):
    speakers = [f"{i:02d}" for i in range(1, 13)]
    source = make_audiomnist(tmp_path / "am", speakers=speakers, digits=4, reps=2, seed=3)
    built = run_build("audiomnist", source, tmp_path / "store", clips_per_shard=16)
    split = make_random_split("audiomnist", seed=0, sizes=(6, 3, 3), classes=speakers)
    split_path = write_split(split, tmp_path / "split.parquet")
    model_cfg, train_cfg = preset("cpu-audiomnist")
    train_cfg = dataclasses.replace(train_cfg, classes_per_batch=6, max_epochs=4, warmup_epochs=1, eval_every=2,
                                    eval_tasks=30, ways=3, max_minutes=0.0)
    data = run_data_from_inputs(open_training_inputs(built.path, split_path))
    result = fit(data, model_cfg, train_cfg, tmp_path / "run", device="cpu", progress=False, resident=True)
    assert result.stopped == "max_epochs" and len(result.history) == 2
    assert np.isfinite([r.train_loss for r in result.history]).all()
    saved = load_checkpoint(result.best_checkpoint)
    assert saved["model_config"]["time_pool"] == 2 and saved["model_state"]["input_mean"].shape == (224,)
    embedder, _ = load_embedder(result.best_checkpoint, "cpu")
    version = open_version(built.path)
    x = version.read(np.arange(4))
    assert np.isfinite(embedder.embed(x)).all()


@pytest.mark.realdata
def test_cpu_audiomnist_takes_the_real_speakers(shared_data, tmp_path, run_build):
    built = run_build("audiomnist", shared_data / "audiomnist", tmp_path / "s", clips_per_shard=32)
    version = open_version(built.path)
    stored = version.stored()
    rows = {c: stored.loc[stored["class"] == c, "row"].to_numpy() for c in ("04", "27")}
    mean, std = input_stats(version.read, rows, seed=0, per_band=True)
    assert mean.shape == (224,) and -100 < mean.min() < mean.max() < 0 and (std > 0).all()
    model_cfg, _ = preset("cpu-audiomnist")
    model = build_model(model_cfg, version.shape, seed=0)
    model.set_input_stats(mean, std)
    model.eval()
    with torch.no_grad():
        z = model.embed(torch.from_numpy(version.read(np.concatenate(list(rows.values())))))
    assert z.shape == (100, model_cfg.fc_units) and torch.isfinite(z).all()
    standardised = model.normalize(torch.from_numpy(version.read(rows["04"][:5])))
    assert abs(float(standardised.mean())) < 2.0  # the real clips land near the statistics' scale

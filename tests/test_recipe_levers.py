"""The CPU recipe's levers: dB-domain augmentations, weight averaging, centring and test-time crops.

Each augmentation is seeded and leaves the batch it is given (and so the store) alone; the
weight average, the centring vector and the test-time crops come from training classes only,
travel in the checkpoint, and are what evaluation and explanations embed with.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from siamese_audio.errors import TrainingError
from siamese_audio.training.augment import (
    augment,
    augment_levels,
    mix_power,
    shift_bands,
    stretched_crop,
    with_views,
)
from siamese_audio.training.averaging import WeightAverage, center_rows, embedding_mean
from siamese_audio.training.checkpoint import load_checkpoint, load_embedder
from siamese_audio.training.config import check_compatible
from siamese_audio.training.embedder import autocast_context
from siamese_audio.training.loop import RunData, fit
from siamese_audio.training.model import build_model
from siamese_audio.training.sampler import ClassBatch
from tests.test_training_recipes import MODEL as PLAIN_MODEL
from tests.test_training_recipes import SHAPE, texture_data
from tests.test_training_recipes import TRAIN as PLAIN_TRAIN

torch.set_num_threads(2)

#: The tests' CPU recipe with the levers on (the presets keep them off: none won on validation classes). Time
#: stretch, band shifts and tilts change the generated classes (a modulation rate x a harmonic spacing), so
#: only gain and mixing are on for training here.
MODEL = dataclasses.replace(PLAIN_MODEL, embed_center=True, tta_crops=3, tta_frames=40)
TRAIN = dataclasses.replace(PLAIN_TRAIN, ema_decay=0.995, aux_weight=0.5, center_clips=128, mix_prob=0.5,
                            mix_db=(5.0, 20.0))

LEVELS = dataclasses.replace(TRAIN, mix_prob=0.6, mix_db=(3.0, 12.0), gain_db=4.0, tilt_db=4.0)


# ----------------------------------------------------------------------------- augmentations


def test_power_mix_adds_powers_not_decibels():
    x = torch.full((1, 2, 3), -20.0)
    equal = mix_power(x, x.clone(), torch.zeros(1))
    np.testing.assert_allclose(equal.numpy(), -20.0 + 10 * math.log10(2), atol=1e-5)
    quiet = mix_power(x, x.clone(), torch.tensor([60.0]))  # 60 dB below: barely changes anything
    np.testing.assert_allclose(quiet.numpy(), -20.0, atol=1e-5)
    loud = mix_power(torch.full((1, 1, 1), -1e3), torch.full((1, 1, 1), 0.0), torch.tensor([10.0]))
    assert torch.isfinite(loud).all() and float(loud) == pytest.approx(-10.0, abs=1e-4)


def test_level_augmentations_are_seeded_and_mix_only_other_classes():
    x = torch.randn(8, 16, 20) * 5 - 40
    labels = np.repeat(np.arange(4), 2)
    before = x.clone()
    a = augment_levels(x, labels, LEVELS, np.random.default_rng(1))
    b = augment_levels(x, labels, LEVELS, np.random.default_rng(1))
    c = augment_levels(x, labels, LEVELS, np.random.default_rng(2))
    assert torch.equal(x, before) and torch.equal(a, b) and not torch.equal(a, c)
    # mixing alone: every changed clip is its own power plus a quieter clip of another class
    only_mix = dataclasses.replace(LEVELS, mix_prob=1.0, gain_db=0.0, tilt_db=0.0)
    mixed = augment_levels(x, labels, only_mix, np.random.default_rng(3))
    for i in range(8):
        assert (mixed[i] >= x[i] - 1e-4).all()  # adding power never lowers a bin
        own = [j for j in range(8) if labels[j] == labels[i] and j != i]
        gains = [float((mixed[i] - mix_power(x[i:i + 1], x[j:j + 1], torch.zeros(1))[0]).abs().max()) for j in own]
        assert all(g > 1e-3 for g in gains)  # not a same-class partner at 0 dB
    # gain and tilt alone: a per-clip linear ramp over bands, constant over time
    ramp = augment_levels(x, labels, dataclasses.replace(LEVELS, mix_prob=0.0), np.random.default_rng(4)) - x
    assert torch.allclose(ramp, ramp[:, :, :1].expand_as(ramp), atol=1e-4)
    steps = ramp[:, 1:, 0] - ramp[:, :-1, 0]
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-4)
    assert float(ramp.abs().max()) <= LEVELS.gain_db + LEVELS.tilt_db + 1e-4


def test_stretched_crops_and_band_shifts_are_seeded_windows_of_their_own_clip():
    x = torch.arange(3 * 4 * 30, dtype=torch.float32).reshape(3, 4, 30)
    a = stretched_crop(x, 10, 0.3, np.random.default_rng(0))
    assert a.shape == (3, 4, 10) and torch.equal(a, stretched_crop(x, 10, 0.3, np.random.default_rng(0)))
    for i in range(3):  # values stay inside the clip's own range, time still increasing
        assert x[i].min() <= a[i].min() and a[i].max() <= x[i].max() and (a[i, :, 1:] > a[i, :, :-1]).all()
    shifted = shift_bands(x, 2, np.random.default_rng(5))
    for i in range(3):
        rows = [next(k for k in range(4) if torch.equal(shifted[i, b], x[i, k])) for b in range(4)]
        assert rows == sorted(rows) and max(rows) - min(rows) <= 3  # a shift with the edge band repeated
    config = dataclasses.replace(TRAIN, stretch=0.2, shift_bands=2)
    assert torch.equal(augment(x, config, np.random.default_rng(7)), augment(x, config, np.random.default_rng(7)))


def test_views_repeat_each_clip_next_to_itself_and_are_augmented_apart():
    x = torch.arange(4 * 4 * 30, dtype=torch.float32).reshape(4, 4, 30)
    batch = ClassBatch(rows=np.array([7, 3, 9, 1]), labels=np.array([0, 0, 1, 1]), classes=np.array([5, 5, 2, 2]))
    before = x.clone()
    viewed, vbatch = with_views(x, batch, 3)
    assert viewed.shape == (12, 4, 30) and torch.equal(x, before)
    assert vbatch.rows.tolist() == [7, 7, 7, 3, 3, 3, 9, 9, 9, 1, 1, 1]
    assert vbatch.labels.tolist() == [0] * 6 + [1] * 6 and vbatch.classes.tolist() == [5] * 6 + [2] * 6
    for i in range(12):
        assert torch.equal(viewed[i], x[i // 3])
    cropped = augment(viewed, TRAIN, np.random.default_rng(0))  # each copy its own crop and masks
    assert not torch.equal(cropped[0], cropped[1]) or not torch.equal(cropped[1], cropped[2])
    assert with_views(x, batch, 1) == (x, batch)


def test_views_and_the_instance_term_train_seeded_and_are_refused_where_they_cannot_work(tmp_path):
    data, _ = texture_data()
    config = dataclasses.replace(PLAIN_TRAIN, max_epochs=3, eval_every=3, eval_tasks=20, clips_per_class=2, views=2,
                                 instance_weight=0.5)
    runs = [fit(data, PLAIN_MODEL, config, tmp_path / name, device="cpu", progress=False) for name in ("a", "b")]
    first, second = (load_checkpoint(tmp_path / name / "last.pt") for name in ("a", "b"))
    assert first["train_config"]["views"] == 2 and first["train_config"]["instance_weight"] == 0.5
    for name, tensor in first["model_state"].items():
        assert torch.equal(tensor, second["model_state"][name]), name
    assert runs[0].history[-1].train_loss == runs[1].history[-1].train_loss
    plain = fit(data, PLAIN_MODEL, dataclasses.replace(config, views=1, instance_weight=0.0), tmp_path / "plain",
                device="cpu", progress=False)
    assert plain.history[-1].train_loss != runs[0].history[-1].train_loss
    with pytest.raises(TrainingError, match="set batch = 'classes'"):
        dataclasses.replace(PLAIN_TRAIN, batch="pairs", loss="bce", views=2)
    with pytest.raises(TrainingError, match="set views >= 2"):
        dataclasses.replace(PLAIN_TRAIN, instance_weight=0.5)
    with pytest.raises(TrainingError, match="views"):
        dataclasses.replace(PLAIN_TRAIN, views=0)


def test_recipe_options_that_cannot_work_are_refused():
    with pytest.raises(TrainingError, match="stretch = 0.1 resamples the crop's window"):
        dataclasses.replace(TRAIN, crop_frames=0, stretch=0.1)
    with pytest.raises(TrainingError, match="expected mix_db to be two finite numbers"):
        dataclasses.replace(TRAIN, mix_db=(10.0, 1.0))
    with pytest.raises(TrainingError, match="tta_crops = 3 needs tta_frames"):
        dataclasses.replace(MODEL, tta_crops=3, tta_frames=0)
    with pytest.raises(TrainingError, match="Expected tta_frames between"):
        check_compatible(dataclasses.replace(MODEL, tta_frames=SHAPE[1] + 1), TRAIN, SHAPE)
    with pytest.raises(TrainingError, match="centring needs both"):
        check_compatible(dataclasses.replace(MODEL, embed_center=False), TRAIN, SHAPE)
    with pytest.raises(TrainingError, match="aux_weight = 0.5 trains a classifier"):
        check_compatible(dataclasses.replace(MODEL, head="difference"),
                         dataclasses.replace(TRAIN, batch="pairs", loss="bce", aux_weight=0.5), SHAPE)


def test_bf16_autocast_runs_on_the_cpu_only_when_asked():
    cpu = torch.device("cpu")
    with autocast_context(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast_context(cpu, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_channels_last_training_is_seeded_and_matches_contiguous_weights(tmp_path):
    """A speed option only: the same seed gives the same weights, and (to float rounding) those of the default."""
    data, _ = texture_data()
    config = dataclasses.replace(PLAIN_TRAIN, max_epochs=3, eval_every=3, eval_tasks=20)
    fast = dataclasses.replace(config, channels_last=True)
    runs = [fit(data, PLAIN_MODEL, c, tmp_path / name, device="cpu", progress=False)
            for name, c in (("a", fast), ("b", fast), ("plain", config))]
    states = [load_checkpoint(tmp_path / name / "last.pt")["model_state"] for name in ("a", "b", "plain")]
    assert load_checkpoint(runs[0].best_checkpoint)["train_config"]["channels_last"] is True
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name
        if torch.is_floating_point(tensor):
            np.testing.assert_allclose(tensor.numpy(), states[2][name].numpy(), rtol=1e-3, atol=1e-4, err_msg=name)
    with pytest.raises(TrainingError, match="channels_last"):
        dataclasses.replace(config, channels_last="yes")


# ----------------------------------------------------------------------------- averaging, centring, crops


def test_weight_average_follows_its_formula():
    model = build_model(MODEL, SHAPE, seed=0)
    average = WeightAverage(model, 0.5)
    start = {k: v.clone() for k, v in average.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(model)  # d = min(0.5, 2 / 11)
    d = 2 / 11
    for name, p in model.named_parameters():
        np.testing.assert_allclose(average.model.state_dict()[name].numpy(),
                                   (d * start[name] + (1 - d) * p.detach()).numpy(), rtol=1e-6, atol=1e-6)
    assert all(not p.requires_grad for p in average.model.parameters())


def test_average_centring_and_crops_come_from_training_classes_and_travel_in_the_checkpoint(tmp_path):
    data, _ = texture_data()
    x = data.read(np.arange(64 * 8))
    x[np.concatenate(list(data.val_rows.values()))] += 50.0  # validation classes far off: must not count
    shifted = RunData(data.train_rows, data.val_rows, read=lambda r: x[np.asarray(r)], shape=SHAPE)
    config = dataclasses.replace(TRAIN, max_epochs=6, eval_every=6, eval_tasks=20, center_clips=64)
    result = fit(shifted, MODEL, config, tmp_path / "run", device="cpu", progress=False)
    best, last = load_checkpoint(result.best_checkpoint), load_checkpoint(tmp_path / "run" / "last.pt")
    assert best["model_config"]["tta_crops"] == MODEL.tta_crops and best["model_config"]["embed_center"]
    # best.pt holds the averaged weights (last.pt's ema_state), not the raw ones
    assert result.best_epoch == 6
    for name, tensor in best["model_state"].items():
        if torch.is_floating_point(tensor) and name != "embed_mean":
            assert torch.equal(tensor, last["ema_state"]["model_state"][name]), name
    assert any(not torch.equal(best["model_state"][n], last["model_state"][n]) for n in best["model_state"])
    embedder, _ = load_embedder(result.best_checkpoint, "cpu")
    rows = center_rows(shifted.train_rows, 64, config.seed)
    assert set(rows.tolist()) <= set(np.concatenate(list(shifted.train_rows.values())).tolist())
    expected_mean = embedding_mean(embedder.model, shifted.read, rows, torch.device("cpu"))
    np.testing.assert_allclose(best["model_state"]["embed_mean"].numpy(), expected_mean.numpy(), rtol=1e-4,
                               atol=1e-5)
    # evaluation embeds with the crops and the centring: the mean over evenly spaced windows, minus the mean
    clip = x[:2]
    model = embedder.model.eval()
    with torch.no_grad():
        h = model.normalize(torch.from_numpy(clip))
        starts = np.linspace(0, SHAPE[1] - MODEL.tta_frames, MODEL.tta_crops).round().astype(int)
        manual = torch.stack([model.encoder(h[..., s:s + MODEL.tta_frames]) for s in starts]).mean(0)
        manual = manual - best["model_state"]["embed_mean"]
    np.testing.assert_allclose(embedder.embed(clip), manual.numpy(), rtol=1e-4, atol=1e-5)


def test_an_averaged_run_resumes_to_the_same_weights(tmp_path):
    data, _ = texture_data()
    config = dataclasses.replace(TRAIN, max_epochs=6, eval_every=3, eval_tasks=20)
    whole = fit(data, MODEL, config, tmp_path / "whole", device="cpu", progress=False)
    class Stop(Exception):
        pass

    def kill(epoch):
        if epoch == 3:  # right after the first validation wrote last.pt
            raise Stop

    with pytest.raises(Stop):
        fit(data, MODEL, config, tmp_path / "part", device="cpu", progress=False, on_epoch=kill)
    resumed = fit(data, MODEL, config, tmp_path / "part", device="cpu", progress=False, resume=True)
    assert [r.val_accuracy for r in resumed.history] == [r.val_accuracy for r in whole.history]
    a, b = load_checkpoint(whole.best_checkpoint), load_checkpoint(resumed.best_checkpoint)
    for name in a["model_state"]:
        torch.testing.assert_close(a["model_state"][name], b["model_state"][name])


class _ByHand:
    """The crops-then-centring embedding written out by hand, for comparison with the checkpoint's own."""

    def __init__(self, model, frames, crops):
        self.model, self.frames, self.crops = model.eval(), frames, crops

    def embed(self, x):
        with torch.no_grad():
            h = self.model.normalize(torch.from_numpy(np.asarray(x, dtype=np.float32)))
            starts = np.linspace(0, h.shape[-1] - self.frames, self.crops).round().astype(int)
            z = torch.stack([self.model.encoder(h[..., s:s + self.frames]) for s in starts]).mean(0)
            return (z - self.model.embed_mean).numpy()

    def similarity(self, a, b):
        a, b = torch.from_numpy(a), torch.from_numpy(b)
        return torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy()


def test_evaluation_scores_with_the_checkpoints_crops_and_centring(tmp_path):
    from siamese_audio.evaluation.evaluator import evaluate_one_shot

    data, test = texture_data()
    config = dataclasses.replace(TRAIN, max_epochs=4, eval_every=4, eval_tasks=20, center_clips=64)
    result = fit(data, MODEL, config, tmp_path / "run", device="cpu", progress=False)
    embedder, _ = load_embedder(result.best_checkpoint, "cpu")
    by_hand = _ByHand(embedder.model, MODEL.tta_frames, MODEL.tta_crops)
    ours = evaluate_one_shot(embedder, read=data.read, class_rows=test, ways=4, runs=20, seed=1)
    theirs = evaluate_one_shot(by_hand, read=data.read, class_rows=test, ways=4, runs=20, seed=1)
    assert ours.accuracy == theirs.accuracy
    plain = _ByHand(embedder.model, SHAPE[1], 1)  # no crops, and no centring either: a different embedding
    plain.embed = lambda x: embedder.model.encoder(embedder.model.normalize(torch.from_numpy(x))).detach().numpy()
    assert not np.allclose(embedder.embed(data.read(np.arange(4))), plain.embed(data.read(np.arange(4))))

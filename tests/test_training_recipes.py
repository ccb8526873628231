"""The CPU recipes: class batches, every-pair losses, augmentation, per-band statistics, schedule, time budget."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from siamese_audio.cli import main
from siamese_audio.cli.train import budget_hint
from siamese_audio.errors import TrainingError
from siamese_audio.evaluation.baseline import RawCosineEmbedder
from siamese_audio.evaluation.evaluator import evaluate_one_shot
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import open_version
from siamese_audio.manifests.splits import make_random_split, write_split
from siamese_audio.training.augment import augment, random_crop, spec_masks
from siamese_audio.training.checkpoint import load_checkpoint, load_embedder
from siamese_audio.training.config import ModelConfig, TrainConfig, check_compatible, preset
from siamese_audio.training.data import input_stats, open_training_inputs
from siamese_audio.training.loop import RunData, fit, run_data_from_inputs
from siamese_audio.training.losses import batch_loss
from siamese_audio.training.model import build_model
from siamese_audio.training.sampler import sample_class_batch
from siamese_audio.training.schedule import learning_rate

torch.set_num_threads(2)

CPU_MODEL, CPU_TRAIN = preset("cpu-esc50")
SHAPE = (16, 48)
#: The CPU recipe at the test's input size: no time pooling on 48 frames, smaller batches and windows.
MODEL = dataclasses.replace(CPU_MODEL, conv_filters=(16, 32, 32, 32), time_pool=1, fc_units=32)
TRAIN = dataclasses.replace(CPU_TRAIN, classes_per_batch=16, clips_per_class=4, max_epochs=60, warmup_epochs=5,
                            eval_every=30, eval_tasks=100, max_minutes=0.0, crop_frames=32, freq_mask_bands=2,
                            time_mask_frames=4, lr=3e-3, ways=4)


def texture_data(*, clips=8, seed=0, shuffle_train_labels=False) -> tuple[RunData, dict]:
    """Spectrograms whose class is a texture (harmonic spacing x modulation rate) at a random offset and phase,
    over a loud random spectrum of each clip's own.

    64 classes (8 spacings x 8 rates): 40 train, 8 validate, 16 test, drawn at random, so the test classes
    are new combinations. Raw cosine similarity mostly sees each clip's own background (near chance); a
    network that standardises bands and pools over time can learn the two factors and recognise unseen pairs.

    Returns
    -------
    data : RunData
    test_rows : dict
        The test classes (never seen in training), class -> rows.
    """
    rng = np.random.default_rng(seed)
    n_mels, n_frames = SHAPE
    classes = [(spacing, rate) for spacing in range(2, 10) for rate in range(2, 10)]
    x = np.empty((len(classes) * clips, n_mels, n_frames), dtype=np.float32)
    bands, frames = np.arange(n_mels)[:, None], np.arange(n_frames)[None, :]
    for c, (spacing, rate) in enumerate(classes):
        for k in range(clips):
            offset, phase = rng.integers(0, spacing), rng.integers(0, 2 * rate)
            texture = (((bands - offset) % spacing) == 0) & ((((frames + phase) // rate) % 2) == 0)
            background = rng.normal(0, 4, size=(n_mels, 1)) + rng.normal(0, 1, size=(n_mels, n_frames)) - 40
            x[c * clips + k] = background + 8.0 * texture
    rows = {f"s{s}r{r}": np.arange(c * clips, (c + 1) * clips) for c, (s, r) in enumerate(classes)}
    names = list(rng.permutation(sorted(rows)))
    train = {c: rows[c] for c in names[:40]}
    if shuffle_train_labels:
        pool = rng.permutation(np.concatenate(list(train.values())))
        train = {c: np.sort(pool[i * clips:(i + 1) * clips]) for i, c in enumerate(sorted(train))}
    val = {c: rows[c] for c in names[40:48]}
    test = {c: rows[c] for c in names[48:]}
    return RunData(train_rows=train, val_rows=val, read=lambda r: x[np.asarray(r)], shape=SHAPE), test


def _test_accuracy(embedder, data: RunData, test_rows) -> float:
    return evaluate_one_shot(embedder, read=data.read, class_rows=test_rows, ways=4, runs=100, seed=5).accuracy


# ----------------------------------------------------------------------------- learning


def test_cpu_recipe_beats_the_raw_baseline_and_shuffled_labels_do_not(tmp_path):
    data, test = texture_data()
    trained = fit(data, MODEL, TRAIN, tmp_path / "run", device="cpu", progress=False)
    embedder, _ = load_embedder(trained.best_checkpoint, "cpu")
    learned = _test_accuracy(embedder, data, test)
    baseline = _test_accuracy(RawCosineEmbedder(), data, test)
    shuffled_data, _ = texture_data(shuffle_train_labels=True)
    shuffled = fit(shuffled_data, MODEL, TRAIN, tmp_path / "shuffled", device="cpu", progress=False)
    broken = _test_accuracy(load_embedder(shuffled.best_checkpoint, "cpu")[0], data, test)
    assert baseline < 0.45  # 4-way: chance 0.25
    assert learned >= baseline + 0.25, (learned, baseline)
    assert broken < baseline + 0.15 < learned, (broken, baseline, learned)


# ----------------------------------------------------------------------------- batches and losses


def test_class_batches_hold_p_classes_of_k_distinct_clips():
    rows = {f"c{i}": np.arange(i * 10, i * 10 + 10) for i in range(6)}
    batch = sample_class_batch(rows, classes=4, clips=3, rng=np.random.default_rng(0))
    assert batch.rows.shape == (12,) and batch.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    owners = batch.rows // 10
    assert len(set(owners.tolist())) == 4 and all(len(set(owners[i * 3:(i + 1) * 3])) == 1 for i in range(4))
    assert len(set(batch.rows.tolist())) == 12 and batch.n_pairs == 66
    again = sample_class_batch(rows, classes=4, clips=3, rng=np.random.default_rng(0))
    assert np.array_equal(again.rows, batch.rows)
    with pytest.raises(TrainingError, match="need at least 7 train classes. Got 6"):
        sample_class_batch(rows, classes=7, clips=3, rng=np.random.default_rng(0))
    with pytest.raises(TrainingError, match="class 'c0' has 10; lower clips_per_class"):
        sample_class_batch(rows, classes=2, clips=11, rng=np.random.default_rng(0))


@pytest.mark.parametrize("kind, head", [("supcon", "cosine"), ("proto", "euclidean"), ("bce-all", "difference")])
def test_every_pair_losses_prefer_clustered_embeddings(kind, head):
    model = build_model(dataclasses.replace(MODEL, head=head), SHAPE, seed=0)
    labels = torch.arange(4).repeat_interleave(4)
    centres = torch.randn(4, 8) * 3
    clustered = centres[labels] + 0.05 * torch.randn(16, 8)
    scattered = torch.randn(16, 8) * 3
    if kind == "bce-all":  # the head must know that small differences mean "same"
        with torch.no_grad():
            model.head.weight.fill_(-1.0)
            model.head.bias.fill_(2.0)
        clustered, scattered = torch.nn.functional.pad(clustered, (0, 24)), torch.nn.functional.pad(scattered, (0, 24))
    good, good_correct = batch_loss(model, clustered, labels, kind=kind, temperature=0.1)
    bad, _ = batch_loss(model, scattered, labels, kind=kind, temperature=0.1)
    assert float(good.detach()) < float(bad.detach()) and good_correct.float().mean() > 0.9


# ----------------------------------------------------------------------------- augmentation


def test_augmentations_are_seeded_and_leave_their_input_alone():
    x = torch.randn(5, 16, 48)
    before = x.clone()
    a = augment(x, TRAIN, np.random.default_rng(3))
    b = augment(x, TRAIN, np.random.default_rng(3))
    c = augment(x, TRAIN, np.random.default_rng(4))
    assert torch.equal(x, before) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (5, 16, TRAIN.crop_frames)
    crop = random_crop(x, 10, np.random.default_rng(0))
    for i in range(5):  # each crop is a contiguous window of its own clip
        starts = [s for s in range(39) if torch.equal(x[i, :, s:s + 10], crop[i])]
        assert starts
    masked = spec_masks(x, freq_masks=1, freq_width=16, time_masks=0, time_width=0, rng=np.random.default_rng(1))
    zero_rows = (masked == 0).all(dim=2)
    assert zero_rows.any() and torch.equal(masked[~zero_rows], x[~zero_rows])


def test_training_with_augmentation_leaves_the_store_intact(tmp_path):
    classes = [f"{i:02d}" for i in range(1, 15)]
    path = make_synthetic_version(tmp_path / "store", classes=classes, clips_per_class=6, shape=SHAPE, seed=1)
    split = make_random_split("audiomnist", seed=0, sizes=(8, 4, 2), classes=classes)
    split_path = write_split(split, tmp_path / "split.parquet")
    version = open_version(path)
    rows = np.arange(version.n_rows)
    before = version.read(rows)
    config = dataclasses.replace(TRAIN, max_epochs=4, eval_every=2, eval_tasks=20, classes_per_batch=4)
    fit(run_data_from_inputs(open_training_inputs(path, split_path)), MODEL, config, tmp_path / "run",
        device="cpu", progress=False)
    assert open_version(path).verify() == []
    np.testing.assert_array_equal(open_version(path).read(rows), before)


# ----------------------------------------------------------------------------- statistics


def test_per_band_statistics_come_from_training_classes_and_travel_in_the_checkpoint(tmp_path):
    data, _ = texture_data()
    x = data.read(np.arange(64 * 8))
    x[np.concatenate(list(data.val_rows.values()))] += 100.0  # validation classes far off: must not count
    shifted = RunData(data.train_rows, data.val_rows, read=lambda r: x[np.asarray(r)], shape=SHAPE)
    config = dataclasses.replace(TRAIN, max_epochs=2, eval_every=2, eval_tasks=20, center_clips=0)
    plain = dataclasses.replace(MODEL, embed_center=False, tta_crops=1, tta_frames=0)  # embed = encoder(standardised)
    result = fit(shifted, plain, config, tmp_path / "run", device="cpu", progress=False)
    train_x = x[np.concatenate(list(data.train_rows.values()))].astype(np.float64)
    state = load_checkpoint(result.best_checkpoint)["model_state"]
    np.testing.assert_allclose(state["input_mean"].numpy(), train_x.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(state["input_std"].numpy(), train_x.std(axis=(0, 2)), rtol=1e-4)
    embedder, _ = load_embedder(result.best_checkpoint, "cpu")  # evaluation applies them
    clip = x[:1]
    embedder.model.eval()
    with torch.no_grad():
        standardised = (torch.from_numpy(clip) - state["input_mean"][:, None]) / state["input_std"][:, None]
        expected = embedder.model.encoder(standardised).numpy()
    np.testing.assert_allclose(embedder.embed(clip), expected, rtol=1e-4, atol=1e-5)
    mean, std = input_stats(shifted.read, shifted.train_rows, seed=0, per_band=True, max_clips=10_000, chunk=7)
    np.testing.assert_allclose(mean, train_x.mean(axis=(0, 2)), rtol=1e-5)


# ----------------------------------------------------------------------------- schedule, budget, refusals


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(lr=1.0, lr_schedule="cosine", warmup_epochs=4, max_epochs=104)
    assert [learning_rate(config, e) for e in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(config, 4) == 1.0 and learning_rate(config, 54) == pytest.approx(0.5)
    assert learning_rate(config, 104) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(TrainConfig(lr=0.1), 4000) == 0.1


def test_max_minutes_stops_cleanly_and_a_larger_budget_resumes(tmp_path):
    data, _ = texture_data()
    slow = dataclasses.replace(TRAIN, max_epochs=5000, eval_every=1000, max_minutes=0.03)
    stopped = fit(data, MODEL, slow, tmp_path / "run", device="cpu", progress=False)
    assert stopped.stopped == "max_minutes" and 0 < stopped.epochs_run < 5000
    assert stopped.elapsed_s < 0.03 * 60 + 30  # a step and a validation past the budget at most (a busy machine)
    assert stopped.history[-1].epoch == stopped.epochs_run  # a last validation at the stop
    # the CLI says how long a schedule fits this machine's budget
    assert stopped.max_epochs == 5000
    assert f"--max-epochs {stopped.epochs_run} " in budget_hint(stopped) and "of its 5000-epoch" in budget_hint(stopped)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["train_config"]["max_minutes"] == 0.03 and last["stopped"] == "max_minutes"
    same = fit(data, MODEL, slow, tmp_path / "run", device="cpu", progress=False, resume=True)
    assert same.epochs_run == stopped.epochs_run  # the same budget: nothing more to do
    larger = (stopped.elapsed_s + 5.0) / 60.0
    more = fit(data, MODEL, dataclasses.replace(slow, max_minutes=larger), tmp_path / "run", device="cpu",
               progress=False, resume=True)
    assert more.epochs_run > stopped.epochs_run and more.history[: len(stopped.history)] == stopped.history
    with pytest.raises(TrainingError, match="Cannot resume.*train_config"):
        fit(data, MODEL, dataclasses.replace(slow, lr=0.5), tmp_path / "run", device="cpu", progress=False,
            resume=True)


def test_cli_records_the_time_budget(tmp_path, capsys):
    classes = [f"{i:02d}" for i in range(1, 15)]
    path = make_synthetic_version(tmp_path / "store", classes=classes, clips_per_class=5, shape=(16, 20), seed=1)
    split_path = write_split(make_random_split("audiomnist", seed=0, sizes=(7, 5, 2), classes=classes),
                             tmp_path / "split.parquet")
    args = ["train", "--features", str(path), "--split", str(split_path), "--out", str(tmp_path / "run"),
            "--preset", "tiny", "--max-epochs", "4", "--eval-every", "2", "--eval-tasks", "10", "--max-minutes", "5",
            "--device", "cpu", "--no-progress", "--json", "--profile", "--precision", "fp32"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["max_minutes"] == 5.0 and result["elapsed_s"] > 0 and result["stopped"] == "max_epochs"
    assert result["precision"] == "fp32" and result["max_epochs"] == 4 and "hint" not in result  # the schedule ended
    timing = result["timing"]
    assert timing["epochs_timed"] == 4 and 0 < timing["loader_share"] < 1 and timing["pairs_per_s"] > 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_config"]["max_minutes"] == 5.0
    assert "elapsed_s" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("model, train, match", [
    (ModelConfig(), TrainConfig(loss="supcon", batch="classes"), "trains the 'cosine' similarity head"),
    (ModelConfig(), TrainConfig(crop_frames=30), "needs a network that takes any input length"),
    (dataclasses.replace(MODEL), dataclasses.replace(TRAIN, crop_frames=8), "crop_frames between 16"),
    (dataclasses.replace(MODEL), dataclasses.replace(TRAIN, freq_mask_bands=40), "freq_mask_bands at most 16"),
])
def test_incompatible_model_and_training_configs_are_refused(model, train, match):
    with pytest.raises(TrainingError, match=match):
        check_compatible(model, train, SHAPE)


def test_loss_and_batch_must_agree():
    with pytest.raises(TrainingError, match="loss 'supcon' does not train on 'pairs' batches"):
        TrainConfig(loss="supcon")
    with pytest.raises(TrainingError, match="clips_per_class to be an integer >= 2"):
        TrainConfig(loss="supcon", batch="classes", clips_per_class=1)


def test_input_pooling_happens_inside_the_model_and_takes_any_length():
    model_cfg = dataclasses.replace(CPU_MODEL, freq_pool=2, time_pool=4)
    assert model_cfg.embedding_input_shape((128, 431)) == (256, 4, 6) and model_cfg.min_frames() == 64
    model = build_model(model_cfg, (128, 431), seed=0).eval()
    with torch.no_grad():
        for frames in (64, 345, 431):
            assert model.embed(torch.randn(2, 128, frames)).shape == (2, CPU_MODEL.fc_units)
    with pytest.raises(TrainingError, match="pooled by 8 x 4 first"):
        dataclasses.replace(CPU_MODEL, freq_pool=8).embedding_input_shape((64, 431))

"""Search spaces of ``tune`` without a cluster: the default space obeys training's rules, invalid spaces
are refused naming the field (before any trial runs), re-queueing happens once, the journal is repaired."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from siamese_audio.cli import main
from siamese_audio.errors import TrainingError
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.manifests.splits import make_random_split, write_split
from siamese_audio.training.config import HEAD_OF_LOSS, LOSSES_OF_BATCH, check_compatible, preset
from siamese_audio.training.loop import RunData, check_run_data
from siamese_audio.training.tune import check_space, default_space, load_space
from siamese_audio.training.tune.space import TABLE_2_2, count_weights
from siamese_audio.training.tune.study import _fail_and_requeue, counted, repair_journal

CLASSES = [f"{i:02d}" for i in range(1, 26)]
SHAPE = (16, 20)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("store")
    version = make_synthetic_version(root, dataset="audiomnist", classes=CLASSES, clips_per_class=8, shape=SHAPE,
                                     seed=0, separation=3.0)
    split = make_random_split("audiomnist", seed=0, sizes=(18, 5, 2), classes=CLASSES)
    return SimpleNamespace(version=version, split_path=write_split(split, root / "split.parquet"))


def _rows(n_classes: int, clips: int, start: int = 0) -> dict[str, np.ndarray]:
    return {f"c{start + i:02d}": np.arange(clips, dtype=np.int64) + 100 * (start + i) for i in range(n_classes)}


def _data(shape: tuple[int, int], train_classes: int = 40, clips: int = 40) -> RunData:
    """Rows only: the checks count clips and classes, they never read."""
    return RunData(train_rows=_rows(train_classes, clips), val_rows=_rows(5, clips, start=train_classes),
                   read=None, shape=shape)


def _draw(space, n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    for _ in range(n):
        trial = study.ask()
        yield trial, space.suggest(trial)
        study.tell(trial, 0.5)


# ----------------------------------------------------------------------------- the default space


@pytest.mark.parametrize("name, shape", [("tiny", SHAPE), ("report-audiomnist", (224, 224)),
                                         ("report-esc50", (128, 431)), ("cpu-esc50", (128, 431)),
                                         ("cpu-audiomnist", (224, 224))])
def test_default_space_draws_only_trials_training_accepts(name, shape):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = _data(shape)
    space = default_space(name, shape=shape, train_rows=data.train_rows)
    check_space(space, data)
    losses, merges = set(), set()
    for trial, (model, train) in _draw(space, 60):
        check_compatible(model, train, shape)
        check_run_data(data, model, train)
        assert model.head == HEAD_OF_LOSS[train.loss] and train.loss in LOSSES_OF_BATCH[train.batch]
        assert 1 <= len(model.conv_filters) <= 4 and set(model.conv_filters) <= {12, 32, 64}
        assert model.fc_units in TABLE_2_2["model.fc_units"]
        losses.add(train.loss)
        # conditional parameters: merge only with the difference head, pos/ratio only with pair batches
        assert ("model.merge" in trial.params) == (model.head == "difference")
        assert ("train.pos" in trial.params) == (train.batch == "pairs")
        assert sum(k.startswith("model.conv_layer") and k.endswith("_filters") for k in trial.params) \
            == len(model.conv_filters)
        if "model.merge" in trial.params:
            merges.add(model.merge)
    base_model, base_train = preset(name)
    assert losses == set(TABLE_2_2["train.loss"]) | {base_train.loss}  # Table 2.2's losses and the preset's own
    assert merges == {"abs", "squared"}


def test_default_space_leaves_out_what_the_input_or_data_cannot_take():
    # report network (no global pooling) on 224 x 224: one or two poolings flatten into > 300M weights
    space = default_space("report-audiomnist", shape=(224, 224), train_rows=_rows(40, 40))
    assert space.param("model.conv_layers").candidates() == (3, 4)
    assert any("conv_layers 1" in note and "weights" in note for note in space.notes)
    assert count_weights(dataclasses.replace(preset("report-audiomnist")[0]), (224, 224)) == pytest.approx(
        38.6e6, rel=0.01)  # the report's network: ~38.5M FC weights
    # 18 training classes of 5 clips: pos 6 and 4 need more clips, 1:3 with pos 2 needs 7 classes (fine)
    small = default_space("tiny", shape=SHAPE, train_rows=_rows(18, 5))
    assert small.param("train.pos").choices == (2, 4) and "pos [6]" in " ".join(small.notes)


# ----------------------------------------------------------------------------- invalid spaces


def _space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text('preset = "tiny"\n' + text)
    return path


@pytest.mark.parametrize("text, match", [
    ("[model]\nfc_unit = { choices = [16, 32] }\n", r"\[model\] fc_unit: unknown field"),
    ("[train]\nlr = { choices = [] }\n", r"\[train\] lr: expected a non-empty list of choices"),
    ("[train]\nlr = { low = 0.01, high = 0.001 }\n", r"\[train\] lr: empty range"),
    ("[model]\ndropout_fc = { low = 0.0, high = 1.0 }\n", r"\[model\] dropout_fc = 1.0: .*dropout_fc"),
    ("[model]\nconv_layers = { low = 1, high = 4 }\nconv_layer_filters = { choices = [8, 16] }\ntime_pool = 2\n",
     r"\[model\] conv_layers = 4: cannot train on this data.*4 conv blocks pool the input \(16, 20\)"),
    ("[model]\nconv_filters = { choices = [[8, 8], [8, 8, 8, 8, 8]] }\n",
     r"\[model\] conv_filters = \(8, 8, 8, 8, 8\): .*1 to 4"),
    ("[train]\npos = { choices = [2, 8] }\n", r"\[train\] pos = 8: cannot train on this data.*at least 9 clips"),
    ("[train]\nloss = { choices = ['bce', 'supcon'] }\n[model]\nhead = 'difference'\n",
     r"\[model\] head: the searched loss sets batch and head"),
    ("[model]\nfc_units = { choices = [64] }\nfilters = 3\n", r"\[model\] filters: unknown field"),
    ("[train]\nratio = { low = 1, high = 3 }\n", r"\[train\] ratio: a range cannot draw a ratio"),
    ("[train]\ncrop_frames = { choices = [0, 12] }\n", r"crop_frames = 12: .*global_pool"),
    ("[train]\ntemperature = { low = 0.05, high = 0.5 }\n", r"\[train\] temperature: no trial would use it"),
])
def test_invalid_spaces_are_refused_naming_the_field(tmp_path, store, text, match):
    from siamese_audio.training.tune import open_run_data

    data = open_run_data(str(store.version), str(store.split_path))
    with pytest.raises(TrainingError, match=match):
        check_space(load_space(_space_file(tmp_path, text)), data)


def test_invalid_space_stops_tune_before_any_trial(tmp_path, store, capsys):
    space = _space_file(tmp_path, "[model]\nconv_layers = { low = 1, high = 4 }\ntime_pool = 4\n")
    code = main(["tune", "--features", str(store.version), "--split", str(store.split_path), "--out",
                 str(tmp_path / "study"), "--space", str(space), "--trials", "2", "--workers", "1", "--json"])
    assert code == 2
    err = capsys.readouterr().err
    assert "[model] conv_layers = 3: cannot train on this data" in err and "pool the input (16, 20)" in err
    assert not (tmp_path / "study" / "study.journal").exists() and not (tmp_path / "study" / "trials").exists()


def test_space_file_values_are_drawn_and_fixed_values_kept(tmp_path):
    space = load_space(_space_file(tmp_path, "[model]\nfc_units = { choices = [16, 32] }\n[train]\n"
                                             "ratio = { choices = ['1:1', '2:1'] }\nmax_epochs = 7\n"
                                             "lr = { low = 1e-4, high = 1e-2, log = true }\n"))
    drawn = [configs for _, configs in _draw(space, 12)]
    assert {m.fc_units for m, _ in drawn} == {16, 32} and {t.ratio for _, t in drawn} == {(1, 1), (2, 1)}
    assert all(t.max_epochs == 7 and 1e-4 <= t.lr <= 1e-2 for _, t in drawn)
    assert json.loads(json.dumps(space.to_dict())) == space.to_dict()


# ----------------------------------------------------------------------------- study bookkeeping


def test_a_killed_trial_is_queued_again_once():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    first = study.ask()
    first.suggest_categorical("model.fc_units", [16, 32])
    _fail_and_requeue(study, first, first.params, first.user_attrs, "killed: test")
    retry = study.ask()
    assert retry.suggest_categorical("model.fc_units", [16, 32]) == first.params["model.fc_units"]
    assert retry.user_attrs["retry_of"] == first.number
    _fail_and_requeue(study, retry, retry.params, retry.user_attrs, "killed: again")
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # nothing queued a second time
    assert [counted(t) for t in trials] == [False, True]
    assert "queued again" in trials[0].user_attrs["failure"] and "not queued again" in trials[1].user_attrs["failure"]


def test_repair_journal_cuts_an_unfinished_last_record(tmp_path):
    path = tmp_path / "study.journal"
    path.write_bytes(b'{"op_code": 0}\n{"op_code": 1}\n{"op_co')
    assert repair_journal(path) and path.read_bytes() == b'{"op_code": 0}\n{"op_code": 1}\n'
    assert not repair_journal(path)

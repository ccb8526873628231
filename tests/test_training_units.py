"""Training stage, pure parts: configs, Algorithm 2 sampler, model, losses, metrics files."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch

from siamese_audio.errors import TrainingError
from siamese_audio.training.config import (
    ModelConfig,
    TrainConfig,
    load_config,
    model_config_from_dict,
    neg_count,
    parse_ratio,
    preset,
    train_config_from_dict,
)
from siamese_audio.training.losses import pair_loss
from siamese_audio.training.metrics import EvalRecord, plot_curves, write_metrics_csv
from siamese_audio.training.model import SiameseNet, build_model
from siamese_audio.training.sampler import sample_pair_batch, validate_class_rows

torch.set_num_threads(2)


# ----------------------------------------------------------------------------- config


def test_presets_follow_the_report():
    model, train = preset("report-audiomnist")
    assert (model.conv_filters, model.conv_kernels, model.pooling) == ((64, 32, 12), (5, 5, 3), "max")
    assert (model.fc_units, model.merge, model.dropout_conv, model.dropout_fc) == (4096, "squared", 0.0, 0.0)
    assert (train.loss, train.pos, train.ratio, train.neg) == ("bce", 2, (1, 1), 2)
    assert (train.max_epochs, train.eval_every, train.eval_tasks, train.patience, train.ways) == (5000, 100, 300, 10, 5)
    assert preset("report-esc50")[1].pos == 4 and preset("report-esc50")[1].neg == 4
    tiny_model, _ = preset("tiny")
    assert tiny_model.fc_units < 4096 and len(tiny_model.conv_filters) <= 3


@pytest.mark.parametrize(("pos", "ratio", "neg"), [
    (2, (1, 1), 2), (2, (1, 2), 4), (2, (1, 3), 6), (2, (2, 1), 1), (2, (3, 1), 1),
    (4, (2, 1), 2), (4, (3, 1), 1), (6, (3, 1), 2), (6, (1, 3), 18),
])
def test_neg_count_from_pos_and_ratio(pos, ratio, neg):
    assert neg_count(pos, ratio) == neg


@pytest.mark.parametrize(("cls", "field", "value", "match"), [
    (ModelConfig, "conv_filters", (64, 32, 12, 12, 12), "conv_filters.*1 to 4"),
    (ModelConfig, "conv_filters", (64, 0), "conv_filters.*positive integer.*0"),
    (ModelConfig, "conv_kernels", (5,), "conv_kernels.*one size per conv layer \\(3\\)"),
    (ModelConfig, "pooling", "min", "pooling in \\('max', 'avg'\\). Got 'min'"),
    (ModelConfig, "fc_units", 0, "fc_units.*positive integer. Got 0"),
    (ModelConfig, "merge", "cosine", "merge in"),
    (ModelConfig, "dropout_conv", 1.0, "dropout_conv.*\\[0, 1\\). Got 1.0"),
    (ModelConfig, "dropout_fc", -0.1, "dropout_fc"),
    (ModelConfig, "input_norm", "batch", "input_norm in"),
    (TrainConfig, "loss", "hinge", "loss in \\('bce', 'mse', 'contrastive', 'bce-all', 'supcon', 'proto'\\). Got 'hinge'"),
    (TrainConfig, "pos", 0, "pos to be a positive integer. Got 0"),
    (TrainConfig, "ratio", (1, 0), "ratio to be a positive integer. Got 0"),
    (TrainConfig, "ratio", (1, 1, 1), "ratio to be a pair"),
    (TrainConfig, "lr", -1.0, "lr to be a finite number > 0"),
    (TrainConfig, "max_epochs", 0, "max_epochs"),
    (TrainConfig, "eval_every", 1.5, "eval_every"),
    (TrainConfig, "patience", True, "patience"),
    (TrainConfig, "seed", -1, "seed to be a non-negative integer"),
    (TrainConfig, "ways", 1, "ways to be an integer >= 2"),
])
def test_config_refuses_bad_fields(cls, field, value, match):
    with pytest.raises(TrainingError, match=match):
        cls(**{field: value})


def test_pooling_that_shrinks_input_to_nothing_is_refused():
    with pytest.raises(TrainingError, match="pool the input \\(8, 40\\) by 16"):
        SiameseNet(ModelConfig(conv_filters=(12,) * 4, conv_kernels=(3,) * 4, fc_units=8), (8, 40))


def test_toml_overrides_a_preset(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "report-esc50"\n[model]\nfc_units = 1024\nconv_filters = [64, 32]\n'
                    'conv_kernels = [5, 5]\npooling = "avg"\n[train]\nratio = "1:3"\nlr = 0.0005\n')
    model, train = load_config(path)
    assert (model.fc_units, model.conv_filters, model.pooling) == (1024, (64, 32), "avg")
    assert (train.pos, train.ratio, train.neg, train.lr) == (4, (1, 3), 12, 0.0005)
    model, train = load_config(path, preset_name="tiny")  # the command line's preset wins
    assert train.eval_every == preset("tiny")[1].eval_every and model.fc_units == 1024


@pytest.mark.parametrize(("text", "match"), [
    ("[model]\nunits = 3\n", "\\[model\\]: expected keys among .*Got unknown \\['units'\\]"),
    ("[optim]\nlr = 1\n", "top-level keys.*Got unknown \\['optim'\\]"),
    ("[train]\nratio = \"1-1\"\n", "ratio as 'p:n'.*Got '1-1'"),
    ("[train]\npos = 0\n", "pos to be a positive integer. Got 0"),
    ("preset = \"huge\"\n", "training preset among .*Got 'huge'"),
    ("[train\n", "not valid TOML"),
])
def test_toml_refusals_name_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TrainingError, match=match):
        load_config(path)


def test_missing_toml_file_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_configs_round_trip_through_dicts():
    model, train = preset("report-esc50")
    assert model_config_from_dict(dataclasses.asdict(model)) == model
    assert train_config_from_dict(dataclasses.asdict(train)) == train
    assert parse_ratio([2, 1]) == (2, 1) and parse_ratio("3:1") == (3, 1)


# ----------------------------------------------------------------------------- sampler (Algorithm 2)


def _class_rows(n_classes: int, clips: int) -> dict[str, np.ndarray]:
    return {f"c{c:02d}": np.arange(c * clips, (c + 1) * clips, dtype=np.int64) * 3 + 7 for c in range(n_classes)}


@pytest.mark.parametrize(("pos", "ratio"), [(2, (1, 1)), (4, (1, 2)), (6, (3, 1)), (2, (1, 3))])
def test_pair_batch_matches_algorithm_2(pos, ratio):
    class_rows = _class_rows(n_classes=9, clips=10)
    row_class = {int(r): c for c, rows in class_rows.items() for r in rows}
    neg = neg_count(pos, ratio)
    batch = sample_pair_batch(class_rows, pos=pos, neg=neg, rng=np.random.default_rng(3))

    assert batch.n_pairs == 9 * (pos + neg)
    assert np.array_equal(batch.rows, np.unique(batch.rows)) and batch.rows.dtype == np.int64
    left, right = batch.rows[batch.left], batch.rows[batch.right]
    assert int(batch.labels.sum()) == 9 * pos
    for c, name in enumerate(sorted(class_rows)):
        block = slice(c * (pos + neg), (c + 1) * (pos + neg))
        anchors, partners, labels = left[block], right[block], batch.labels[block]
        assert len(set(anchors.tolist())) == 1 and row_class[int(anchors[0])] == name  # one anchor per class
        assert labels.tolist() == [1.0] * pos + [0.0] * neg
        positives, negatives = partners[:pos], partners[pos:]
        assert all(row_class[int(r)] == name for r in positives)
        assert len(set(positives.tolist()) | {int(anchors[0])}) == pos + 1  # distinct, not the anchor
        neg_classes = [row_class[int(r)] for r in negatives]
        assert name not in neg_classes and len(set(neg_classes)) == neg  # each from a different class


def test_pair_batch_is_seeded_and_varies():
    class_rows = _class_rows(n_classes=6, clips=8)
    a = sample_pair_batch(class_rows, pos=2, neg=2, rng=np.random.default_rng(0))
    b = sample_pair_batch(class_rows, pos=2, neg=2, rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    sample_pair_batch(class_rows, pos=2, neg=2, rng=rng)
    c = sample_pair_batch(class_rows, pos=2, neg=2, rng=rng)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("rows", "left", "right", "labels"))
    assert not np.array_equal(a.rows[a.right], c.rows[c.right])


def test_negative_classes_cover_the_other_classes_over_many_batches():
    class_rows = _class_rows(n_classes=5, clips=4)
    rng = np.random.default_rng(1)
    seen = Counter()
    row_class = {int(r): c for c, rows in class_rows.items() for r in rows}
    for _ in range(200):
        b = sample_pair_batch(class_rows, pos=2, neg=1, rng=rng)
        negative_of_c00 = b.rows[b.right][2]  # pairs 0, 1 positive, 2 negative
        seen[row_class[int(negative_of_c00)]] += 1
    assert set(seen) == {"c01", "c02", "c03", "c04"}


def test_sampler_refusals():
    with pytest.raises(TrainingError, match="class 'c02' needs at least 3 clips.*Got 2"):
        validate_class_rows({**_class_rows(2, 5), "c02": np.array([1, 2])}, pos=2, neg=2)
    with pytest.raises(TrainingError, match="4 negative pairs per class need at least 5 train classes.*Got 3"):
        sample_pair_batch(_class_rows(3, 9), pos=2, neg=4, rng=np.random.default_rng(0))


# ----------------------------------------------------------------------------- model


def test_report_encoder_shapes_and_glorot_init():
    model = build_model(ModelConfig(), (224, 224), seed=0)
    convs = [m for m in model.encoder.layers if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(64, (5, 5)), (32, (5, 5)), (12, (3, 3))]
    assert all(c.padding == "same" for c in convs)
    fc = [m for m in model.encoder.layers if isinstance(m, torch.nn.Linear)][0]
    assert (fc.in_features, fc.out_features) == (12 * 28 * 28, 4096)  # 9,408 -> 4,096 as the authors'
    for layer in [*convs, fc, model.head]:
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = (6 / (fan_in + fan_out)) ** 0.5
        largest = float(layer.weight.detach().abs().max())
        assert 0.9 * bound < largest <= bound
        assert float(layer.bias.detach().abs().max()) == 0.0
    assert model.head.out_features == 1


def test_same_seed_same_weights_and_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model(preset("tiny")[0], (16, 20), seed=5)
    b = build_model(preset("tiny")[0], (16, 20), seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("merge", ["squared", "abs"])
def test_encoding_distinct_clips_once_equals_encoding_each_pair_side(merge):
    model = build_model(dataclasses.replace(preset("tiny")[0], merge=merge), (16, 20), seed=0).eval()
    x = torch.randn(6, 16, 20)
    left, right = torch.tensor([0, 0, 1, 2, 5]), torch.tensor([1, 3, 4, 4, 0])
    with torch.no_grad():
        emb = model.embed(x)
        once = model.logits(emb[left], emb[right])
        per_pair = model(x[left], x[right])
    assert once.shape == (5,)
    torch.testing.assert_close(once, per_pair)
    diff = emb[0] - emb[1]
    expected = diff * diff if merge == "squared" else diff.abs()
    torch.testing.assert_close(model.merge(emb[:1], emb[1:2])[0], expected)


@pytest.mark.parametrize("kind", ["bce", "mse", "contrastive"])
def test_losses_decrease_on_one_batch(kind):
    torch.manual_seed(0)
    model = build_model(preset("tiny")[0], (16, 20), seed=0)
    x = torch.randn(8, 16, 20)
    left, right = torch.tensor([0, 0, 2, 2, 4, 4]), torch.tensor([1, 2, 3, 4, 5, 6])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        emb = model.embed(x)
        loss, same = pair_loss(model, emb[left], emb[right], labels, kind=kind, margin=1.0)
        assert same.shape == (6,) and same.dtype == torch.bool
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------- metrics files


def test_metrics_csv_and_png(tmp_path):
    history = [EvalRecord(10, 0.6, 0.55, 0.4, 300, 0.35, 0.46, 12.34, 0.002), EvalRecord(20, 0.5, 0.7, 0.65)]
    write_metrics_csv(tmp_path / "metrics.csv", history)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,train_loss,train_accuracy,val_accuracy,val_n_tasks,val_ci95_low,val_ci95_high,"
                     "elapsed_s,lr",
                     "10,0.600000,0.550000,0.400000,300,0.350000,0.460000,12.3,0.002",
                     "20,0.500000,0.700000,0.650000,0,0.000000,0.000000,0.0,0"]
    plot_curves(tmp_path / "curves.png", [0.7] * 20, [0.5] * 20, history)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "metrics.csv"]  # no temp files left

"""Training stage on generated sealed stores: learning, resume, refusals, checkpoints, command line."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from siamese_audio.cli import main
from siamese_audio.errors import SplitError, StoreError, TrainingError
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.evaluator import evaluate_one_shot
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import SEAL
from siamese_audio.manifests.splits import Split, make_random_split, write_split
from siamese_audio.training.checkpoint import load_checkpoint, load_embedder, resolve_device
from siamese_audio.training.config import preset
from siamese_audio.training.data import open_training_inputs
from siamese_audio.training.loop import RunData, fit, run_data_from_inputs

torch.set_num_threads(2)

CLASSES = [f"{i:02d}" for i in range(1, 26)]
TINY_MODEL, TINY_TRAIN = preset("tiny")
TRAIN = dataclasses.replace(TINY_TRAIN, max_epochs=30, eval_every=10, eval_tasks=50, patience=100)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("store")
    version = make_synthetic_version(root, dataset="audiomnist", classes=CLASSES, clips_per_class=8,
                                     shape=(16, 20), seed=0, separation=3.0)
    split = make_random_split("audiomnist", seed=0, sizes=(18, 5, 2), classes=CLASSES)
    return SimpleNamespace(root=root, version=version, split=split,
                           split_path=write_split(split, root / "split.parquet"))


@pytest.fixture(scope="module")
def data(store) -> RunData:
    return run_data_from_inputs(open_training_inputs(store.version, store.split_path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    config = dataclasses.replace(TRAIN, max_epochs=40)
    return fit(data, TINY_MODEL, config, run_dir, device="cpu", progress=False)


class Killed(Exception):
    """Stands for SIGKILL in the resume tests."""


def _kill_at(epoch: int):
    def hook(current: int) -> None:
        if current == epoch:
            raise Killed
    return hook


# ----------------------------------------------------------------------------- learning


def test_network_learns_a_separable_set(trained, data):
    chance = 1 / TRAIN.ways
    assert trained.best_val_accuracy >= 0.6 > 3 * chance - 0.01
    assert trained.epochs_run == 40 and trained.stopped == "max_epochs"
    assert [r.epoch for r in trained.history] == [10, 20, 30, 40]
    assert trained.history[-1].train_loss < trained.history[0].train_loss
    assert trained.best_epoch in {r.epoch for r in trained.history}


def test_run_directory_holds_metrics_and_curves(trained):
    run_dir = trained.run_dir
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "curves.png", "last.pt", "metrics.csv"]
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0] == ("epoch,train_loss,train_accuracy,val_accuracy,val_n_tasks,val_ci95_low,val_ci95_high,"
                       "elapsed_s,lr")
    assert len(rows) == 1 + len(trained.history)
    h = trained.history[1]
    assert [float(v) for v in rows[2].split(",")] == pytest.approx(
        [20, h.train_loss, h.train_accuracy, h.val_accuracy, h.val_n_tasks, h.val_ci95_low, h.val_ci95_high,
         h.elapsed_s, h.lr], abs=0.06)
    assert 0 < trained.history[0].elapsed_s < h.elapsed_s <= trained.elapsed_s and h.lr == TRAIN.lr
    assert h.val_n_tasks > 0 and h.val_ci95_low <= h.val_accuracy <= h.val_ci95_high
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_contents(trained, store, data):
    best = load_checkpoint(trained.best_checkpoint)
    last = load_checkpoint(trained.run_dir / "last.pt")
    version = open_training_inputs(store.version, store.split_path, verify=False).version
    for payload in (best, last):
        assert payload["feature_version_id"] == version.version_id
        assert payload["feature_config"] == version.feature_config
        assert payload["split_id"] == store.split.split_id
        assert payload["dataset"] == "audiomnist"
        assert payload["training_classes"] == sorted(store.split.classes["train"])
        assert payload["validation_classes"] == sorted(store.split.classes["validation"])
        assert payload["model_config"] == dataclasses.asdict(TINY_MODEL)
        assert payload["train_config"]["max_epochs"] == 40 and payload["seeds"] == {"seed": TRAIN.seed}
        assert {"python", "torch", "numpy", "siamese-audio"} <= set(payload["library_versions"])
        assert payload["input_shape"] == [16, 20]
        assert payload["best_val_accuracy"] == trained.best_val_accuracy
        assert [r["val_accuracy"] for r in payload["history"]][: len(payload["history"])] == \
            [r.val_accuracy for r in trained.history][: len(payload["history"])]
    assert best["kind"] == "best" and best["epoch"] == trained.best_epoch and "optimizer_state" not in best
    assert last["kind"] == "last" and last["epoch"] == 40 and last["stopped"] == "max_epochs"
    assert {"numpy", "torch"} <= set(last["rng_states"]) and "state" in last["optimizer_state"]
    assert len(last["epoch_losses"]) == 40


def test_best_checkpoint_reproduces_its_validation_accuracy(trained, data):
    embedder, meta = load_embedder(trained.best_checkpoint, "cpu")
    assert isinstance(embedder, Embedder)
    assert {"feature_config", "feature_version_id", "split_id", "training_classes", "dataset",
            "model_config"} <= set(meta)
    result = evaluate_one_shot(embedder, read=data.read, class_rows=data.val_rows, ways=5,
                               runs=10, seed=TRAIN.seed, batch_size=64)  # ceil(50 / 5) runs, the run's seed
    assert result.accuracy == pytest.approx(trained.best_val_accuracy)
    x = data.read(data.val_rows[sorted(data.val_rows)[0]][:3])
    emb = embedder.embed(x)
    assert emb.shape == (3, TINY_MODEL.fc_units) and emb.dtype == np.float32
    sim = embedder.similarity(emb[:2], emb[1:])
    assert sim.shape == (2,) and sim.dtype == np.float32 and np.all(np.isfinite(sim))
    with torch.no_grad():  # logits, not a saturating sigmoid
        expected = embedder.model.logits(torch.from_numpy(emb[:2]), torch.from_numpy(emb[1:])).numpy()
    np.testing.assert_allclose(sim, expected, rtol=1e-6)
    prob = embedder.probability(emb[:2], emb[1:])  # the difference head's sigmoid, for display only
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-sim.astype(np.float64))), rtol=1e-5)


def test_unreadable_checkpoint_is_refused(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="best.pt cannot be read"):
        load_embedder(tmp_path, "cpu")
    with pytest.raises(TrainingError, match="does not exist"):
        load_embedder(tmp_path / "other.pt", "cpu")


# ----------------------------------------------------------------------------- resume, readers, stopping


@pytest.mark.parametrize("kill_at", [20, 25])
def test_resume_gives_the_same_history_as_an_uninterrupted_run(tmp_path, data, kill_at):
    whole = fit(data, TINY_MODEL, TRAIN, tmp_path / "whole", device="cpu", progress=False)
    with pytest.raises(Killed):
        fit(data, TINY_MODEL, TRAIN, tmp_path / "killed", device="cpu", progress=False, on_epoch=_kill_at(kill_at))
    resumed = fit(data, TINY_MODEL, TRAIN, tmp_path / "killed", device="cpu", progress=False, resume=True)
    assert resumed.history == whole.history
    assert (resumed.best_epoch, resumed.epochs_run) == (whole.best_epoch, whole.epochs_run)
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "killed" / "last.pt")
    assert a["epoch_losses"] == b["epoch_losses"]
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert _without_wall_clock(tmp_path / "killed" / "metrics.csv") == _without_wall_clock(tmp_path / "whole" / "metrics.csv")


def _without_wall_clock(path) -> list[list[str]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    column = rows[0].index("elapsed_s")
    return [row[:column] + row[column + 1:] for row in rows]


def test_resident_training_matches_reading_the_store(tmp_path, data):
    config = dataclasses.replace(TRAIN, max_epochs=20)
    read = fit(data, TINY_MODEL, config, tmp_path / "read", device="cpu", progress=False)
    resident = fit(data, TINY_MODEL, config, tmp_path / "resident", device="cpu", progress=False, resident=True)
    assert resident.history == read.history


def _memory_data(n_train=6, n_val=5, clips=4) -> RunData:
    x = np.random.default_rng(0).standard_normal(((n_train + n_val) * clips, 16, 20)).astype(np.float32)
    rows = {f"k{c:02d}": np.arange(c * clips, (c + 1) * clips) for c in range(n_train + n_val)}
    names = sorted(rows)
    return RunData(train_rows={c: rows[c] for c in names[:n_train]}, val_rows={c: rows[c] for c in names[n_train:]},
                   read=lambda r: x[np.asarray(r)], shape=(16, 20))


def test_stops_after_patience_validations_without_improvement(tmp_path):
    scripted = iter([0.3, 0.5, 0.4, 0.45, 0.5, 0.9])
    calls = []

    def evaluate(embedder, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(accuracy=next(scripted))

    config = dataclasses.replace(TRAIN, max_epochs=100, eval_every=2, patience=3, eval_tasks=12)
    result = fit(_memory_data(), TINY_MODEL, config, tmp_path / "run", device="cpu", progress=False,
                 evaluate=evaluate)
    assert (result.stopped, result.epochs_run, result.best_epoch, result.best_val_accuracy) == ("patience", 10, 4, 0.5)
    assert [r.val_accuracy for r in result.history] == [0.3, 0.5, 0.4, 0.45, 0.5]
    assert calls[0]["runs"] == 3 and calls[0]["ways"] == 5 and calls[0]["seed"] == config.seed  # ceil(12 / 5)
    assert load_checkpoint(result.best_checkpoint)["epoch"] == 4


def test_validation_draws_positives_from_other_recordings(tmp_path):
    """Training's validation uses evaluation's default: positives from another recording (ESC-50 src_file)."""
    classes = [f"k{i:02d}" for i in range(12)]
    sources = {c: [f"{c}-{k // 2}" for k in range(6)] for c in classes}  # 3 recordings x 2 clips per class
    version = make_synthetic_version(tmp_path / "store", dataset="esc50", classes=classes, clips_per_class=6,
                                     shape=(16, 20), seed=0, sources=sources)
    split = Split("esc50", "file", None, {"train": classes[:7], "validation": classes[7:], "test": []})
    run_data = run_data_from_inputs(open_training_inputs(version, write_split(split, tmp_path / "s.parquet")))
    assert run_data.val_sources is not None
    assert [list(run_data.val_sources[c]) for c in classes[7:]] == [sources[c] for c in classes[7:]]
    calls = []

    def evaluate(embedder, **kwargs):
        calls.append(kwargs)
        result = evaluate_one_shot(embedder, **kwargs)
        calls.append(result)
        return result

    config = dataclasses.replace(TRAIN, max_epochs=2, eval_every=2, eval_tasks=20)
    fit(run_data, TINY_MODEL, config, tmp_path / "run", device="cpu", progress=False, evaluate=evaluate)
    assert calls[0]["class_sources"] is run_data.val_sources
    positives = calls[1].tasks.positives_summary()
    assert positives["applied"] is True and positives["n_positive_same_recording"] == 0
    assert load_checkpoint(tmp_path / "run" / "best.pt")["validation_positives"] == "other_recording"


def test_audiomnist_validation_has_no_sources_and_says_so(data, trained):
    assert data.val_sources is None
    assert load_checkpoint(trained.best_checkpoint)["validation_positives"].startswith("other_recording (not applied")


# ----------------------------------------------------------------------------- refusals


def test_unsealed_version_is_refused(tmp_path, store):
    copy = tmp_path / "audiomnist" / store.version.name
    shutil.copytree(store.version, copy)
    (copy / SEAL).unlink()
    with pytest.raises(StoreError):
        open_training_inputs(copy, store.split_path)


def test_altered_version_is_refused(tmp_path, store):
    copy = tmp_path / "audiomnist" / store.version.name
    shutil.copytree(store.version, copy)
    chunk = max((p for p in (copy / "logmel").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(TrainingError, match="altered after sealing; refusing to train"):
        open_training_inputs(copy, store.split_path)


def test_split_with_classes_the_catalog_lacks_is_refused(tmp_path, store):
    wider = make_random_split("audiomnist", seed=0, sizes=(23, 5, 2), classes=[*CLASSES, "26", "27", "28", "29", "30"])
    path = write_split(wider, tmp_path / "wider.parquet")
    with pytest.raises(SplitError, match="stored clips"):
        open_training_inputs(store.version, path)


def test_split_of_another_dataset_is_refused(tmp_path, store):
    other = Split("esc50", "file", None, {"train": ["dog", "rain"], "validation": [], "test": ["cow", "frog"]})
    path = write_split(other, tmp_path / "esc.parquet")
    with pytest.raises(SplitError, match="dataset 'audiomnist'"):
        open_training_inputs(store.version, path)


def test_pinned_ids_are_enforced(store):
    with pytest.raises(TrainingError, match="expected version id deadbeef"):
        open_training_inputs(store.version, store.split_path, expect_version_id="deadbeef")
    with pytest.raises(TrainingError, match="expected split id feedface"):
        open_training_inputs(store.version, store.split_path, expect_split_id="feedface")


@pytest.mark.parametrize(("data_kw", "config_kw", "match"), [
    ({"n_val": 4}, {}, "5-way tasks need at least 5 validation classes. Got 4"),
    ({"clips": 2}, {}, "needs at least 3 clips \\(one anchor and 2 positives\\). Got 2"),
    ({}, {"ratio": (1, 3)}, "6 negative pairs per class need at least 7 train classes.*Got 6 classes"),
])
def test_data_that_cannot_train_is_refused_before_any_epoch(tmp_path, data_kw, config_kw, match):
    config = dataclasses.replace(TRAIN, **config_kw)
    with pytest.raises(TrainingError, match=match):
        fit(_memory_data(**data_kw), TINY_MODEL, config, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


def test_overlapping_train_and_validation_classes_are_refused(tmp_path):
    data = _memory_data()
    data = dataclasses.replace(data, val_rows={**data.val_rows, "k00": data.train_rows["k00"]})
    with pytest.raises(TrainingError, match="disjoint.*\\['k00'\\]"):
        fit(data, TINY_MODEL, TRAIN, tmp_path / "run", device="cpu", progress=False)


def test_run_directory_and_resume_refusals(tmp_path):
    data = _memory_data()
    with pytest.raises(TrainingError, match="last.pt does not exist"):
        fit(data, TINY_MODEL, TRAIN, tmp_path / "run", device="cpu", progress=False, resume=True)
    short = dataclasses.replace(TRAIN, max_epochs=2, eval_every=2, eval_tasks=5)
    fit(data, TINY_MODEL, short, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(TrainingError, match="already holds a run"):
        fit(data, TINY_MODEL, short, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(TrainingError, match="its train_config is"):
        fit(data, TINY_MODEL, dataclasses.replace(short, lr=0.1), tmp_path / "run", device="cpu",
            progress=False, resume=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal when CUDA is absent")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(TrainingError, match="Expected a CUDA device for --device cuda"):
        resolve_device("cuda")
    with pytest.raises(TrainingError, match="'auto', 'cpu' or 'cuda'. Got 'tpu'"):
        resolve_device("tpu")
    assert resolve_device("auto") == torch.device("cpu")


# ----------------------------------------------------------------------------- command line


def _cli(*argv: str) -> list[str]:
    return ["train", *argv, "--device", "cpu", "--no-progress"]


def test_cli_trains_resumes_and_reports_json(tmp_path, store, capsys):
    run_dir = tmp_path / "run"
    args = _cli("--features", str(store.version), "--split", str(store.split_path), "--out", str(run_dir),
                "--preset", "tiny", "--max-epochs", "10", "--eval-every", "5", "--eval-tasks", "20", "--json")
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert {"best_checkpoint", "best_val_accuracy", "best_epoch", "epochs_run"} <= set(result)
    assert result["epochs_run"] == 10 and Path(result["best_checkpoint"]) == run_dir / "best.pt"
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 3
    # resuming a finished run changes nothing and reports the same result
    assert main(_cli("--resume", str(run_dir), "--json")) == 0
    assert json.loads(capsys.readouterr().out) == result


def test_cli_toml_config_and_errors(tmp_path, store, capsys):
    toml = tmp_path / "cfg.toml"
    toml.write_text('preset = "tiny"\n[train]\nmax_epochs = 4\neval_every = 2\neval_tasks = 10\npos = 3\n')
    run_dir = tmp_path / "run"
    assert main(_cli("--features", str(store.version), "--split", str(store.split_path), "--out", str(run_dir),
                     "--config", str(toml), "--json")) == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 4
    assert load_checkpoint(run_dir / "last.pt")["train_config"]["pos"] == 3

    assert main(_cli("--resume", str(run_dir), "--max-epochs", "8")) == 2
    assert "expected no --max-epochs" in capsys.readouterr().err
    assert main(_cli("--split", str(store.split_path), "--out", str(tmp_path / "x"))) == 2
    assert "expected --features" in capsys.readouterr().err
    assert main(_cli("--features", str(tmp_path / "missing"), "--split", str(store.split_path),
                     "--out", str(tmp_path / "y"))) == 2
    assert "error:" in capsys.readouterr().err

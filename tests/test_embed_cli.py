"""``siamese-audio embed``: both formats, selections, refusals, a real checkpoint end to end."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from siamese_audio.cli.embed import add_parser
from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.embeddings import EmbedSelection, select_rows, write_embeddings
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import open_version
from siamese_audio.manifests.splits import Split, write_split

CLASSES = [f"{i:02d}" for i in range(1, 9)]
TRAIN, VALIDATION, TEST = CLASSES[:4], CLASSES[4:6], CLASSES[6:]


class MeanEmbedder:
    def embed(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=2)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return -((a - b) ** 2).sum(axis=1)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="siamese-audio")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    path = make_synthetic_version(root / "store", classes=CLASSES, clips_per_class=3, shape=(8, 12), seed=2)
    split = Split("audiomnist", "file", None, {"train": TRAIN, "validation": VALIDATION, "test": TEST})
    return {"version": open_version(path), "features": str(path),
            "split": str(write_split(split, root / "split.parquet")), "root": root}


@pytest.fixture
def fake_checkpoint(monkeypatch, data):
    import siamese_audio.training.checkpoint as checkpoint_module

    version = data["version"]
    meta = {"feature_config": dict(version.feature_config), "feature_version_id": version.version_id,
            "split_id": "s0", "training_classes": list(TRAIN), "dataset": "audiomnist",
            "input_shape": list(version.shape)}
    monkeypatch.setattr(checkpoint_module, "load_embedder", lambda path, device="auto": (MeanEmbedder(), dict(meta)))
    return meta


def test_parquet_holds_one_embedding_per_stored_clip(data, fake_checkpoint, tmp_path, capsys):
    out = tmp_path / "emb"
    assert run_cli(["embed", "ck.pt", "--features", data["features"], "--out", str(out), "--no-progress",
                    "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_clips"] == 24 and summary["dimension"] == 8 and summary["n_classes"] == 8
    table = pq.read_table(out / "embeddings.parquet").to_pandas()
    version = data["version"]
    expected = version.read(table["row"].to_numpy()).mean(axis=2)
    np.testing.assert_allclose(np.stack(table["embedding"].to_list()), expected, rtol=1e-6)
    assert list(table["row"]) == sorted(table["row"])
    info = json.loads((out / "embeddings.json").read_text())
    assert info["feature_version_id"] == version.version_id and info["n_clips"] == 24
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]


def test_npy_with_split_partition(data, fake_checkpoint, tmp_path, capsys):
    out = tmp_path / "npy"
    assert run_cli(["embed", "ck.pt", "--features", data["features"], "--out", str(out), "--split", data["split"],
                    "--subset", "validation", "--format", "npy", "--no-progress"]) == 0
    matrix = np.load(out / "embeddings.npy")
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert matrix.shape == (6, 8) and matrix.dtype == np.float32
    assert set(index["class"]) == set(VALIDATION) and len(index) == 6
    np.testing.assert_allclose(matrix, data["version"].read(index["row"].to_numpy()).mean(axis=2), rtol=1e-6)
    assert "embedded 6 clips of 2 classes" in capsys.readouterr().out


def test_class_filter_and_unknown_class(data, fake_checkpoint, tmp_path):
    out = tmp_path / "cls"
    assert run_cli(["embed", "ck.pt", "--features", data["features"], "--out", str(out), "--classes", "01", "03",
                    "--no-progress"]) == 0
    assert set(pq.read_table(out / "embeddings.parquet").column("class").to_pylist()) == {"01", "03"}
    with pytest.raises(EvaluationError, match=r"--classes: expected classes of this feature version\. "
                                              r"Unknown: .*nope"):
        run_cli(["embed", "ck.pt", "--features", data["features"], "--out", str(tmp_path / "x"),
                 "--classes", "nope", "--no-progress"])
    assert not (tmp_path / "x").exists()


def test_refuses_output_inside_a_version(data, fake_checkpoint):
    with pytest.raises(EvaluationError, match="feature version"):
        run_cli(["embed", "ck.pt", "--features", data["features"], "--out", data["features"] + "/emb"])


def test_refuses_checkpoint_of_other_dataset(data, fake_checkpoint, tmp_path):
    fake_checkpoint["dataset"] = "esc50"
    with pytest.raises(EvaluationError, match="trained on dataset 'esc50'"):
        run_cli(["embed", "ck.pt", "--features", data["features"], "--out", str(tmp_path / "o"), "--no-progress"])
    assert not (tmp_path / "o" / "embeddings.parquet").exists()


def test_select_and_write_refusals(data, tmp_path):
    stored = data["version"].stored()
    with pytest.raises(EvaluationError, match="Missing: .*zz"):
        select_rows(stored, EmbedSelection(split_path="s.parquet", partition="test"), ["zz"])
    with pytest.raises(EvaluationError, match="one of"):
        write_embeddings(tmp_path, stored.head(2), np.zeros((2, 3), np.float32), fmt="csv", info={})
    with pytest.raises(EvaluationError, match="one embedding per index row"):
        write_embeddings(tmp_path, stored.head(2), np.zeros((3, 3), np.float32), fmt="npy", info={})


def test_real_checkpoint_end_to_end(data, tmp_path, capsys):
    """A checkpoint written by training's own functions; embeddings equal the embedder's own output."""
    import torch

    from siamese_audio.training.checkpoint import describe, load_embedder, save_checkpoint
    from siamese_audio.training.config import preset
    from siamese_audio.training.model import build_model

    torch.set_num_threads(1)
    version = data["version"]
    model_config, train_config = preset("tiny")
    model_config = dataclasses.replace(model_config, conv_filters=(4,), conv_kernels=(3,), fc_units=16)
    model = build_model(model_config, version.shape, seed=0)
    run_meta = {"feature_version_id": version.version_id, "feature_config": dict(version.feature_config),
                "split_id": "s0", "dataset": "audiomnist", "training_classes": list(TRAIN),
                "validation_classes": list(VALIDATION), "features_path": data["features"], "split_path": data["split"]}
    payload = {**describe(model_config=model_config, train_config=train_config, input_shape=version.shape,
                          run_meta=run_meta),
               "kind": "best", "model_state": model.state_dict(), "epoch": 0, "best_val_accuracy": 0.0,
               "best_epoch": 0, "history": []}
    ckpt = tmp_path / "run" / "best.pt"
    ckpt.parent.mkdir()
    save_checkpoint(ckpt, payload)
    out = tmp_path / "e"
    assert run_cli(["embed", str(ckpt), "--features", data["features"], "--out", str(out), "--split", data["split"],
                    "--device", "cpu", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_clips"] == 6
    table = pq.read_table(out / "embeddings.parquet").to_pandas()
    embedder, _ = load_embedder(str(ckpt), "cpu")
    direct = embedder.embed(version.read(table["row"].to_numpy()))
    np.testing.assert_allclose(np.stack(table["embedding"].to_list()), direct, rtol=1e-5, atol=1e-6)

"""``siamese-audio evaluate``: argument handling, --json output, refusals, a real checkpoint end to end."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from siamese_audio.cli.evaluate import add_parser
from siamese_audio.errors import EvaluationError
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import open_version
from siamese_audio.manifests.splits import Split, write_split

CLASSES = [f"{i:02d}" for i in range(1, 11)]
TRAIN, VALIDATION, TEST = CLASSES[:5], CLASSES[5:7], CLASSES[7:]


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
    root = tmp_path_factory.mktemp("cli")
    path = make_synthetic_version(root / "store", classes=CLASSES, clips_per_class=3, shape=(8, 12), seed=1)
    split = Split("audiomnist", "file", None, {"train": TRAIN, "validation": VALIDATION, "test": TEST})
    split_path = write_split(split, root / "split.parquet")
    return {"version": open_version(path), "features": str(path), "split": str(split_path), "root": root}


@pytest.fixture
def fake_checkpoint(monkeypatch, data):
    """Replace training's loader: a mean-spectrum embedder with a matching description."""
    import siamese_audio.training.checkpoint as checkpoint_module

    version = data["version"]
    meta = {"feature_config": dict(version.feature_config), "feature_version_id": version.version_id,
            "split_id": "s0", "training_classes": list(TRAIN), "dataset": "audiomnist",
            "input_shape": list(version.shape)}
    calls = []

    def load_embedder(path, device="auto", **kw):
        calls.append((path, device))
        return MeanEmbedder(), dict(meta)

    monkeypatch.setattr(checkpoint_module, "load_embedder", load_embedder)
    return {"meta": meta, "calls": calls}


def test_json_line_and_report(data, fake_checkpoint, tmp_path, capsys):
    out = tmp_path / "rep"
    code = run_cli(["evaluate", "ck.pt", "--features", data["features"], "--split", data["split"], "--ways", "3",
                    "--runs", "5", "--seed", "3", "--out", str(out), "--device", "cpu", "--json"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["n_tasks"] == 15 and 0.0 <= result["ci95"][0] <= result["accuracy"] <= result["ci95"][1]
    assert result["per_class"].keys() == set(TEST)
    assert result["baseline_accuracy"] is not None
    assert fake_checkpoint["calls"] == [("ck.pt", "cpu")]
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"] == result["accuracy"] and report["seed"] == 3


def test_same_seed_same_numbers_through_the_cli(data, fake_checkpoint, tmp_path, capsys):
    argv = ["evaluate", "ck.pt", "--features", data["features"], "--split", data["split"], "--ways", "2",
            "--runs", "7", "--json", "--no-curve"]
    run_cli(argv + ["--out", str(tmp_path / "a")])
    run_cli(argv + ["--out", str(tmp_path / "b")])
    a, b = capsys.readouterr().out.strip().splitlines()
    a, b = json.loads(a), json.loads(b)
    a.pop("report_dir"), b.pop("report_dir")
    assert a == b


def test_validation_subset_overlapping_training_classes_is_refused(data, fake_checkpoint, monkeypatch, tmp_path):
    fake_checkpoint["meta"]["training_classes"] = TRAIN + VALIDATION[:1]
    with pytest.raises(EvaluationError, match=rf"\['{VALIDATION[0]}'\]"):
        run_cli(["evaluate", "ck.pt", "--features", data["features"], "--split", data["split"],
                 "--subset", "validation", "--ways", "2", "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_regenerate_avoids_training_classes(data, fake_checkpoint, tmp_path, capsys):
    code = run_cli(["evaluate", "ck.pt", "--features", data["features"], "--regenerate", "3", "--test-classes",
                    "3", "--ways", "3", "--runs", "2", "--out", str(tmp_path / "r"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["split_ids"]) == 3 and result["distribution"]["accuracy"]["n"] == 3
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    for split in report["splits"]:
        assert not set(split["classes"]) & set(TRAIN)


def test_needs_a_split(data, fake_checkpoint):
    with pytest.raises(EvaluationError, match="--split FILE or --regenerate K"):
        run_cli(["evaluate", "ck.pt", "--features", data["features"]])


def test_real_checkpoint_end_to_end(data, tmp_path, capsys):
    """A checkpoint written by training's own functions, loaded by the CLI through load_embedder."""
    import dataclasses

    import torch

    from siamese_audio.training.checkpoint import describe, save_checkpoint
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
    code = run_cli(["evaluate", str(ckpt.parent), "--features", data["features"], "--split", data["split"],
                    "--ways", "3", "--runs", "4", "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_tasks"] == 12
    assert (tmp_path / "run" / "evaluation" / "report.md").is_file()  # default --out: next to the checkpoint


def test_regenerate_excludes_validation_classes_and_prints_both_intervals(data, fake_checkpoint, tmp_path, capsys):
    fake_checkpoint["meta"]["validation_classes"] = list(VALIDATION)
    code = run_cli(["evaluate", "ck.pt", "--features", data["features"], "--regenerate", "3", "--test-classes",
                    "2", "--ways", "2", "--runs", "3", "--out", str(tmp_path / "r"), "--json", "--no-curve"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for split in result["splits"]:
        assert set(split["classes"]) <= set(TEST)  # neither training nor validation classes
    assert result["headline"]["kind"] == "mean_over_splits" and "t-interval" in result["ci_method"]
    assert result["pooled"]["ci_method"].startswith("pooled Wilson")
    assert result["positives"]["applied"] is False and result["n_tied_top"] == 0
    assert any("3 of the 10 stored classes are neither" in n for n in result["notes"])
    # The text form labels the headline and the pooled interval.
    run_cli(["evaluate", "ck.pt", "--features", data["features"], "--regenerate", "3", "--test-classes",
             "2", "--ways", "2", "--runs", "3", "--out", str(tmp_path / "t"), "--no-curve"])
    text = capsys.readouterr().out
    assert "mean over 3 splits" in text and "95% t-interval over split means" in text
    assert "pooled as if independent" in text and "tied top scores: 0 of 18 tasks" in text
    # Too few unseen classes for the asked size: refused, saying how many remain.
    with pytest.raises(EvaluationError, match="3 of the 10 stored classes"):
        run_cli(["evaluate", "ck.pt", "--features", data["features"], "--regenerate", "2", "--test-classes", "4",
                 "--ways", "2", "--out", str(tmp_path / "u")])


def test_explicit_split_of_validation_classes_is_refused_unless_allowed(data, fake_checkpoint, tmp_path, capsys):
    fake_checkpoint["meta"]["validation_classes"] = list(VALIDATION)
    argv = ["evaluate", "ck.pt", "--features", data["features"], "--split", data["split"], "--subset", "validation",
            "--ways", "2", "--runs", "3", "--no-curve", "--out", str(tmp_path / "r")]
    with pytest.raises(EvaluationError, match=rf"validation classes \['{VALIDATION[0]}', '{VALIDATION[1]}'\]"):
        run_cli(argv)
    assert run_cli(argv + ["--allow-overlap", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["overlap"].values()) == [{c: "validation" for c in VALIDATION}]


def test_same_source_ok_is_recorded(data, fake_checkpoint, tmp_path, capsys):
    run_cli(["evaluate", "ck.pt", "--features", data["features"], "--split", data["split"], "--ways", "2",
             "--runs", "3", "--no-curve", "--same-source-ok", "--json", "--out", str(tmp_path / "r")])
    result = json.loads(capsys.readouterr().out)
    assert result["positives"]["rule"] == "any_clip"
    assert json.loads((tmp_path / "r" / "report.json").read_text())["settings"]["same_source_ok"] is True

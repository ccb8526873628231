"""``siamese-audio explain`` on a checkpoint written by training's own functions: files, JSON, refusals, task ids."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from siamese_audio.cli import main
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import open_version
from siamese_audio.manifests.splits import Split, write_split

CLASSES = [f"{i:02d}" for i in range(1, 11)]
TRAIN, VALIDATION, TEST = CLASSES[:5], CLASSES[5:7], CLASSES[7:]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A sealed version, a split and a tiny-preset checkpoint (training's describe/save_checkpoint)."""
    import torch

    from siamese_audio.training.checkpoint import describe, save_checkpoint
    from siamese_audio.training.config import preset
    from siamese_audio.training.model import build_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("explain")
    path = make_synthetic_version(root / "store", classes=CLASSES, clips_per_class=3, shape=(32, 40), seed=1)
    version = open_version(path)
    split_path = write_split(Split("audiomnist", "file", None,
                                   {"train": TRAIN, "validation": VALIDATION, "test": TEST}), root / "split.parquet")
    model_config, train_config = preset("tiny")
    model_config = dataclasses.replace(model_config, conv_filters=(4,), conv_kernels=(3,), fc_units=16)
    model = build_model(model_config, version.shape, seed=0)
    model.set_input_stats(-40.0, 4.0)
    run_meta = {"feature_version_id": version.version_id, "feature_config": dict(version.feature_config),
                "split_id": "s0", "dataset": "audiomnist", "training_classes": list(TRAIN),
                "validation_classes": list(VALIDATION), "features_path": str(path), "split_path": str(split_path)}
    payload = {**describe(model_config=model_config, train_config=train_config, input_shape=version.shape,
                          run_meta=run_meta),
               "kind": "best", "model_state": model.state_dict(), "epoch": 0, "best_val_accuracy": 0.0,
               "best_epoch": 0, "history": []}
    checkpoint = root / "run" / "best.pt"
    checkpoint.parent.mkdir()
    save_checkpoint(checkpoint, payload)
    return {"features": str(path), "split": str(split_path), "checkpoint": str(checkpoint), "root": root}


def explain(demo, out, *extra):
    return main(["explain", demo["checkpoint"], "--features", demo["features"], "--split", demo["split"],
                 "--ways", "3", "--runs", "4", "--min-size", "40", "--device", "cpu", "--out", str(out),
                 "--no-progress", *extra])


def test_files_json_line_and_task_ids_match_evaluate(demo, tmp_path, capsys):
    out = tmp_path / "ex"
    assert explain(demo, out, "--task", "2", "9", "--sonify-tasks", "1", "--sanity", "--random-orders", "3",
                   "--json") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["task_ids"] == [2, 9] and summary["n_tasks_drawn"] == 12 and summary["method"] == "sinex"
    assert summary["wavs"] == 1 + 3 + 3 + 3 and summary["round_trip_median_db"] < 3.0
    assert [s["randomised_down_to"] for s in summary["sanity"]] == ["head", "encoder.layers.4", "encoder.layers.0"]

    def strict(constant):
        raise AssertionError(f"explain.json holds {constant}: not strict JSON")

    record = json.loads((out / "explain.json").read_text(), parse_constant=strict)
    assert record["feature_version_id"] == open_version(demo["features"]).version_id
    assert record["split_id"] and record["settings"]["fill"] == "floor" and "rho" in record["settings"]["relevance"]
    assert set(record["library_versions"]) >= {"numpy", "scikit-image", "librosa", "siamese-audio"}
    assert record["settings"]["same_source_ok"] is False and record["positives"]["sources_known"] is False
    assert record["seen_by_checkpoint"] == {} and record["tasks"][0]["positive_same_recording"] is None
    for name in ("faithfulness.csv", "faithfulness.png", "tasks/task_00002.npz", "tasks/task_00002.png",
                 "tasks/task_00002_overlay.png", "tasks/task_00009_overlay.png", "audio/task_00002/query.wav",
                 "audio/task_00002/support0_top3.wav", "audio/task_00002/support0_minus_top3.wav"):
        assert (out / name).is_file(), name
    assert not (out / "audio" / "task_00009").exists()  # --sonify-tasks 1
    arrays = np.load(out / "tasks" / "task_00002.npz")
    assert arrays["labels"].dtype == np.int16 and arrays["heatmaps"].dtype == np.float32
    assert arrays["labels"].shape == arrays["heatmaps"].shape == (3, 32, 40)

    task = record["tasks"][0]
    support = task["supports"][task["positive"]]
    assert support["positive"] and support["n_segments"] == len(support["segments"])
    assert -1.0 <= support["rho_size_spearman"] <= 1.0
    assert all(np.isfinite([s["v_top_kept"], s["v_top_removed"]]).all() for s in task["supports"])
    seg = support["segments"][0]
    assert set(seg) == {"label", "size", "bbox_hz", "bbox_s", "u", "h", "rho", "rank"}
    assert seg["rho"] == -seg["h"] and seg["bbox_hz"][0] <= seg["bbox_hz"][1]
    assert sorted(s["rank"] for s in support["segments"]) == list(range(support["n_segments"]))
    np.testing.assert_allclose(arrays["heatmaps"][task["positive"]][arrays["labels"][task["positive"]] == 0],
                               support["segments"][0]["rho"], rtol=1e-6)
    faith = pd.read_csv(out / "faithfulness.csv")
    assert len(faith) == 2 and faith["positive"].all()  # --faithfulness positive: one support per task

    # The same tasks as evaluate's with the same --ways --runs --seed.
    assert main(["evaluate", demo["checkpoint"], "--features", demo["features"], "--split", demo["split"],
                 "--ways", "3", "--runs", "4", "--device", "cpu", "--out", str(tmp_path / "ev"), "--no-curve",
                 "--json"]) == 0
    capsys.readouterr()
    (split_dir,) = [p for p in (tmp_path / "ev").iterdir() if p.is_dir()]
    tasks = pd.read_csv(split_dir / "tasks.csv").set_index("task")
    for task in record["tasks"]:
        row = tasks.loc[task["task"]]
        assert task["query"]["row"] == row["query_row"]
        assert " ".join(str(s["row"]) for s in task["supports"]) == row["support_rows"]
        assert task["supports"][task["positive"]]["row"] == row["positive_row"]
        assert task["correct"] == bool(row["correct"])


def test_sinexc_twice_gives_the_same_bytes_and_tasks_spread_over_classes(demo, tmp_path, capsys):
    for name in ("a", "b"):
        assert explain(demo, tmp_path / name, "--tasks", "3", "--method", "sinexc", "--alpha", "2",
                       "--no-sonify", "--faithfulness", "none") == 0
    capsys.readouterr()
    a = np.load(tmp_path / "a" / "tasks" / "task_00000.npz")
    b = np.load(tmp_path / "b" / "tasks" / "task_00000.npz")
    assert a["heatmaps"].tobytes() == b["heatmaps"].tobytes()
    record = json.loads((tmp_path / "a" / "explain.json").read_text())
    assert record["task_ids"] == [0, 6, 11]  # spread over the 12 tasks: each of the 3 query classes
    assert len({t["query"]["class"] for t in record["tasks"]}) == 3
    assert record["faithfulness"] is None and not (tmp_path / "a" / "faithfulness.csv").exists()
    assert record["settings"]["segmenter"]["min_size"] == 40 and record["settings"]["alpha"] == 2


def test_refusals_as_evaluate(demo, tmp_path, monkeypatch, capsys):
    import siamese_audio.training.checkpoint as checkpoint_module

    real = checkpoint_module.load_embedder

    def refused(out, *extra) -> str:
        assert explain(demo, out, "--no-sonify", *extra) == 2
        assert not out.exists()
        return capsys.readouterr().err

    def overlapping(path, device="auto", **kw):
        embedder, meta = real(path, device, **kw)
        return embedder, {**meta, "training_classes": TRAIN + [TEST[0]]}

    monkeypatch.setattr(checkpoint_module, "load_embedder", overlapping)
    assert f"['{TEST[0]}']" in refused(tmp_path / "r1")

    def mismatched(path, device="auto", **kw):
        embedder, meta = real(path, device, **kw)
        return embedder, {**meta, "feature_config": {**meta["feature_config"], "hop_length": 999}}

    monkeypatch.setattr(checkpoint_module, "load_embedder", mismatched)
    assert "hop_length: checkpoint 999" in refused(tmp_path / "r2")
    monkeypatch.setattr(checkpoint_module, "load_embedder", real)
    assert "task ids from 0 to 11" in refused(tmp_path / "r3", "--task", "12")
    assert "--fill" in refused(tmp_path / "r4", "--fill", "loud")
    assert "--beta" in refused(tmp_path / "r5", "--method", "sinexc", "--beta", "2")

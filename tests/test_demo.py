"""The end-to-end demo on generated audio, shortened (10 epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from siamese_audio.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports_accuracy_with_ci(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--max-epochs", "10", "--workers", "1",
                 "--explain-tasks", "1", "--no-sonify", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    s = json.loads(out[0])
    assert s["n_tasks"] == 500 and 0.0 <= s["ci95"][0] <= s["accuracy"] <= s["ci95"][1] <= 1.0
    assert s["epochs_run"] == 10 and Path(s["checkpoint"]).is_file()
    assert Path(s["report"]).is_file() and Path(s["store"]).is_dir()
    names = {Path(f).name for f in s["figures"]}
    assert names == {"logmel_examples.png", "accuracy_vs_ways.png", "confusion.png", "curves.png",
                     "faithfulness.png", "task_00000.png", "task_00000_overlay.png"}
    explain = s["explain"]
    assert explain["task_ids"] == [0] and Path(explain["explain_json"]).is_file()
    assert explain["faithfulness"]["n_supports"] == 1 and len(explain["sanity"]) >= 2
    assert all(Path(f).stat().st_size > 10_000 for f in s["figures"])
    # Issue 11: what was controlled, and the re-evaluation on splits of classes the checkpoint never saw.
    assert s["overlap"] == {} and 0 <= s["n_tied_top"] <= s["n_tasks"]
    assert s["positives"]["applied"] is False  # generated AudioMNIST layout: no source recordings
    r = s["regenerated"]
    split = pd.read_parquet(tmp_path / "demo" / "split.parquet")
    seen = set(split.loc[split["split"] != "test", "class"])
    assert len(r["splits"]) == 5 and all(not set(sp["classes"]) & seen for sp in r["splits"])
    head = r["headline"]
    assert head["kind"] == "mean_over_splits" and head["ci95"][0] <= head["accuracy"] <= head["ci95"][1]
    assert r["pooled"]["ci_method"].startswith("pooled Wilson")

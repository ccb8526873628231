"""Accuracy on real audio: build -> split -> train -> evaluate, in one run, written as a Markdown table.

For each split: the CPU preset (default ``cpu-esc50``) is trained on its training classes within
the preset's time budget, validated on its validation classes (where the best checkpoint is
chosen), and its best checkpoint is then scored once on the test classes with 5-way one-shot
tasks (at least 1,000), each accuracy with its 95% Wilson interval, next to the no-learning
baseline (cosine of the raw log-mels) on the very same tasks. Regenerated splits are summarised by
the mean of their accuracies with a 95% t-interval over splits.

    .venv/bin/python benchmarks/bench_accuracy.py ESC50_DIR [--splits report,metaaudio,random:5]
        [--preset cpu-esc50] [--store DIR] [--out DIR] [--max-minutes M] [--tasks 1000] [--seed 0]

Targets (issue: learning on real audio): report split >= 0.80, MetaAudio split >= 0.72, the mean
over 5 regenerated 40/5/5 splits >= 0.72, each >= its baseline + 0.25. A run directory that
already holds a finished run is evaluated again, not retrained (an interrupted benchmark resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from siamese_audio.evaluation.reevaluate import SplitSource, evaluate_checkpoint
from siamese_audio.evaluation.suite import EvaluationSettings
from siamese_audio.features.store import open_version
from siamese_audio.manifests.splits import make_metaaudio_split, make_random_split, make_report_split, write_split
from siamese_audio.pipeline.build import BuildConfig, build
from siamese_audio.training.checkpoint import load_embedder
from siamese_audio.training.config import preset
from siamese_audio.training.data import open_training_inputs
from siamese_audio.training.loop import fit, run_data_from_inputs

TARGETS = {"report": 0.80, "metaaudio": 0.72, "random-mean": 0.72}
MARGIN = 0.25  # over the raw baseline on the same tasks


def parse_splits(text: str, classes: list[str], sizes: tuple[int, int, int]) -> list[tuple[str, object]]:
    """``report,metaaudio,random:5`` -> [(name, Split)] (random splits use seeds 1..K of ``sizes``; ``random:4-5``
    seeds 4 and 5 only, e.g. to add splits to an earlier run)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == "report":
            out.append(("report", make_report_split("esc50")))
        elif part == "metaaudio":
            out.append(("metaaudio", make_metaaudio_split("esc50")))
        elif part.startswith("random:"):
            first, _, last = part.split(":", 1)[1].rpartition("-")
            for seed in range(int(first or 1), int(last) + 1):
                out.append((f"random-{seed}", make_random_split("esc50", seed=seed, sizes=sizes, classes=classes)))
        else:
            raise SystemExit(f"unknown split {part!r}: expected report, metaaudio, random:K or random:A-B")
    return out


def t_interval(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, sd and the 95% t-interval of the mean over ``values`` (the splits)."""
    from siamese_audio.evaluation.metrics import t_interval as interval

    a = np.asarray(values, dtype=float)
    low, high = interval(values) or (float(a.mean()), float(a.mean()))
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0, low, high


def train_and_evaluate(name: str, split, version, args, out: Path) -> dict:
    split_path = write_split(split, out / f"{name}.parquet")
    model_cfg, train_cfg = preset(args.preset)
    train_cfg = dataclasses.replace(train_cfg, seed=args.seed)
    if args.max_minutes is not None:
        train_cfg = dataclasses.replace(train_cfg, max_minutes=args.max_minutes)
    run_dir = out / "runs" / name
    t0 = time.perf_counter()
    data = run_data_from_inputs(open_training_inputs(version.path, split_path))
    trained = fit(data, model_cfg, train_cfg, run_dir, device="cpu", resident=True,
                  resume=(run_dir / "last.pt").exists(), progress=not args.no_progress)
    wall = time.perf_counter() - t0
    embedder, meta = load_embedder(trained.best_checkpoint, "cpu")
    n_test = len(split.classes["test"])
    settings = EvaluationSettings(ways=5, runs=math.ceil(args.tasks / n_test), seed=args.seed, curve=False)
    report = evaluate_checkpoint(embedder, meta, version, [SplitSource(split=split, path=str(split_path))], settings,
                                 checkpoint=str(trained.best_checkpoint), subset="test")
    pooled = report.pooled()
    best = next(r for r in trained.history if r.epoch == trained.best_epoch)
    return {
        "split": name, "split_id": split.split_id, "test_classes": list(split.classes["test"]),
        "accuracy": pooled["accuracy"], "ci95": pooled["ci95"], "n_tasks": pooled["n_tasks"],
        "baseline": pooled["baseline_accuracy"], "training_minutes": round(trained.elapsed_s / 60, 2),
        "process_minutes": round(wall / 60, 2), "epochs": trained.epochs_run, "stopped": trained.stopped,
        "best_epoch": trained.best_epoch, "best_val": best.val_accuracy,
        "best_val_ci95": [best.val_ci95_low, best.val_ci95_high], "best_val_tasks": best.val_n_tasks,
        "positives": report.to_dict().get("positives"), "report_notes": list(report.notes),
    }


def markdown(rows: list[dict], args, version_id: str) -> str:
    lines = [
        f"# Accuracy on real ESC-50 ({args.preset}, seed {args.seed}, feature version {version_id})", "",
        "5-way one-shot accuracy on each split's test classes (never seen in training; the checkpoint was chosen on "
        "the validation classes), 95% Wilson interval over the tasks, and the raw log-mel cosine baseline on the same "
        "tasks.", "",
        "| split | test classes | accuracy | 95% CI | tasks | baseline | training min | epochs (stop) | best validation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['split']} | {', '.join(r['test_classes'])} | **{r['accuracy']:.3f}** | "
            f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['n_tasks']} | {r['baseline']:.3f} | "
            f"{r['training_minutes']:.1f} | {r['epochs']} ({r['stopped']}) | {r['best_val']:.3f} "
            f"[{r['best_val_ci95'][0]:.3f}, {r['best_val_ci95'][1]:.3f}] / {r['best_val_tasks']} at {r['best_epoch']} |")
    randoms = [r for r in rows if r["split"].startswith("random-")]
    if len(randoms) > 1:
        mean, sd, low, high = t_interval([r["accuracy"] for r in randoms])
        base = float(np.mean([r["baseline"] for r in randoms]))
        lines += ["", f"Regenerated 40/5/5 splits ({len(randoms)}): mean accuracy **{mean:.3f}**, 95% t-interval over "
                      f"splits [{low:.3f}, {high:.3f}], sd {sd:.3f}, min {min(r['accuracy'] for r in randoms):.3f}, "
                      f"max {max(r['accuracy'] for r in randoms):.3f}; mean baseline {base:.3f}."]
    lines += ["", "Targets:"]
    for r in rows:
        if r["split"] in TARGETS:
            lines.append(f"- {r['split']}: {r['accuracy']:.3f} vs >= {TARGETS[r['split']]:.2f} "
                         f"({'met' if r['accuracy'] >= TARGETS[r['split']] else 'MISSED by %.3f' % (TARGETS[r['split']] - r['accuracy'])})")
    if len(randoms) > 1:
        mean = t_interval([r["accuracy"] for r in randoms])[0]
        lines.append(f"- random mean: {mean:.3f} vs >= {TARGETS['random-mean']:.2f} "
                     f"({'met' if mean >= TARGETS['random-mean'] else 'MISSED by %.3f' % (TARGETS['random-mean'] - mean)})")
    for r in rows:
        ok = r["accuracy"] >= r["baseline"] + MARGIN
        lines.append(f"- {r['split']}: baseline + {MARGIN} = {r['baseline'] + MARGIN:.3f} "
                     f"({'met' if ok else 'MISSED'})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("esc50_dir", type=Path, help="the full ESC-50 in its release layout (audio/, meta/esc50.csv)")
    parser.add_argument("--splits", default="report,metaaudio,random:5")
    parser.add_argument("--preset", default="cpu-esc50")
    parser.add_argument("--store", type=Path, default=Path("bench-output/store"))
    parser.add_argument("--out", type=Path, default=Path("bench-output/accuracy"))
    parser.add_argument("--max-minutes", type=float, default=None, help="training budget (default: the preset's)")
    parser.add_argument("--tasks", type=int, default=1000, help="test tasks per split, at least (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    built = build(BuildConfig(dataset="esc50", source_dir=args.esc50_dir, store_root=args.store, crop_long=True,
                              progress=not args.no_progress))
    version = open_version(built.path)
    print(f"feature version {built.version_id}: {built.n_stored} clips stored, {built.n_rejected} rejected", flush=True)
    rows = []
    for name, split in parse_splits(args.splits, version.classes(), (40, 5, 5)):
        row = train_and_evaluate(name, split, version, args, args.out)
        rows.append(row)
        print(f"{name}: accuracy {row['accuracy']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] over "
              f"{row['n_tasks']} tasks, baseline {row['baseline']:.3f}, trained {row['training_minutes']:.1f} min "
              f"({row['epochs']} epochs, {row['stopped']})", flush=True)
        (args.out / "accuracy.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = markdown(rows, args, built.version_id)
    (args.out / "accuracy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

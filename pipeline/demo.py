"""``siamese-audio demo``: the whole pipeline on an embedded default, end to end.

Generated audio in the AudioMNIST layout (or a real dataset with ``--data``) →
a sealed feature version (local Dask) → a seeded class split → a small network
trained with validation → C-way one-shot evaluation with a 95% CI, a baseline,
per-class accuracy, confusion matrix and accuracy-vs-C → figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on generated audio (or --data DIR) and print where everything is")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default demo-output/)")
    p.add_argument("--data", type=Path, default=None, help="a real dataset directory instead of generated audio")
    p.add_argument("--dataset", choices=["audiomnist", "esc50"], default="audiomnist")
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (default: one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_demo)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def run_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from evaluation.reevaluate import SplitSource, evaluate_checkpoint
    from evaluation.report import write_report
    from evaluation.suite import EvaluationSettings
    from features.figures import plot_logmel_examples
    from features.store import open_version
    from manifests.dummies import make_audiomnist
    from manifests.errors import SiameseAudioError
    from manifests.splits import make_random_split, write_split
    from pipeline.build import BuildConfig, build
    from training.checkpoint import load_embedder
    from training.config import preset as training_preset
    from training.data import open_training_inputs
    from training.loop import fit, run_data_from_inputs

    t0 = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        dataset = "audiomnist"
        source = out / "data" / "audiomnist"
        if not (source / "data").is_dir():
            _log("generating 20 speakers x 12 clips of synthetic speech-like audio (AudioMNIST layout)")
            make_audiomnist(source, speakers=[f"{i:02d}" for i in range(1, 21)], digits=6, reps=2, seed=args.seed)
    else:
        dataset, source = args.dataset, args.data

    _log(f"building the feature version of {source}")
    built = build(BuildConfig(dataset=dataset, source_dir=source, store_root=out / "store", seed=args.seed,
                              workers=args.workers, crop_long=args.data is not None))
    version = open_version(built.path)
    classes = version.classes()
    if len(classes) < 12:
        raise SiameseAudioError(f"The demo needs at least 12 classes with stored clips; {built.path} has {len(classes)}.")
    n_eval = 5
    sizes = (len(classes) - 2 * n_eval, n_eval, n_eval)
    split = make_random_split(dataset, seed=args.seed, sizes=sizes, classes=classes)
    split_path = write_split(split, out / "split.parquet")
    _log(f"split {split.split_id}: {sizes[0]}/{sizes[1]}/{sizes[2]} classes -> {split_path}")

    model_cfg, train_cfg = training_preset("tiny")
    train_cfg = dataclasses.replace(train_cfg, max_epochs=args.max_epochs, eval_every=10, eval_tasks=100,
                                    patience=8, seed=args.seed)
    run_dir = out / "run"
    if (run_dir / "last.pt").exists():
        import shutil

        shutil.rmtree(run_dir)
    _log(f"training the 'tiny' network (max {train_cfg.max_epochs} epochs, validation every {train_cfg.eval_every})")
    inputs = open_training_inputs(built.path, split_path)
    trained = fit(run_data_from_inputs(inputs), model_cfg, train_cfg, run_dir, device=args.device)

    _log("evaluating the best checkpoint on the test classes (5-way one-shot)")
    embedder, meta = load_embedder(trained.best_checkpoint, args.device)
    settings = EvaluationSettings(ways=n_eval, runs=100, seed=args.seed)
    report = evaluate_checkpoint(embedder, meta, version, [SplitSource(split=split, path=str(split_path))],
                                 settings, checkpoint=str(trained.best_checkpoint), subset="test")
    report_dir = out / "report"
    written = write_report(report, report_dir)
    examples = plot_logmel_examples(version, out / "logmel_examples.png", classes=split.classes["test"])
    pooled = report.pooled()
    best = next((r for r in trained.history if r.epoch == trained.best_epoch), None)
    val_ci = [best.val_ci95_low, best.val_ci95_high] if best else [0.0, 0.0]
    val_tasks = best.val_n_tasks if best else 0
    figures = sorted(str(p) for p in [examples, *report_dir.rglob("*.png"), *run_dir.glob("*.png")])
    summary: dict[str, Any] = {
        "dataset": dataset, "source": str(source), "store": str(built.path), "version_id": built.version_id,
        "split": str(split_path), "split_id": split.split_id, "checkpoint": str(trained.best_checkpoint),
        "best_val_accuracy": trained.best_val_accuracy, "best_val_ci95": val_ci, "best_val_n_tasks": val_tasks,
        "best_epoch": trained.best_epoch,
        "epochs_run": trained.epochs_run, "accuracy": pooled["accuracy"], "ci95": pooled["ci95"],
        "n_tasks": pooled["n_tasks"], "baseline_accuracy": pooled["baseline_accuracy"],
        "report": str(written.get("report.md", report_dir / "report.md")), "figures": figures,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.json:
        print(json.dumps(summary, sort_keys=True, default=str))
        return 0
    low, high = summary["ci95"]
    print("\n".join([
        f"feature version  {built.version_id}  ({built.n_stored} clips stored, {built.n_rejected} rejected)",
        f"  store          {built.path}",
        f"split            {split.split_id}  {split_path}",
        f"checkpoint       {trained.best_checkpoint}",
        f"validation       best {trained.best_val_accuracy:.3f}  95% Wilson CI [{val_ci[0]:.3f}, {val_ci[1]:.3f}]  "
        f"over {val_tasks} tasks, at epoch {trained.best_epoch} ({trained.epochs_run} epochs run)",
        f"test accuracy    {summary['accuracy']:.3f}  95% Wilson CI [{low:.3f}, {high:.3f}]  "
        f"over {summary['n_tasks']} {n_eval}-way one-shot tasks",
        f"baseline         {summary['baseline_accuracy']:.3f}  (cosine of raw log-mels, same tasks; chance {1 / n_eval:.2f})",
        f"report           {summary['report']}",
        "figures          " + "\n                 ".join(figures),
        f"took {summary['seconds']} s",
    ]))
    return 0

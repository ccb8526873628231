"""``siamese-audio evaluate``: parse the command line and call the evaluation library.

::

    siamese-audio evaluate CHECKPOINT --features VERSION_PATH --split SPLIT.parquet [--split ...]
        [--regenerate K [--test-classes N]] [--subset test|validation] [--ways C] [--runs N] [--seed N]
        [--batch-size B] [--out REPORT_DIR] [--device auto] [--allow-overlap] [--allow-feature-mismatch]
        [--same-source-ok] [--no-curve] [--no-baseline] [--json]

The shell composes the stages here: it loads the checkpoint with training's
loader and hands evaluation the embedder and the checkpoint's description;
the evaluation stage itself never imports training.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from siamese_audio.cli.output import check_out_dir, emit
from siamese_audio.errors import EvaluationError
from siamese_audio.lock import hold_directory

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Register the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="C-way one-shot evaluation of a checkpoint (accuracy, per class, confusion, C-curve, baseline)",
        description=(
            "Evaluate a checkpoint with C-way one-shot tasks on the test (or validation) classes of one or "
            "several splits, on any feature version of its dataset. Writes report.json, report.md, CSVs and "
            "PNGs to --out. Refuses evaluating classes the checkpoint trained on or was validated on, and "
            "feature versions computed with other settings, unless allowed. Positive supports come from "
            "another recording than the query's where the catalog knows the sources (ESC-50)."
        ),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="best.pt / last.pt, or a run directory (its best.pt)")
    p.add_argument("--features", required=True, metavar="VERSION_PATH", help="sealed feature version directory")
    p.add_argument("--split", action="append", default=[], metavar="SPLIT.parquet",
                   help="split manifest to evaluate (repeat for several)")
    p.add_argument("--regenerate", type=int, default=None, metavar="K",
                   help="also draw K random splits (seeds SEED..SEED+K-1) whose test classes avoid the "
                        "checkpoint's training and validation classes; they are evaluated on their test classes, "
                        "and the headline is the mean over splits with a 95%% t-interval")
    p.add_argument("--test-classes", type=int, default=5, metavar="N",
                   help="test classes of each regenerated split (default 5, as the report)")
    p.add_argument("--subset", choices=("test", "validation"), default="test",
                   help="classes of the --split files to evaluate (default test)")
    p.add_argument("--ways", type=int, default=5, metavar="C", help="C of the C-way tasks (default 5)")
    p.add_argument("--runs", type=int, default=60, metavar="N", help="tasks per evaluating class (default 60)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the tasks and regenerated splits")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="clips per embedding batch")
    p.add_argument("--out", default=None, metavar="REPORT_DIR",
                   help="report directory (default: 'evaluation' next to the checkpoint)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="evaluate even when evaluating classes were training or validation classes of the "
                        "checkpoint (not one-shot; the report names them and how they were seen)")
    p.add_argument("--same-source-ok", action="store_true",
                   help="let the positive support come from the query's own source recording (ESC-50 src_file), "
                        "as the report's protocol did; default: from another recording where one exists")
    p.add_argument("--allow-feature-mismatch", action="store_true",
                   help="evaluate on a feature version whose feature config differs from the checkpoint's")
    p.add_argument("--no-curve", action="store_true", help="skip accuracy for C = 2 .. number of classes")
    p.add_argument("--no-baseline", action="store_true", help="skip the no-learning baseline")
    p.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    p.set_defaults(func=run_evaluate)


def default_out_dir(checkpoint: str) -> Path:
    """``<run dir>/evaluation`` for a checkpoint file or a run directory."""
    path = Path(checkpoint)
    return (path if path.is_dir() else path.parent) / "evaluation"


def run_evaluate(args: argparse.Namespace) -> int:
    """Load, check, evaluate, write the report, print the summary. Returns the exit code."""
    from siamese_audio.evaluation.planning import regenerate_splits
    from siamese_audio.evaluation.reevaluate import evaluate_checkpoint
    from siamese_audio.evaluation.report import write_report
    from siamese_audio.evaluation.suite import EvaluationSettings
    from siamese_audio.training.inputs import open_inputs

    if not args.split and args.regenerate is None:
        raise EvaluationError("Expected at least one --split FILE or --regenerate K. Got neither.")
    if args.regenerate is not None and args.subset != "test":
        raise EvaluationError("Regenerated splits are evaluated on their test classes; use --subset test "
                              f"with --regenerate (got --subset {args.subset}).")
    out_dir = check_out_dir(args.out or default_out_dir(args.checkpoint), option="--out", error=EvaluationError)
    with hold_directory(out_dir, what=f"Report directory {out_dir}", error=EvaluationError):
        settings = EvaluationSettings(ways=args.ways, runs=args.runs, seed=args.seed, batch_size=args.batch_size,
                                      curve=not args.no_curve, baseline=not args.no_baseline,
                                      same_source_ok=args.same_source_ok)
        log.info(f"loading {args.checkpoint} (device {args.device})")
        inputs = open_inputs(args.checkpoint, args.features, args.split, device=args.device)
        version, sources, embedder, meta = inputs.version, inputs.sources, inputs.embedder, inputs.meta
        notes: list[str] = []
        if args.regenerate is not None:
            drawn, notes = regenerate_splits(version, meta.get("training_classes", []), k=args.regenerate,
                                             seed=args.seed, n_classes=args.test_classes,
                                             validation_classes=meta.get("validation_classes") or [],
                                             allow_overlap=args.allow_overlap)
            sources += drawn
        log.info(f"evaluating {len(sources)} split(s): {settings.ways}-way, {settings.runs} tasks per class")
        report = evaluate_checkpoint(
            embedder, meta, version, sources, settings, checkpoint=str(args.checkpoint), subset=args.subset,
            allow_overlap=args.allow_overlap, allow_feature_mismatch=args.allow_feature_mismatch, notes=notes,
        )
        write_report(report, out_dir)
        for note in report.notes:
            log.info(f"note: {note}")
        summary: dict[str, Any] = {
            **report.summary(),
            "ways": settings.ways, "runs": settings.runs, "seed": settings.seed,
            "feature_version_id": version.version_id, "checkpoint": str(args.checkpoint),
            "report_dir": str(out_dir),
        }
        emit(summary, args.json, _text(summary))
        return 0


def _text(s: dict[str, Any]) -> str:
    head, pooled = s["headline"], s["pooled"]
    low, high = head["ci95"]
    if head["kind"] == "mean_over_splits":
        lines = [f"{s['ways']}-way one-shot accuracy, mean over {head['n_splits']} splits: {head['accuracy']:.3f} "
                 f"(95% t-interval over split means {low:.3f}-{high:.3f}; sd {head['sd']:.3f}, "
                 f"min {head['min']:.3f}, max {head['max']:.3f})",
                 f"  pooled over all {pooled['n_tasks']} tasks: {pooled['accuracy']:.3f} (95% Wilson CI, pooled "
                 f"as if independent: {pooled['ci95'][0]:.3f}-{pooled['ci95'][1]:.3f}; too narrow)"]
        for split in s["splits"]:
            lines.append(f"  split {split['split_id']} [{', '.join(split['classes'])}]: {split['accuracy']:.3f} "
                         f"(95% Wilson CI {split['ci95'][0]:.3f}-{split['ci95'][1]:.3f}, {split['n_tasks']} tasks)")
    else:
        lines = [f"{s['ways']}-way one-shot accuracy: {head['accuracy']:.3f} "
                 f"(95% Wilson CI {low:.3f}-{high:.3f}, {s['n_tasks']} tasks)"]
    if s["baseline_accuracy"] is not None:
        lines.append(f"baseline (cosine of raw log-mels): {s['baseline_accuracy']:.3f}")
    lines.append(f"tied top scores: {s['n_tied_top']} of {s['n_tasks']} tasks")
    lines.append(f"positive supports: {s['positives']['description']}")
    if s["overlap"]:
        seen = "; ".join(f"{sid}: " + ", ".join(f"{c} ({how})" for c, how in classes.items())
                         for sid, classes in s["overlap"].items())
        lines.append(f"seen by the checkpoint (--allow-overlap, not one-shot): {seen}")
    lines += [f"  {c}: {a:.3f}" for c, a in s["per_class"].items()]
    lines.append(f"report: {s['report_dir']}")
    return "\n".join(lines)

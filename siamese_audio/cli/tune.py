"""``siamese-audio tune``: argument parsing only; the work is in :func:`siamese_audio.training.tune.tune`."""

from __future__ import annotations

import argparse
from pathlib import Path

from siamese_audio.cli.output import emit
from siamese_audio.training.config import PRESETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``tune`` subcommand."""
    p = subparsers.add_parser(
        "tune", help="search hyper-parameters (the report's Table 2.2) with Optuna, trials on a Dask cluster",
        description="Train one configuration per trial on the training classes of a split and maximise the "
                    "validation accuracy (TPE sampler, pruning at each validation); the test classes are never "
                    "read. The study lives in STUDY_DIR (a journal file): a killed tune continues with --resume.",
    )
    p.add_argument("--features", type=Path, help="sealed feature version directory (STORE/{dataset}/{version_id})")
    p.add_argument("--split", type=Path, help="split manifest (Parquet) of the same dataset")
    p.add_argument("--out", type=Path, required=True, metavar="STUDY_DIR",
                   help="study directory: study.journal, trials/, trials.parquet, best.toml, plots, study.md")
    p.add_argument("--space", type=Path, metavar="FILE.toml",
                   help="ranges and choices of model/train fields (default: Table 2.2 on top of the preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="base preset of every trial (default report-audiomnist, or the space file's)")
    p.add_argument("--trials", type=int, default=20, help="trials the study should hold (default 20)")
    p.add_argument("--minutes", type=float, default=0.0, metavar="M",
                   help="start no trial after M minutes of this session (default: no limit)")
    p.add_argument("--trial-minutes", type=float, default=None, metavar="M",
                   help="wall-clock budget of each trial (default: the preset's max_minutes)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="local worker processes, one trial each (default: one per core)")
    where.add_argument("--scheduler", default=None,
                       help="address (tcp://HOST:PORT) or scheduler file of an existing Dask cluster")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of each trial (default: the host's cores over its workers)")
    p.add_argument("--seed", type=int, default=None, help="seed of the TPE sampler (default 0)")
    p.add_argument("--pruner", choices=("median", "halving", "none"), default=None,
                   help="stop poor trials at a validation: median (the default), halving (asynchronous "
                        "successive halving: fewer epochs, riskier), or none")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda, for every trial")
    p.add_argument("--resume", action="store_true",
                   help="continue the study in STUDY_DIR (its data, space, seed and pruner); --trials, "
                        "--minutes, --workers, --scheduler may change")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON line with the result on stdout")
    p.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    """Entry point of ``siamese-audio tune``; returns the exit code."""
    from siamese_audio.errors import TrainingError
    from siamese_audio.files import refuse_inside_version
    from siamese_audio.training.tune import TuneConfig, tune

    refuse_inside_version(args.out, option="--out", error=TrainingError)

    config = TuneConfig(
        out=args.out, features=args.features, split=args.split, space=args.space, preset=args.preset,
        trials=args.trials, minutes=args.minutes, trial_minutes=args.trial_minutes, workers=args.workers,
        threads=args.threads,
        scheduler=args.scheduler, seed=args.seed, pruner=args.pruner, device=args.device, resume=args.resume,
        progress=not args.no_progress,
    )
    result = tune(config)
    best = result.best
    summary = {"study_dir": str(result.study_dir), "best": best, "counts": result.counts, "n_trials": result.n_trials,
               "epochs": result.epochs, "elapsed_s": round(result.elapsed_s, 1), "files": result.files,
               "notes": list(result.notes)}
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.counts.items()))
    if best is None:
        text = f"no trial completed ({counts}); study in {result.study_dir}"
    else:
        ci = best["ci95"] or [0.0, 0.0]
        text = (f"best trial {best['number']}: validation accuracy {best['value']:.3f} (95% Wilson CI "
                f"{ci[0]:.3f}-{ci[1]:.3f}, {best['n_tasks']} tasks); {result.n_trials} trials ({counts}), "
                f"{result.epochs} epochs in {result.elapsed_s / 60:.1f} min\n"
                f"best configs: {result.files.get('best_toml')}  (siamese-audio train --config ...)\n"
                f"summary:      {result.files.get('study_md')}")
    emit(summary, args.json, text)
    return 0

"""``siamese-audio train``: argument parsing only; the work is in :func:`siamese_audio.training.loop.fit`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from siamese_audio.cli.output import check_out_dir, emit
from siamese_audio.errors import TrainingError
from siamese_audio.files import refuse_inside_version
from siamese_audio.training.config import (
    PRECISIONS,
    PRESETS,
    ModelConfig,
    TrainConfig,
    load_config,
    model_config_from_dict,
    preset,
    train_config_from_dict,
)

if TYPE_CHECKING:
    from siamese_audio.training.loop import TrainResult

# torch-importing modules (training.data, training.loop) are imported inside the
# functions: every other subcommand of the console script starts without torch.

#: Command-line overrides of TrainConfig fields (flag dest -> field).
OVERRIDES = ("max_epochs", "eval_every", "eval_tasks", "patience", "seed")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train", help="train a Siamese network on a sealed feature version (Algorithms 1-2)",
        description="Train on the training classes of a split, validate on one-shot tasks of its "
                    "validation classes, keep the best weights in RUN_DIR/best.pt.",
    )
    p.add_argument("--features", type=Path, help="sealed feature version directory (STORE/{dataset}/{version_id})")
    p.add_argument("--split", type=Path, help="split manifest (Parquet) of the same dataset")
    p.add_argument("--out", type=Path, help="run directory (checkpoints, metrics.csv, curves.png)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model and training preset (default report-audiomnist, or the config file's)")
    p.add_argument("--config", type=Path, help="TOML file overriding preset fields ([model], [train])")
    p.add_argument("--max-epochs", type=int, help="epochs at most (report: 5000)")
    p.add_argument("--eval-every", type=int, help="epochs between validations (report: 100)")
    p.add_argument("--eval-tasks", type=int, help="one-shot tasks per validation (report: 300)")
    p.add_argument("--patience", type=int, help="validations without improvement before stopping (report: 10)")
    p.add_argument("--seed", type=int, help="seed of the weights, the batches, the augmentations and the validation tasks")
    p.add_argument("--max-minutes", type=float, metavar="M",
                   help="wall-clock budget of the run in minutes, validations included (0: none); with --resume, "
                        "a larger budget continues a run its budget stopped")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (bf16 autocast on CUDA)")
    p.add_argument("--resident", action="store_true",
                   help="load the training split once into device memory instead of reading each batch")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="auto: bf16 autocast on CUDA, float32 on the CPU; bf16: bf16 autocast on CUDA and the CPU; "
                        "fp32: float32 everywhere; bf16-native: bf16 on CUDA and on a CPU with AVX-512 BF16 or AMX, "
                        "float32 on other CPUs (default: the training config's precision; the cpu presets' is "
                        "bf16-native)")
    p.add_argument("--profile", action="store_true",
                   help="time each epoch's batch reading and step; the result carries the timings")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (default --out) from its last checkpoint, "
                        "with the checkpoint's settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON line with the result on stdout")
    p.set_defaults(func=run_train)


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """Preset, then the TOML file, then the command-line overrides."""
    if args.config is not None:
        model, train = load_config(args.config, preset_name=args.preset)
    else:
        model, train = preset(args.preset or "report-audiomnist")
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    return model, dataclasses.replace(train, **overrides)


def _resume_args(args: argparse.Namespace) -> tuple[Path, dict]:
    run_dir = args.out if args.resume is True else Path(args.resume)
    if run_dir is None:
        raise TrainingError("--resume needs a run directory: --resume RUN_DIR, or --resume with --out RUN_DIR.")
    refuse_inside_version(run_dir, option="--resume", error=TrainingError)
    if args.out is not None and args.resume is not True and Path(args.out) != run_dir:
        raise TrainingError(f"--resume {run_dir} and --out {args.out} name different run directories.")
    changed = [f"--{name.replace('_', '-')}" for name in ("preset", "config", *OVERRIDES)
               if getattr(args, name) is not None]
    if changed:
        raise TrainingError(
            f"--resume continues {run_dir} with its checkpoint's settings; expected no {', '.join(changed)}. "
            "Start a new run directory to change them."
        )
    from siamese_audio.training.loop import resume_settings

    return run_dir, resume_settings(run_dir)


def train_from_args(args: argparse.Namespace) -> TrainResult:
    """Open the inputs, build the configs and run :func:`siamese_audio.training.loop.fit`."""
    from siamese_audio.training.data import open_training_inputs
    from siamese_audio.training.loop import fit, run_data_from_inputs

    if args.resume is not None:
        run_dir, saved = _resume_args(args)
        model = model_config_from_dict(saved["model_config"])
        train = train_config_from_dict(saved["train_config"])
        if args.max_minutes is not None:
            train = dataclasses.replace(train, max_minutes=args.max_minutes)
        features = args.features or saved["features_path"]
        split = args.split or saved["split_path"]
        inputs = open_training_inputs(features, split, expect_version_id=saved["feature_version_id"],
                                      expect_split_id=saved["split_id"])
    else:
        missing = [f"--{name}" for name in ("features", "split", "out") if getattr(args, name) is None]
        if missing:
            raise TrainingError(f"train: expected {', '.join(missing)} (or --resume RUN_DIR).")
        run_dir = check_out_dir(args.out, option="--out", error=TrainingError)
        model, train = configs_from_args(args)
        if args.max_minutes is not None:
            train = dataclasses.replace(train, max_minutes=args.max_minutes)
        inputs = open_training_inputs(args.features, args.split)
    return fit(run_data_from_inputs(inputs), model, train, run_dir, device=args.device, resident=args.resident,
               resume=args.resume is not None, progress=not args.no_progress, precision=args.precision,
               profile=args.profile)


def run_train(args: argparse.Namespace) -> int:
    """Entry point of ``siamese-audio train``; returns the exit code."""
    result = train_from_args(args)
    best = next((r for r in result.history if r.epoch == result.best_epoch), None)
    summary = {
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "best_val_accuracy": result.best_val_accuracy,
        "best_val_n_tasks": best.val_n_tasks if best else 0,
        "best_val_ci95": [best.val_ci95_low, best.val_ci95_high] if best else None,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped": result.stopped,
        "elapsed_s": round(result.elapsed_s, 1), "max_minutes": result.max_minutes, "timing": result.timing,
        "precision": result.precision, "max_epochs": result.max_epochs,
        "run_dir": str(result.run_dir), "last_checkpoint": str(result.run_dir / "last.pt"),
        "metrics": str(result.run_dir / "metrics.csv"), "curves": str(result.run_dir / "curves.png"),
    }
    ci = summary["best_val_ci95"] or [0.0, 0.0]
    hint = budget_hint(result)
    if hint:
        summary["hint"] = hint
    emit(summary, args.json,
         f"best validation accuracy {result.best_val_accuracy:.3f} (95% Wilson CI {ci[0]:.3f}-{ci[1]:.3f}, "
         f"{summary['best_val_n_tasks']} tasks) at epoch {result.best_epoch} "
         f"({result.epochs_run} epochs in {result.elapsed_s / 60:.1f} min, {result.precision} steps, "
         f"stopped by {result.stopped}); "
         + (f"best weights: {result.best_checkpoint}" if result.best_checkpoint else
          f"best weights: none ({result.run_dir / 'best.pt'} is missing; last.pt holds the latest weights)")
         + (f"\n{hint}" if hint else ""))
    return 0


def budget_hint(result) -> str:
    """What to do when the budget stopped the schedule before its end ("" otherwise).

    The learning-rate schedule is set by epochs (so that a seed gives the same weights on any
    machine); on a machine slower than the one a preset was sized on, the budget stops the run
    before the schedule has decayed. A schedule of the epochs that fitted then runs to its end.
    """
    if result.stopped != "max_minutes" or not result.max_epochs or result.epochs_run >= result.max_epochs:
        return ""
    lr = result.history[-1].lr if result.history else float("nan")
    return (f"the {result.max_minutes:g}-minute budget stopped the run at epoch {result.epochs_run} of its "
            f"{result.max_epochs}-epoch schedule (learning rate still {lr:.2g}; {result.precision} steps): "
            f"on this machine a schedule that fits the budget is --max-epochs {result.epochs_run} "
            f"(or give a larger --max-minutes)")

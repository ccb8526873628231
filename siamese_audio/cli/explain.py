"""``siamese-audio explain``: parse the command line and call the explanation library.

::

    siamese-audio explain CHECKPOINT --features VERSION_PATH --split SPLIT.parquet [--subset test|validation]
        [--ways C] [--runs N] [--tasks N | --task I [I ...]] [--seed S] [--same-source-ok] [--method sinex|sinexc]
        [--segmenter felzenszwalb|slic] [--scale --sigma --min-size --n-segments --compactness]
        [--fill floor|DB] [--alpha A] [--beta B] [--top-k K] [--sonify/--no-sonify] [--sonify-tasks N]
        [--faithfulness all|positive|none] [--steps N] [--random-orders R] [--sanity]
        [--device auto|cpu|cuda] [--batch-size B] [--allow-overlap] [--allow-feature-mismatch]
        --out DIR [--json] [--no-progress]

As ``evaluate`` does, the shell loads the checkpoint with training's loader (in
float32: no bf16 autocast on CUDA) and hands the explanation stage an embedder
and the checkpoint's description; for ``--sanity`` it also hands over
training's randomisation cascade of that model.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from siamese_audio.cli.output import check_out_dir, emit
from siamese_audio.errors import EvaluationError
from siamese_audio.lock import hold_directory

log = logging.getLogger(__name__)


def _task_count_or_list(text: str) -> int | list[int]:
    """``--tasks``: a count (``5``) or a comma-separated list of ids (``3,17,42``)."""
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a comma-separated list of task ids, got {text!r}"
                                         ) from None


def add_parser(subparsers: Any) -> None:
    """Register the ``explain`` subcommand."""
    p = subparsers.add_parser(
        "explain",
        help="SINEX / SINEXC explanations of one-shot decisions, with faithfulness, sanity check and audio",
        description=(
            "Explain which parts of each support spectrogram make the network call it similar to the query, on "
            "evaluate's own tasks (--task 17 is evaluate's task 17 with the same --ways, --runs and --seed). "
            "Writes explain.json, one .npz per task, figures, WAVs, faithfulness.csv and faithfulness.png to "
            "--out. Same refusals as evaluate."
        ),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="best.pt / last.pt, or a run directory (its best.pt)")
    p.add_argument("--features", required=True, metavar="VERSION_PATH", help="sealed feature version directory")
    p.add_argument("--split", required=True, metavar="SPLIT.parquet", help="split manifest whose classes to explain")
    p.add_argument("--subset", choices=("test", "validation"), default="test", help="classes to explain (test)")
    p.add_argument("--ways", type=int, default=5, metavar="C", help="C of the C-way tasks (default 5)")
    p.add_argument("--runs", type=int, default=60, metavar="N",
                   help="tasks per class of evaluate's draw (default 60, as evaluate): it fixes the task ids")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the tasks (as evaluate's), of SINEXC's coalitions and of the random orders")
    p.add_argument("--same-source-ok", action="store_true",
                   help="as evaluate's: positives may come from the query's own source recording (ESC-50)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--tasks", type=_task_count_or_list, default=5, metavar="N|I,J,...",
                       help="how many tasks, spread over the draw (default 5), or a comma-separated list of ids")
    which.add_argument("--task", type=int, nargs="+", action="extend", default=None, metavar="I",
                       help="task ids to explain (evaluate's numbering, from 0)")
    p.add_argument("--method", choices=("sinex", "sinexc"), default="sinex")
    p.add_argument("--segmenter", choices=("felzenszwalb", "slic"), default="felzenszwalb")
    p.add_argument("--scale", type=float, default=None, help="felzenszwalb scale (default 50)")
    p.add_argument("--sigma", type=float, default=None, help="smoothing (default 1.5 felzenszwalb, 1 slic)")
    p.add_argument("--min-size", type=int, default=None,
                   help="felzenszwalb minimum segment size in pixels (default 150; 900 with --method sinexc)")
    p.add_argument("--n-segments", type=int, default=None, help="slic segments (default 15)")
    p.add_argument("--compactness", type=float, default=None, help="slic compactness (default 10)")
    p.add_argument("--fill", default="floor", metavar="floor|DB",
                   help="level of filled pixels: each support's own floor (default) or a dB value "
                        "(-80 reproduces the authors)")
    # Literal here to keep --help fast; tests/test_explain_cli.py checks them against methods.RANKINGS.
    p.add_argument("--ranking", choices=("rho", "u"), default="u",
                   help="rank, colour and keep segments by u (u_i - v, per segment; the more faithful on a real "
                        "model) or by rho = -h (per pixel, the authors'); faithfulness measures both (default u)")
    p.add_argument("--alpha", type=int, default=150, help="SINEXC coalitions per segment (default 150)")
    p.add_argument("--beta", type=float, default=0.15, help="SINEXC probability of another segment (default 0.15)")
    p.add_argument("--top-k", type=int, default=3, metavar="K",
                   help="segments outlined in the overlays and kept in the sonified clips (default 3)")
    p.add_argument("--sonify", action=argparse.BooleanOptionalAction, default=True,
                   help="write WAVs of the query, the supports and their top-k segments (default on)")
    p.add_argument("--sonify-tasks", type=int, default=None, metavar="N",
                   help="sonify only the first N explained tasks (Griffin-Lim costs seconds per clip)")
    p.add_argument("--faithfulness", choices=("all", "positive", "none"), default="positive",
                   help="supports whose deletion / insertion curves are measured (default: the positive one)")
    p.add_argument("--steps", type=int, default=20, metavar="N", help="steps of the deletion / insertion curves")
    p.add_argument("--random-orders", type=int, default=5, metavar="R", help="random orders to compare with")
    p.add_argument("--sanity", action="store_true",
                   help="model-parameter randomisation check: re-initialise the head, then each layer top-down, "
                        "recompute SINEX, report the rank correlations")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto; float32 on CUDA)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="perturbed spectrograms per batch")
    p.add_argument("--allow-overlap", action="store_true",
                   help="explain even when evaluating classes were training classes (not one-shot)")
    p.add_argument("--allow-feature-mismatch", action="store_true",
                   help="explain on a feature version whose feature config differs from the checkpoint's")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run_explain)


def settings_from_args(args: argparse.Namespace):
    """The :class:`~evaluation.explain.run.ExplainSettings` the options describe."""
    from siamese_audio.evaluation.explain.faithfulness import FaithfulnessConfig
    from siamese_audio.evaluation.explain.methods import MethodConfig
    from siamese_audio.evaluation.explain.run import ExplainSettings
    from siamese_audio.evaluation.explain.segments import SegmenterConfig

    task_ids, n_tasks = None, 5
    if args.task is not None:
        task_ids = tuple(args.task)
    elif isinstance(args.tasks, list):
        if not args.tasks:
            raise EvaluationError("Expected --tasks N or a comma-separated list of task ids. Got an empty list.")
        task_ids = tuple(args.tasks)
    else:
        n_tasks = args.tasks
    return ExplainSettings(
        ways=args.ways, runs=args.runs, seed=args.seed, same_source_ok=args.same_source_ok, task_ids=task_ids,
        n_tasks=n_tasks,
        method=MethodConfig(args.method, alpha=args.alpha, beta=args.beta, ranking=args.ranking),
        segmenter=SegmenterConfig.defaults(args.method, args.segmenter, scale=args.scale, sigma=args.sigma,
                                           min_size=args.min_size, n_segments=args.n_segments,
                                           compactness=args.compactness),
        fill=args.fill, top_k=args.top_k, sonify=args.sonify, sonify_tasks=args.sonify_tasks,
        faithfulness=FaithfulnessConfig(args.faithfulness, steps=args.steps, random_orders=args.random_orders),
        sanity=args.sanity, batch_size=args.batch_size,
    )


def run_explain(args: argparse.Namespace) -> int:
    """Load, check, explain, write, print the summary. Returns the exit code."""
    from siamese_audio.evaluation.explain.run import explain_checkpoint
    from siamese_audio.training.embedder import randomisation_cascade
    from siamese_audio.training.inputs import open_inputs

    check_out_dir(args.out, option="--out", error=EvaluationError)
    with hold_directory(args.out, what=f"Output directory {args.out}", error=EvaluationError):
        settings = settings_from_args(args)
        log.info(f"loading {args.checkpoint} (device {args.device}, float32)")
        inputs = open_inputs(args.checkpoint, args.features, [args.split], device=args.device, precision="fp32")
        embedder = inputs.embedder
        cascade = randomisation_cascade(embedder, seed=args.seed) if settings.sanity else None
        result = explain_checkpoint(
            embedder, inputs.meta, inputs.version, inputs.sources[0], settings, out_dir=args.out, checkpoint=str(args.checkpoint),
            subset=args.subset, allow_overlap=args.allow_overlap, allow_feature_mismatch=args.allow_feature_mismatch,
            cascade=cascade, progress=not args.no_progress,
        )
        for note in result.summary["notes"]:
            log.info(f"note: {note}")
        emit(result.summary, args.json, _text(result.summary))
        return 0


def _text(s: dict[str, Any]) -> str:
    from siamese_audio.evaluation.explain.report import summary_lines

    return "\n".join([
        f"explained {len(s['task_ids'])} of {s['n_tasks_drawn']} tasks ({s['method']}, {s['ways']}-way): "
        f"ids {s['task_ids']}; {s['embeddings']} embeddings in {s['seconds']} s",
        *summary_lines(s),
        f"explain.json: {s['explain_json']}",
    ])

"""``siamese-audio embed``: embeddings of a feature version's clips, for use in other tools.

::

    siamese-audio embed CHECKPOINT --features VERSION_PATH --out DIR [--split SPLIT.parquet --subset test]
        [--classes A B ...] [--format parquet|npy] [--batch-size B] [--device auto]
        [--allow-feature-mismatch] [--no-progress] [--json]

The shell loads the checkpoint with training's loader and hands the embedder to evaluation's
:mod:`~siamese_audio.evaluation.embeddings`, which never imports training.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from siamese_audio.cli.output import check_out_dir, emit
from siamese_audio.errors import EvaluationError
from siamese_audio.lock import hold_directory

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Register the ``embed`` subcommand."""
    p = subparsers.add_parser(
        "embed",
        help="write embeddings of a feature version's clips (Parquet or NPY) for use in other tools",
        description=(
            "Embed the stored clips of a feature version with a checkpoint's network and write them to --out: "
            "embeddings.parquet (index columns and a fixed-size list column 'embedding'), or embeddings.npy "
            "(float32, N x D) with index.parquet naming each row; embeddings.json records the checkpoint, the "
            "feature version and the selection. All clips by default; --split/--subset or --classes select."
        ),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="best.pt / last.pt, or a run directory (its best.pt)")
    p.add_argument("--features", required=True, metavar="VERSION_PATH", help="sealed feature version directory")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (outside any feature version)")
    p.add_argument("--split", default=None, metavar="SPLIT.parquet", help="embed only the classes of one partition")
    p.add_argument("--subset", choices=("train", "validation", "test"), default="test",
                   help="partition of --split (default test)")
    p.add_argument("--classes", nargs="+", default=[], metavar="CLASS", help="embed only these classes")
    p.add_argument("--format", choices=("parquet", "npy"), default="parquet", help="output format (default parquet)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="clips per embedding batch")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--allow-feature-mismatch", action="store_true",
                   help="embed a feature version whose feature config differs from the checkpoint's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    p.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    """Open, check, embed, write, print the summary. Returns the exit code."""
    from siamese_audio.evaluation.embeddings import (
        EmbedSelection,
        embed_selected,
        index_frame,
        select_rows,
        selection_info,
        write_embeddings,
    )
    from siamese_audio.evaluation.evaluator import check_batch_size
    from siamese_audio.evaluation.planning import check_compatible, check_meta
    from siamese_audio.features.store import open_version
    from siamese_audio.manifests.splits import read_split
    from siamese_audio.training.checkpoint import load_embedder

    out_dir = check_out_dir(args.out, option="--out", error=EvaluationError)
    with hold_directory(out_dir, what=f"Embedding directory {out_dir}", error=EvaluationError):
        version = open_version(args.features)
        check_batch_size(args.batch_size, option="--batch-size", error=EvaluationError)
        selection = EmbedSelection(classes=tuple(args.classes), split_path=args.split,
                                   partition=args.subset if args.split else None)
        split_classes = None
        if args.split:
            split = read_split(args.split)
            if split.dataset != version.dataset:
                raise EvaluationError(f"{args.split}: a split of dataset {split.dataset!r}; feature version "
                                      f"{version.version_id} is of dataset {version.dataset!r}.")
            split_classes = list(split.classes[args.subset])
        frame = select_rows(version.stored(), selection, split_classes)
        log.info(f"loading {args.checkpoint} (device {args.device})")
        embedder, meta = load_embedder(args.checkpoint, args.device)
        check_meta(meta, str(args.checkpoint))
        notes = check_compatible(meta, version, checkpoint=str(args.checkpoint),
                                 allow_feature_mismatch=args.allow_feature_mismatch)
        matrix = embed_selected(embedder, version.read, frame, batch_size=args.batch_size,
                                progress=not args.no_progress)
        info = {"checkpoint": str(args.checkpoint), "checkpoint_feature_version_id": meta.get("feature_version_id"),
                "feature_version_id": version.version_id, "dataset": version.dataset,
                "selection": selection_info(selection), "notes": notes}
        files = write_embeddings(out_dir, index_frame(frame), matrix, fmt=args.format, info=info)
        summary = {"n_clips": int(matrix.shape[0]), "dimension": int(matrix.shape[1]),
                   "n_classes": int(frame["class"].nunique()), "format": args.format,
                   "feature_version_id": version.version_id, "files": [str(f) for f in files]}
        text = (f"embedded {summary['n_clips']} clips of {summary['n_classes']} classes "
                f"({summary['dimension']} dimensions) from {version.version_id}\n"
                + "\n".join(f"  {f}" for f in summary["files"]))
        emit(summary, args.json, text)
        return 0

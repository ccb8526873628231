"""Subcommands of class splits: ``split`` (make and write a manifest) and ``split-show``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from siamese_audio.errors import SplitError
from siamese_audio.files import refuse_inside_version
from siamese_audio.manifests.classes import DATASETS

if TYPE_CHECKING:
    from siamese_audio.manifests.splits import Split


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split", help="make a class-split manifest (train/validation/test classes) and write it as Parquet",
        description="Make a class split of a dataset and write it as Parquet. Without --features the "
        "dataset's known classes are split; with --features, the classes stored in that version.",
    )
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--scheme", choices=["report", "random", "metaaudio"], default=None,
                   help="report: the report's split; random: seeded (--seed, --sizes); metaaudio: ESC-50's MetaAudio split")
    p.add_argument("--seed", type=int, default=None, help="seed of --scheme random (default 0)")
    p.add_argument("--sizes", default=None, metavar="TRAIN/VAL/TEST",
                   help="class counts, e.g. 40/5/5 (random: default the report's sizes; --from: checked)")
    p.add_argument("--from", dest="from_file", type=Path, default=None, metavar="FILE",
                   help="explicit class lists, CSV (class,split) or JSON; needs no --scheme")
    p.add_argument("--features", type=Path, default=None, metavar="VERSION_PATH",
                   help="a sealed feature version: split its stored classes and check every class has >= 2 clips")
    p.add_argument("--out", type=Path, required=True, help="the manifest to write (.parquet)")
    p.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    p.set_defaults(func=run_split)

    p = sub.add_parser("split-show", help="classes per split of a manifest; clip counts with --features")
    p.add_argument("manifest", type=Path, help="a split manifest (.parquet)")
    p.add_argument("--features", type=Path, default=None, metavar="VERSION_PATH",
                   help="a sealed feature version: show stored clips per class")
    p.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    p.set_defaults(func=run_split_show)


def _make(args: argparse.Namespace, version) -> Split:
    from siamese_audio.manifests import split_lists, splits

    classes = version.classes() if version is not None else None
    if args.from_file is not None:
        if args.scheme is not None or args.seed is not None:
            raise SplitError("Expected either --from FILE or --scheme (with --seed), not both.")
        split = split_lists.split_from_file(args.from_file, dataset=args.dataset)
        splits.validate(split, classes=classes, sizes=args.sizes)
        return split
    if args.scheme is None:
        raise SplitError("Expected --scheme report|random|metaaudio or --from FILE. Got neither.")
    if args.scheme == "random":
        if args.seed is not None and args.seed < 0:  # one rule for seeds (build, train, evaluate)
            raise SplitError(f"Expected --seed to be a non-negative integer. Got {args.seed}.")
        return splits.make_random_split(
            args.dataset, seed=0 if args.seed is None else args.seed, sizes=args.sizes, classes=classes,
        )
    if args.seed is not None or args.sizes is not None:
        raise SplitError(
            f"The {args.scheme} scheme has fixed classes; --seed and --sizes apply to --scheme random. "
            f"Got --seed {args.seed}, --sizes {args.sizes}."
        )
    if args.scheme == "report":
        return splits.make_report_split(args.dataset)
    return splits.make_metaaudio_split(args.dataset)


def _open(path: Path | None):
    if path is None:
        return None
    from siamese_audio.features.store import open_version

    return open_version(path)


def run_split(args: argparse.Namespace) -> int:
    from siamese_audio.cli.output import emit
    from siamese_audio.manifests import split_catalog, splits

    refuse_inside_version(args.out, option="--out", error=SplitError)
    version = _open(args.features)
    if version is not None and version.dataset != args.dataset:
        raise SplitError(f"{args.features}: expected a feature version of {args.dataset!r}. It is of {version.dataset!r}.")
    split = _make(args, version)
    counts = None
    if version is not None:
        split_catalog.validate_against_version(split, version)
        counts = split_catalog.clip_counts(split, version)
    path = splits.write_split(split, args.out)
    payload = {**split.to_json(), "path": str(path)}
    if counts is not None:
        payload["clip_counts"] = counts
        payload["version_id"] = version.version_id
    emit(payload, args.json, _text(split, counts, header=f"wrote {path}"))
    return 0


def run_split_show(args: argparse.Namespace) -> int:
    from siamese_audio.cli.output import emit
    from siamese_audio.manifests import split_catalog, splits

    split = splits.read_split(args.manifest)
    version = _open(args.features)
    payload = {**split.to_json(), "path": str(args.manifest)}
    counts, problems = None, []
    if version is not None:
        counts = split_catalog.clip_counts(split, version)
        problems = split_catalog.catalog_problems(split, version)
        payload.update(clip_counts=counts, version_id=version.version_id, problems=problems)
    text = _text(split, counts, header=str(args.manifest))
    if problems:
        text += "\nPROBLEMS:\n  " + "\n  ".join(problems)
    emit(payload, args.json, text)
    if problems:
        print(f"siamese-audio split-show: {len(problems)} classes have fewer than {splits.MIN_CLIPS} stored clips",
              file=sys.stderr)
    return 1 if problems else 0


def _text(split: Split, counts: dict[str, dict[str, int]] | None, *, header: str) -> str:
    seed = "-" if split.seed is None else split.seed
    lines = [header, f"split {split.split_id}  dataset {split.dataset}  scheme {split.scheme}  seed {seed}"]
    for name, classes in split.classes.items():
        if counts is None:
            lines.append(f"  {name:<10s} {len(classes):3d}: {', '.join(classes)}")
        else:
            total = sum(counts[name].values())
            lines.append(f"  {name:<10s} {len(classes):3d} classes, {total} clips: "
                         + ", ".join(f"{c} ({counts[name][c]})" for c in classes))
    return "\n".join(lines)

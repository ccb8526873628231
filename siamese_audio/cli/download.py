"""Subcommand ``download``: fetch a dataset's release archive and extract the release layout."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch a dataset's release archive, verify it, extract the release layout")
    p.add_argument("dataset", choices=["audiomnist", "esc50"])
    p.add_argument("--to", type=Path, required=True, help="folder to download and extract into")
    p.add_argument("--url", default=None, help="archive URL (default: the dataset's public repository snapshot)")
    p.add_argument("--sha256", default=None, help="expected SHA-256 of the archive (refuse it otherwise)")
    p.add_argument("--max-extracted-gb", type=float, default=None, metavar="GB",
                   help="refuse an archive that unpacks to more than GB gigabytes (default 16)")
    p.add_argument("--max-ratio", type=float, default=None, metavar="R",
                   help="refuse an archive that unpacks to more than R times its size (default 50: a zip bomb)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    import math

    from siamese_audio.cli.output import emit
    from siamese_audio.errors import DatasetLayoutError
    from siamese_audio.files import refuse_inside_version
    from siamese_audio.manifests.download import MAX_EXTRACTED_BYTES, MAX_RATIO, Limits, download

    refuse_inside_version(args.to, option="--to", error=DatasetLayoutError)
    gb = args.max_extracted_gb
    if gb is not None and not (math.isfinite(gb) and gb > 0):
        raise DatasetLayoutError(f"Expected --max-extracted-gb to be a positive number. Got {gb}.")
    limits = Limits(max_bytes=int(gb * 2**30) if gb is not None else MAX_EXTRACTED_BYTES,
                    max_ratio=args.max_ratio if args.max_ratio is not None else MAX_RATIO)
    result = download(args.dataset, args.to, url=args.url, sha256=args.sha256, progress=not args.no_progress,
                      limits=limits)
    text = "\n".join([*result.actions, f"dataset root: {result.root}",
                      f"next: siamese-audio build {args.dataset} {result.root} --store STORE_ROOT"])
    emit(result.to_json(), args.json, text)
    return 0

"""The ``siamese-audio`` console script: one subcommand per stage; it only parses and calls.

Convention for every subcommand: with ``--json``, stdout carries exactly one
line, a JSON object; progress bars and logs go to stderr (``-v`` for more,
``-q`` for less). Errors of the :class:`~siamese_audio.errors.SiameseAudioError`
family print their message on stderr and exit with status 2, as do system errors
(``OSError``: a full disk, a permission) that reach it: one line, no traceback.

This package is the shell above the stages: it may import any of them, and it
composes them where one stage needs another's product (``evaluate`` loads a
checkpoint with training's loader and hands evaluation the embedder).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from siamese_audio.errors import SiameseAudioError
from siamese_audio.files import shorten
from siamese_audio.logs import configure

#: Characters of an error message printed at most (hostile input can make one megabytes long).
MAX_MESSAGE = 2000

# Modules that register their own subcommands with add_parser(subparsers), in help order.
SUBCOMMAND_MODULES = (
    "siamese_audio.cli.build", "siamese_audio.cli.splits", "siamese_audio.cli.download",
    "siamese_audio.cli.train", "siamese_audio.cli.tune", "siamese_audio.cli.evaluate", "siamese_audio.cli.embed",
    "siamese_audio.cli.explain",
    "siamese_audio.cli.demo",
)

# One example line per subcommand, shown at the end of its --help (tests/test_docs_cli.py checks each flag).
EXAMPLES = {
    "build": "siamese-audio build esc50 /data/ESC-50 --store /data/store --crop-long",
    "inspect": "siamese-audio inspect /data/store/esc50/VERSION_ID",
    "verify": "siamese-audio verify /data/store/esc50/VERSION_ID",
    "split": "siamese-audio split esc50 --scheme report --out splits/report.parquet",
    "split-show": "siamese-audio split-show splits/report.parquet --features /data/store/esc50/VERSION_ID",
    "download": "siamese-audio download esc50 --to /data",
    "train": "siamese-audio train --features /data/store/esc50/VERSION_ID --split splits/report.parquet "
             "--out runs/esc50 --preset cpu-esc50",
    "tune": "siamese-audio tune --features /data/store/esc50/VERSION_ID --split splits/report.parquet "
            "--out studies/esc50 --preset report-esc50 --trials 40",
    "evaluate": "siamese-audio evaluate runs/esc50/best.pt --features /data/store/esc50/VERSION_ID "
                "--split splits/report.parquet --ways 5 --out reports/esc50",
    "embed": "siamese-audio embed runs/esc50/best.pt --features /data/store/esc50/VERSION_ID "
             "--out embeddings/esc50 --format parquet",
    "explain": "siamese-audio explain runs/esc50/best.pt --features /data/store/esc50/VERSION_ID "
               "--split splits/report.parquet --task 17 42 --out reports/esc50-explain",
    "demo": "siamese-audio demo --data /data/ESC-50 --dataset esc50",
}


def package_version() -> str:
    """The installed distribution's version (``0+unknown`` when run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("siamese-audio")
    except PackageNotFoundError:
        return "0+unknown"


def make_parser() -> argparse.ArgumentParser:
    """The root parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="siamese-audio",
        description="Few-shot audio learning with Siamese networks: feature store, splits, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log messages on stderr")
    parser.add_argument("-q", "--quiet", action="count", default=0,
                        help="fewer log messages on stderr (-q: warnings and errors, -qq: errors)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    for name, subparser in sub.choices.items():
        if name in EXAMPLES and subparser.epilog is None:
            subparser.epilog = f"example: {EXAMPLES[name]}"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand, and turn its errors into one line and an exit status."""
    parser = make_parser()
    args = parser.parse_args(argv)
    configure(args.verbose - args.quiet)
    try:
        return int(args.func(args) or 0)
    except SiameseAudioError as exc:
        print(f"siamese-audio {args.command}: error: {shorten(str(exc), MAX_MESSAGE)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"siamese-audio {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error of the command
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # The system refused a read or a write the stages did not expect to fail (a full disk, a
        # permission, a file gone): one line naming it; the traceback with -v.
        logging.getLogger(__name__).debug("traceback", exc_info=True)
        where = f" ({shorten(str(exc.filename), 500)})" if getattr(exc, "filename", None) else ""
        print(f"siamese-audio {args.command}: error: {shorten(str(exc.strerror or exc) + where, MAX_MESSAGE)}",
              file=sys.stderr)
        return 2

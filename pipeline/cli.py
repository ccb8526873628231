"""The ``siamese-audio`` console script: one subcommand per stage; it only parses and calls.

Convention for every subcommand: with ``--json``, stdout carries exactly one
line, a JSON object; progress and logs go to stderr. Errors of the
:class:`~manifests.errors.SiameseAudioError` family print their message on
stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from manifests.errors import SiameseAudioError

# Stage modules that register their own subcommands with add_parser(subparsers).
STAGE_CLIS = (
    "pipeline.build_cli", "manifests.cli", "manifests.download_cli", "training.cli", "evaluation.cli", "pipeline.demo",
)


def emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    """Print the result: one JSON line with ``--json``, else ``text``."""
    if as_json:
        print(json.dumps(payload, sort_keys=True, default=str))
    else:
        print(text)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siamese-audio",
        description="Few-shot audio learning with Siamese networks: feature store, splits, training, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STAGE_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SiameseAudioError as exc:
        print(f"siamese-audio {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"siamese-audio {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error of the command
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def path_arg(value: str) -> Path:
    return Path(value)


if __name__ == "__main__":
    sys.exit(main())

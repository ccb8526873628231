"""Subcommand ``demo``: the whole pipeline on an embedded default (the work is in :mod:`siamese_audio.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from siamese_audio.cli.output import emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on generated audio (or --data DIR) and print where everything is")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default demo-output/)")
    p.add_argument("--data", type=Path, default=None, help="a real dataset directory instead of generated audio")
    p.add_argument("--dataset", choices=["audiomnist", "esc50"], default="audiomnist")
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (default: one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=None,
                   help="epochs at most (default: 300 for generated audio, the preset's for --data)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training budget in minutes (default: the preset's; cpu-esc50: 20)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--explain-tasks", type=int, default=3, metavar="N",
                   help="test tasks to explain with SINEX at the end (default 3; 0 skips)")
    p.add_argument("--sonify", action=argparse.BooleanOptionalAction, default=True,
                   help="write WAVs of the first explained task (default on; Griffin-Lim takes seconds a clip)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from siamese_audio.demo import DemoConfig
    from siamese_audio.demo import run_demo as run
    from siamese_audio.errors import SiameseAudioError
    from siamese_audio.files import refuse_inside_version

    refuse_inside_version(args.out, option="--out", error=SiameseAudioError)

    result = run(DemoConfig(out=args.out, data=args.data, dataset=args.dataset, workers=args.workers,
                            seed=args.seed, max_epochs=args.max_epochs, max_minutes=args.max_minutes,
                            device=args.device, explain_tasks=args.explain_tasks, sonify=args.sonify))
    emit(result.summary, args.json, result.text())
    return 0

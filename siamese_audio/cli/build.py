"""Subcommands of the feature store: ``build``, ``inspect``, ``verify``."""

from __future__ import annotations

import argparse
from pathlib import Path

from siamese_audio.cli.output import emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a sealed feature version from a dataset directory")
    p.add_argument("dataset", choices=["audiomnist", "esc50"])
    p.add_argument("source_dir", type=Path, help="dataset root (release layout)")
    p.add_argument("--store", required=True,
                   help="store root (a path or a file:// URL); the version goes to STORE/DATASET/VERSION_ID")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (tcp://HOST:PORT)")
    p.add_argument("--seed", type=int, default=0, help="seed of the zero-pad offsets (default 0)")
    p.add_argument("--strict", action="store_true", help="fail before writing anything if any clip would be rejected")
    p.add_argument("--crop-long", action="store_true", help="keep the start of clips longer than the preset")
    p.add_argument("--clips-per-shard", type=int, default=32, help="clips per shard and per Dask task (default 32)")
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="when another build holds this version's lock, wait up to SECONDS (default: stop at once)")
    p.add_argument("--repair", action="store_true",
                   help="the version is sealed but damaged: rewrite its damaged files from the sources "
                        "(hashes every source file again, as --rehash)")
    p.add_argument("--rehash", action="store_true",
                   help="hash every source file again instead of trusting the hash cache (STORE/.hash-cache/) "
                        "for files whose size, mtime, inode and device did not change")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    p.set_defaults(func=run_build)

    p = sub.add_parser("inspect", help="counts per class, rejected clips, config, sealed or not")
    p.add_argument("version_path", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_inspect)

    p = sub.add_parser("verify", help="recompute a sealed version's checksums and name what changed")
    p.add_argument("version_path", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_verify)


def run_build(args: argparse.Namespace) -> int:
    from siamese_audio.features.store import StoreLayout
    from siamese_audio.pipeline.build import BuildConfig, build

    if args.workers is not None and args.workers < 1:
        from siamese_audio.errors import SiameseAudioError

        raise SiameseAudioError(f"Expected --workers to be at least 1. Got {args.workers}.")
    cfg = BuildConfig(
        dataset=args.dataset, source_dir=args.source_dir, store_root=args.store, seed=args.seed,
        crop_long=args.crop_long, strict=args.strict, workers=args.workers, scheduler=args.scheduler,
        layout=StoreLayout(clips_per_shard=args.clips_per_shard), progress=not args.no_progress,
        lock_wait_s=args.wait_lock, repair=args.repair, rehash=args.rehash,
    )
    result = build(cfg)
    lines = [
        f"version {result.version_id}" + (" (already sealed: nothing to do)" if result.already_sealed else "")
        + (f" (repaired: {len(result.repaired)} damaged files rewritten)" if result.repaired else ""),
        f"path    {result.path}",
        f"stored  {result.n_stored} clips in {len(result.class_counts)} classes; rejected {result.n_rejected}",
    ]
    lines += [f"  rejected {r['source_path'] or r['clip_id']}: {r['reason']}" for r in result.rejected[:20]]
    if len(result.rejected) > 20:
        lines.append(f"  ... {len(result.rejected) - 20} more (siamese-audio inspect {result.path})")
    lines += [f"warning: {w}" for w in result.warnings]
    emit(result.to_json(), args.json, "\n".join(lines))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from siamese_audio.pipeline.inspect import inspect_version

    info = inspect_version(args.version_path)
    text = [
        f"version  {info['version_id']}  ({'sealed' if info['sealed'] else 'NOT sealed'})",
        f"dataset  {info['dataset']}   shape {info['shape']}",
        f"config   {info['feature_config']}",
        f"stored   {info['n_stored']} clips in {len(info['class_counts'])} classes; rejected {info['n_rejected']}",
    ]
    text += [f"  {c:>20s} {n}" for c, n in info["class_counts"].items()]
    text += [f"  rejected {r['source_path'] or r['clip_id']}: {r['reason']}" for r in info["rejected"]]
    emit(info, args.json, "\n".join(text))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from siamese_audio.features.store import verify

    problems = verify(args.version_path)
    text = "intact: every checksum matches" if not problems else "CHANGED:\n  " + "\n  ".join(problems)
    emit({"path": str(args.version_path), "ok": not problems, "problems": problems}, args.json, text)
    return 0 if not problems else 1

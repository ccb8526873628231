"""Turn a staged ESC-50 (release layout) into a bundle small enough to travel to a lent GPU machine.

    python benchmarks/gpu/make_bundle.py ESC50_DIR BUNDLE_DIR [--level 0.9] [--measure N]

Each clip becomes mono Ogg/Opus at 48 kHz (``BUNDLE_DIR/audio/<clip>.ogg``; the ESC-50 adapter
finds a re-encoded clip's row by its stem) and ``meta/esc50.csv`` is copied, so ``siamese-audio build
esc50 BUNDLE_DIR`` works there as on the original. ``--level`` is libsndfile's Opus compression level
(0 = largest; 0.9 gives ~17.5 kB per 5-s clip, ~34 MiB for the 2,000 clips). ``--measure N`` then
compares the log-mels of N clips (evenly spaced, all with ``--measure 0``) of the bundle with the
original's, computed as the store computes them, and prints and writes ``BUNDLE_DIR/distance.json``:
per clip the median and 99th percentile of |dB difference|, summarised by their median and worst.
Encoding is seeded by nothing: the same input and level give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

BUNDLE_RATE = 48_000


def _build_length(sr: int, y_len: int) -> int:
    """Samples the build gets from a clip of ``y_len`` samples at ``sr`` (features.transform.resample's length)."""
    target = _feature_rate()
    return y_len if sr == target else math.ceil(y_len * target / sr)


def _feature_rate() -> int:
    from siamese_audio.features.config import preset

    return preset("esc50").sample_rate


def bundled_length(n: int) -> int:
    """Samples at 48 kHz that the build resamples back to exactly ``n`` at the feature rate.

    The build pads a short clip at an offset drawn from its length, so the bundle must give the same
    length as the original, not one sample more or less: ``ceil(m * rate / 48000) == n``.
    """
    rate = _feature_rate()
    return n if rate == BUNDLE_RATE else (n * BUNDLE_RATE) // rate


def _fit(y: np.ndarray, m: int) -> np.ndarray:
    return y[:m] if len(y) >= m else np.pad(y, (0, m - len(y)))


def encode_clip(args: tuple[Path, Path, float]) -> int:
    """Write ``src`` as mono Opus at 48 kHz to ``dst``; return the bytes written."""
    import soxr

    src, dst, level = args
    y, sr = sf.read(src, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    n = _build_length(sr, len(y))
    if sr != BUNDLE_RATE:
        y = soxr.resample(y, sr, BUNDLE_RATE).astype(np.float32)
    y = _fit(y, bundled_length(n))
    tmp = dst.with_suffix(".ogg.part")
    sf.write(tmp, y, BUNDLE_RATE, format="OGG", subtype="OPUS", compression_level=level)
    tmp.replace(dst)
    return dst.stat().st_size


def _clips(esc50: Path) -> list[Path]:
    audio = esc50 / "audio"
    return sorted(p for p in audio.iterdir() if p.suffix.lower() in (".wav", ".ogg", ".flac")) if audio.is_dir() else []


def make_bundle(esc50: Path, out: Path, level: float, workers: int) -> dict:
    """Encode every clip of ``esc50/audio`` into ``out``; return counts and sizes."""
    wavs = _clips(esc50)
    csv = esc50 / "meta" / "esc50.csv"
    if not wavs or not csv.is_file():
        raise SystemExit(f"{esc50}: expected the ESC-50 release layout (audio/*.wav, meta/esc50.csv)")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(csv, out / "meta" / "esc50.csv")
    jobs = [(w, out / "audio" / f"{w.stem}.ogg", level) for w in wavs]
    with ProcessPoolExecutor(workers) as pool:
        sizes = list(pool.map(encode_clip, jobs, chunksize=16))
    total = sum(sizes) + (out / "meta" / "esc50.csv").stat().st_size
    return {"clips": len(wavs), "level": level, "bytes": total, "mib": round(total / 2**20, 2),
            "kb_per_clip": round(sum(sizes) / len(sizes) / 1000, 1)}


def _store_logmel(path: Path, clip_id: str) -> np.ndarray:
    """The log-mel the build stores for ``path`` (features.clip.prepare_clip, then the transform)."""
    from siamese_audio.features.clip import ClipTask, prepare_clip
    from siamese_audio.features.config import preset
    from siamese_audio.features.transform import logmel

    cfg = preset("esc50")
    y, info = prepare_clip(ClipTask(row=0, clip_id=clip_id, path=str(path)), cfg, seed=0, crop_long=True)
    if y is None:
        raise SystemExit(f"{path}: {info['reason']}")
    return logmel(y, cfg)


def _distance(args: tuple[Path, Path]) -> tuple[float, float]:
    original, bundled = args
    d = np.abs(_store_logmel(original, original.stem) - _store_logmel(bundled, original.stem))
    return float(np.median(d)), float(np.percentile(d, 99))


def measure(esc50: Path, out: Path, n: int, workers: int) -> dict:
    """|dB| distance between the log-mels of ``n`` original clips and their bundled copies."""
    wavs = _clips(esc50)
    if n and n < len(wavs):
        wavs = [wavs[i] for i in np.linspace(0, len(wavs) - 1, n).round().astype(int)]
    with ProcessPoolExecutor(workers) as pool:
        pairs = np.array(list(pool.map(_distance, [(w, out / "audio" / f"{w.stem}.ogg") for w in wavs], chunksize=8)))
    worst = int(pairs[:, 0].argmax())
    return {"clips": len(wavs), "median_db": round(float(np.median(pairs[:, 0])), 3),
            "worst_clip_median_db": round(float(pairs[worst, 0]), 3), "worst_clip": wavs[worst].stem,
            "p99_db_median_over_clips": round(float(np.median(pairs[:, 1])), 3),
            "p99_db_worst": round(float(pairs[:, 1].max()), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("esc50", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--level", type=float, default=0.9, help="Opus compression level, 0..1 (default 0.9)")
    parser.add_argument("--measure", type=int, default=None, metavar="N",
                        help="compare the log-mels of N clips (0: all) with the original's")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if not 0.0 <= args.level <= 1.0:
        parser.error(f"--level must lie in [0, 1]; got {args.level}")
    summary = make_bundle(args.esc50, args.out, args.level, args.workers)
    print(f"bundle {args.out}: {summary['clips']} clips, {summary['mib']} MiB ({summary['kb_per_clip']} kB a clip)")
    if args.measure is not None:
        summary["distance"] = measure(args.esc50, args.out, args.measure, args.workers)
        d = summary["distance"]
        print(f"log-mel |dB| over {d['clips']} clips: median {d['median_db']} (worst clip {d['worst_clip_median_db']}, "
              f"{d['worst_clip']}); 99th percentile: median {d['p99_db_median_over_clips']}, worst {d['p99_db_worst']}")
    (args.out / "distance.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

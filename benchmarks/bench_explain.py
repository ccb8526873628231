"""Batched SINEX vs the authors' per-perturbation loop, side by side in one run; SINEXC's cost per task.

For each feature preset (``audiomnist`` 224 x 224, ``esc50`` 128 x 431), one 5-way
task is built from real clips of ``../shared/data`` when present (generated
tones otherwise), turned into log-mels by the project's own feature code, and
explained with the project's own network wrapper (:class:`TorchEmbedder`,
float32, a ``--model`` preset with freshly initialised weights: speed does not
depend on training):

* SINEX, batched (:func:`evaluation.explain.methods.explain_supports`: the
  query's embedding cached, perturbed supports generated a chunk at a time and
  embedded in full batches across the task's supports) against the naive loop
  (:func:`~evaluation.explain.methods.explain_supports_naive`: for every
  perturbation, embed the query and the perturbed support together and score
  the pair, as the authors' code calls the network). Prints both times, the
  ratio (target >= 4x) and the largest heatmap difference (target <= 1e-6).
* SINEXC (felzenszwalb ``min_size=900``, alpha 150, beta 0.15), batched only:
  embeddings and seconds for the whole task. With ``--model report`` the
  SINEXC time is estimated from the SINEX throughput unless ``--full-sinexc``.

On a CPU both paths are bound by the convolutions (a batch of 8 costs about 8
single forwards), so most of the speed-up is the query no longer embedded with
every perturbation (2x) plus per-call overheads; on a GPU batching itself pays.
Run::

    .venv/bin/python benchmarks/bench_explain.py                  # tiny network, ~5 minutes on 2 cores
    .venv/bin/python benchmarks/bench_explain.py --model report-esc50 --presets esc50
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import numpy as np
import torch

from siamese_audio.evaluation.explain.methods import (
    MethodConfig,
    coalition_rng,
    explain_supports,
    explain_supports_naive,
)
from siamese_audio.evaluation.explain.perturb import fill_level
from siamese_audio.evaluation.explain.segments import SegmenterConfig, segment
from siamese_audio.features.config import FeatureConfig
from siamese_audio.features.config import preset as feature_preset
from siamese_audio.features.transform import logmel, pad_to, resample
from siamese_audio.training.config import preset as training_preset
from siamese_audio.training.embedder import TorchEmbedder
from siamese_audio.training.model import build_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PATTERNS = {"audiomnist": "audiomnist/data/*/*.wav", "esc50": "esc50/audio/*.wav"}


def task_logmels(name: str, config: FeatureConfig, n: int, seed: int) -> tuple[np.ndarray, str]:
    """``n`` log-mels: real clips (one file per class where possible) or generated tones."""
    import soundfile as sf

    files = sorted(glob.glob(str(SHARED / PATTERNS[name])))
    rng = np.random.default_rng(seed)
    out = []
    if len(files) >= n:
        picks = rng.choice(len(files), size=n, replace=False)
        for i in picks:
            y, sr = sf.read(files[i], dtype="float32", always_2d=True)
            y = y.mean(axis=1)
            if sr != config.sample_rate:
                y = resample(y, orig_sr=sr, target_sr=config.sample_rate)
            out.append(logmel(pad_to(y[:config.n_samples], target=config.n_samples, offset=0), config))
        return np.stack(out), f"{n} real clips from {SHARED / PATTERNS[name]}"
    t = np.arange(config.n_samples) / config.sample_rate
    for _ in range(n):
        f = rng.uniform(200, 4000, 3)
        y = sum(np.sin(2 * np.pi * fk * t) * np.exp(-((t - rng.uniform(0, t[-1])) / 0.1) ** 2) for fk in f)
        out.append(logmel((0.2 * y + 1e-3 * rng.standard_normal(t.size)).astype(np.float32), config))
    return np.stack(out), f"{n} generated tone clips (../shared/data absent)"


def embedder_for(model: str, shape: tuple[int, int], batch_size: int) -> TorchEmbedder:
    model_config, _ = training_preset(model)
    net = build_model(model_config, shape, seed=0)
    net.set_input_stats(-40.0, 15.0)
    return TorchEmbedder(net, torch.device("cpu"), batch_size=batch_size, precision="fp32")


def run_preset(name: str, args: argparse.Namespace) -> None:
    config = feature_preset(name)
    clips, source = task_logmels(name, config, args.ways + 1, args.seed)
    query, supports = clips[0], clips[1:]
    embedder = embedder_for(args.model, config.shape, args.batch_size)
    print(f"\n== {name}: {config.shape[0]} x {config.shape[1]} log-mels, {source}; network {args.model!r}, "
          f"torch threads {torch.get_num_threads()}, CPU forward batch {embedder.batch_size}")
    fills = [fill_level(s, "floor", top_db=config.top_db) for s in supports]

    # Untimed warm-up of both batch shapes (torch builds kernels per shape on first use).
    embedder.embed(np.repeat(supports[:1], embedder.batch_size, axis=0))
    embedder.embed(np.stack([query, supports[0]]))

    sinex_labels = [segment(s, SegmenterConfig.defaults("sinex")) for s in supports]
    t0 = time.perf_counter()
    emb = embedder.embed(clips)  # what evaluation caches: each clip once
    v = embedder.similarity(np.repeat(emb[:1], args.ways, axis=0), emb[1:])
    fast = explain_supports(embedder, emb[0], supports, v, sinex_labels, fills, MethodConfig("sinex"),
                            batch_size=args.chunk)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = explain_supports_naive(embedder, query, supports, sinex_labels, fills, MethodConfig("sinex"))
    t_slow = time.perf_counter() - t0
    n_pert = sum(e.n_perturbations for e in fast)
    diff = max(float(np.abs(a.h_map() - b.h_map()).max()) for a, b in zip(fast, slow))
    ratio = t_slow / t_fast
    print(f"SINEX  segments {[e.n_segments for e in fast]}, {n_pert} perturbations")
    print(f"  batched: {t_fast:7.2f} s  ({n_pert + len(clips)} embeddings: {n_pert / t_fast:.1f} perturbations/s)")
    print(f"  naive:   {t_slow:7.2f} s  ({2 * (n_pert + args.ways)} embeddings, one (query, support) pair a call)")
    print(f"  speed-up {ratio:.2f}x (target >= 4x: {'met' if ratio >= 4 else 'NOT met'}); "
          f"max |heatmap difference| {diff:.2e} (target <= 1e-6: {'met' if diff <= 1e-6 else 'NOT met'})")

    if args.skip_sinexc:
        return
    labels = [segment(s, SegmenterConfig.defaults("sinexc")) for s in supports]
    config_c = MethodConfig("sinexc", alpha=args.alpha, beta=args.beta)
    n_c = sum(int(lab.max() + 1) * args.alpha + 1 for lab in labels)
    if args.model != "tiny" and not args.full_sinexc:
        estimate = n_c / (n_pert / t_fast)
        print(f"SINEXC segments {[int(lab.max() + 1) for lab in labels]} (min_size 900), alpha {args.alpha}: "
              f"{n_c} embeddings per task; ~{estimate:.0f} s per task estimated from the SINEX throughput "
              f"(--full-sinexc to measure)")
        return
    t0 = time.perf_counter()
    explain_supports(embedder, emb[0], supports, v, labels, fills, config_c, batch_size=args.chunk,
                     rngs=[coalition_rng(args.seed, 0, c) for c in range(args.ways)])
    t_c = time.perf_counter() - t0
    print(f"SINEXC segments {[int(lab.max() + 1) for lab in labels]} (min_size 900), alpha {args.alpha}: "
          f"{n_c} embeddings per task in {t_c:.1f} s ({n_c / t_c:.0f} embeddings/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["audiomnist", "esc50"], choices=sorted(PATTERNS))
    parser.add_argument("--model", default="tiny", help="training preset of the network (tiny, report-esc50, ...)")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--alpha", type=int, default=150)
    parser.add_argument("--beta", type=float, default=0.15)
    parser.add_argument("--chunk", type=int, default=64, help="perturbed spectrograms per generated chunk")
    parser.add_argument("--batch-size", type=int, default=64, help="embedder batch (capped at 8 on a CPU)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full-sinexc", action="store_true", help="measure SINEXC with a non-tiny network too")
    parser.add_argument("--skip-sinexc", action="store_true", help="SINEX only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.presets:
        run_preset(name, args)


if __name__ == "__main__":
    main()

"""Batched SINEX vs the authors' per-perturbation loop, side by side in one run; SINEXC's cost per task.

For each feature preset (``audiomnist`` 224 x 224, ``esc50`` 128 x 431), one 5-way
task is built from real clips of ``../shared/data`` when present (generated
tones otherwise), turned into log-mels by the project's own feature code, and
explained with the project's own network wrapper (:class:`TorchEmbedder`,
float32, a ``--model`` preset with freshly initialised weights: speed does not
depend on training):

* SINEX three ways on ``--tasks`` tasks (other clips each), one after another
  on the same task: the authors' loop
  (:func:`~evaluation.explain.methods.explain_supports_naive`: for every
  perturbation, embed the query and the perturbed support together and score
  the pair), full batches (``explain_supports(..., local=False)``: the query's
  embedding cached, perturbed supports embedded in full batches), and
  incremental batches (the default: each perturbation keeps one segment of the
  all-filled support, so only the feature-map windows that segment reaches are
  recomputed, :mod:`siamese_audio.training.incremental`). Prints the times,
  the ratio to the loop (target >= 4x) and the largest heatmap difference to
  the loop (target <= 1e-6).
* SINEXC (felzenszwalb ``min_size=900``, alpha 150, beta 0.15), batched only:
  embeddings and seconds for the whole task. With ``--model report`` the
  SINEXC time is estimated from the SINEX throughput unless ``--full-sinexc``.

Every path uses the embedder the CLI builds (:func:`load_embedder` with
``--checkpoint``: float32, channels-last weights on the CPU, which makes each
forward pass 1.3-1.4x faster, the loop's too). On a CPU a batch of 8 costs
about 8 single forwards, so full batches gain little more than the query no
longer embedded with every perturbation; the incremental path gains by doing
less arithmetic.
Run::

    .venv/bin/python benchmarks/bench_explain.py                  # tiny network, ~5 minutes on 2 cores
    .venv/bin/python benchmarks/bench_explain.py --model report-esc50 --presets esc50
    .venv/bin/python benchmarks/bench_explain.py --checkpoint RUN/best.pt --presets esc50 --threads 2 --skip-sinexc
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
from siamese_audio.training.checkpoint import load_embedder
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


def embedder_for(model: str, shape: tuple[int, int], batch_size: int, checkpoint: str | None) -> TorchEmbedder:
    if checkpoint:
        embedder, _ = load_embedder(checkpoint, "cpu", precision="fp32")
        embedder.batch_size = min(batch_size, embedder.batch_size)
        return embedder
    model_config, _ = training_preset(model)
    net = build_model(model_config, shape, seed=0)
    net.set_input_stats(-40.0, 15.0)
    return TorchEmbedder(net, torch.device("cpu"), batch_size=batch_size, precision="fp32", channels_last=True)


def sinex_task(embedder: TorchEmbedder, clips: np.ndarray, fills: list[float], args: argparse.Namespace) -> dict:
    """Time the three ways of explaining one task's supports with SINEX; the maps' differences to the loop."""
    query, supports = clips[0], clips[1:]
    labels = [segment(s, SegmenterConfig.defaults("sinex")) for s in supports]

    def batched(local: bool) -> tuple[list, float]:
        t0 = time.perf_counter()
        emb = embedder.embed(clips)  # what evaluation caches: each clip once
        v = embedder.similarity(np.repeat(emb[:1], args.ways, axis=0), emb[1:])
        out = explain_supports(embedder, emb[0], supports, v, labels, fills, MethodConfig("sinex"),
                               batch_size=args.chunk, local=local)
        return out, time.perf_counter() - t0

    t0 = time.perf_counter()
    slow = explain_supports_naive(embedder, query, supports, labels, fills, MethodConfig("sinex"))
    t_loop = time.perf_counter() - t0
    full, t_full = batched(local=False)
    fast, t_fast = batched(local=True)
    out = {"loop": t_loop, "batched": t_full, "incremental": t_fast,
           "segments": [e.n_segments for e in fast], "perturbations": sum(e.n_perturbations for e in fast)}
    for name, other in (("batched", full), ("incremental", fast)):
        out[name + "_map"] = max(float(np.abs(a.h_map() - b.h_map()).max()) for a, b in zip(other, slow))
        out[name + "_u"] = max(float(np.abs(a.u - b.u).max() / max(np.abs(b.u).max(), 1e-12))
                               for a, b in zip(other, slow))
    return out


def run_preset(name: str, args: argparse.Namespace) -> None:
    config = feature_preset(name)
    clips, source = task_logmels(name, config, args.ways + 1, args.seed)
    query, supports = clips[0], clips[1:]
    embedder = embedder_for(args.model, config.shape, args.batch_size, args.checkpoint)
    print(f"\n== {name}: {config.shape[0]} x {config.shape[1]} log-mels, {source}; "
          f"network {args.checkpoint or args.model!r}, torch threads {torch.get_num_threads()}, "
          f"CPU forward batch {embedder.batch_size}, channels-last {embedder.channels_last}")
    fills = [fill_level(s, "floor", top_db=config.top_db) for s in supports]

    # Untimed warm-up of both batch shapes (torch builds kernels per shape on first use).
    embedder.embed(np.repeat(supports[:1], embedder.batch_size, axis=0))
    embedder.embed(np.stack([query, supports[0]]))

    # SINEX: the loop, full batches and incremental batches on the same task, one task after another
    rows = []
    for t in range(args.tasks):
        task = clips if t == 0 else task_logmels(name, config, args.ways + 1, args.seed + t)[0]
        rows.append(sinex_task(embedder, task, [fill_level(s, "floor", top_db=config.top_db) for s in task[1:]],
                               args))
        r = rows[-1]
        print(f"  task {t}: segments {r['segments']}, {r['perturbations']} perturbations: loop {r['loop']:.2f} s, "
              f"batched {r['batched']:.2f} s, incremental {r['incremental']:.2f} s "
              f"({r['loop'] / r['incremental']:.2f}x)")
    total = {k: sum(r[k] for r in rows) for k in ("loop", "batched", "incremental", "perturbations")}
    n_pert = total["perturbations"]
    ratio = total["loop"] / total["incremental"]
    print(f"SINEX  {args.tasks} tasks x {args.ways} supports, {n_pert} perturbations")
    print(f"  loop:        {total['loop']:7.2f} s  ({2 * n_pert} embeddings, one (query, support) pair a call)")
    print(f"  batched:     {total['batched']:7.2f} s  (full forward passes; {total['loop'] / total['batched']:.2f}x "
          f"the loop)")
    print(f"  incremental: {total['incremental']:7.2f} s  (batched, each perturbation recomputes only the "
          f"feature-map windows it changes: {n_pert / total['incremental']:.1f} perturbations/s)")
    for path in ("batched", "incremental"):
        diff, rel = max(r[path + "_map"] for r in rows), max(r[path + "_u"] for r in rows)
        print(f"  {path} vs loop: max |heatmap difference| {diff:.2e} (target <= 1e-6: "
              f"{'met' if diff <= 1e-6 else 'NOT met'}), max relative |u_i difference| {rel:.2e}")
    print(f"  speed-up incremental / loop {ratio:.2f}x (target >= 4x: {'met' if ratio >= 4 else 'NOT met'}); "
          f"incremental / batched {total['batched'] / total['incremental']:.2f}x")
    emb = embedder.embed(clips)
    v = embedder.similarity(np.repeat(emb[:1], args.ways, axis=0), emb[1:])

    if args.skip_sinexc:
        return
    labels = [segment(s, SegmenterConfig.defaults("sinexc")) for s in supports]
    config_c = MethodConfig("sinexc", alpha=args.alpha, beta=args.beta)
    n_c = sum(int(lab.max() + 1) * args.alpha + 1 for lab in labels)
    if (args.checkpoint or args.model != "tiny") and not args.full_sinexc:
        estimate = n_c / (n_pert / total["batched"])  # coalitions change most of a clip: full passes
        print(f"SINEXC segments {[int(lab.max() + 1) for lab in labels]} (min_size 900), alpha {args.alpha}: "
              f"{n_c} embeddings per task; ~{estimate:.0f} s per task estimated from the full-batch throughput "
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
    parser.add_argument("--checkpoint", help="a trained run's best.pt instead of --model's fresh weights")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=3, help="SINEX tasks timed (different clips each)")
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

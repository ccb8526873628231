"""Cached-embedding evaluation vs one forward pass per pair, side by side in one run.

Scores the same 1,000 5-way one-shot tasks twice with a torch network shaped
like the report's encoder (conv 64 5x5, conv 32 5x5, conv 12 3x3, 2x2 max-pools,
FC, squared-difference merge, one-unit sigmoid head) at a modest input size:

* cached: every clip of the evaluating classes embedded once in batches, every
  task scored from the cache (:func:`evaluation.evaluator.evaluate_one_shot`);
* per pair: both clips of every (query, support) pair read and embedded, then
  scored, one pair at a time (:func:`evaluation.evaluator.score_per_pair`).

Prints both times and their ratio (target >= 50x), and checks that both paths
choose the same supports. The ratio is about (clip forwards per pair path) /
(clips embedded once) = 2 * tasks * C / distinct clips, times what batching
buys: little for this network on one CPU thread, much on a GPU. So on CPU it
depends on how often tasks reuse clips (``--clips-per-class``). Run on CPU::

    PYTHONPATH=. python benchmarks/bench_eval.py            # ~1 minute on 2 cores
    PYTHONPATH=. python benchmarks/bench_eval.py --tasks 200 --clips-per-class 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from siamese_audio.evaluation.evaluator import evaluate_one_shot, score_per_pair, summarize
from siamese_audio.evaluation.tasks import draw_tasks, make_pool


class ReportLikeNet(nn.Module):
    """The report's encoder and head, with a configurable FC width."""

    def __init__(self, input_shape: tuple[int, int], fc_units: int) -> None:
        super().__init__()
        h, w = input_shape
        layers: list[nn.Module] = []
        in_ch = 1
        for filters, kernel in ((64, 5), (32, 5), (12, 3)):
            layers += [nn.Conv2d(in_ch, filters, kernel, padding="same"), nn.ReLU(), nn.MaxPool2d(2)]
            in_ch, h, w = filters, h // 2, w // 2
        layers += [nn.Flatten(), nn.Linear(in_ch * h * w, fc_units), nn.ReLU()]
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Linear(fc_units, 1)


class TorchBenchEmbedder:
    """``Embedder`` over :class:`ReportLikeNet` (CPU, no grad)."""

    def __init__(self, net: ReportLikeNet, batch_size: int) -> None:
        self.net = net.eval()
        self.batch_size = batch_size

    def embed(self, x: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch_size):
                part = torch.from_numpy(np.ascontiguousarray(x[start:start + self.batch_size]))
                out.append(self.net.encoder(part.unsqueeze(1)).numpy())
        return np.concatenate(out)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            diff = torch.from_numpy(a) - torch.from_numpy(b)
            return torch.sigmoid(self.net.head(diff * diff)).squeeze(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="C-way tasks (a multiple of --classes)")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--classes", type=int, default=5, help="evaluating classes")
    parser.add_argument("--clips-per-class", type=int, default=40, help="ESC-50 has 40")
    parser.add_argument("--n-mels", type=int, default=32)
    parser.add_argument("--n-frames", type=int, default=32)
    parser.add_argument("--fc-units", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8,
                        help="clips per forward pass of the cached path (8: what TorchEmbedder uses on a CPU)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-memory", action="store_true",
                        help="read clips from a NumPy array instead of a sealed feature version on disk")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    runs = max(1, args.tasks // args.classes)
    n_clips = args.classes * args.clips_per_class
    rng = np.random.default_rng(args.seed)
    class_rows = {f"class{k}": np.arange(k * args.clips_per_class, (k + 1) * args.clips_per_class)
                  for k in range(args.classes)}
    if args.in_memory:
        store = rng.standard_normal((n_clips, args.n_mels, args.n_frames)).astype(np.float32)

        def read(rows: np.ndarray) -> np.ndarray:
            return store[rows]
        source = "in-memory array"
    else:
        # What evaluation really reads: a sealed feature version, one clip per chunk.
        import tempfile

        from siamese_audio.features.dummies import make_synthetic_version
        from siamese_audio.features.store import open_version

        tmp = tempfile.mkdtemp(prefix="bench-eval-")
        version = open_version(make_synthetic_version(
            tmp, classes=list(class_rows), clips_per_class=args.clips_per_class,
            shape=(args.n_mels, args.n_frames), seed=args.seed, clips_per_shard=32))
        read = version.read
        source = f"sealed feature version {version.path}"

    embedder = TorchBenchEmbedder(ReportLikeNet((args.n_mels, args.n_frames), args.fc_units), args.batch_size)
    tasks = draw_tasks(make_pool(class_rows), ways=args.ways, runs=runs, seed=args.seed)
    n_pairs = tasks.n_tasks * args.ways
    print(f"{tasks.n_tasks} {args.ways}-way tasks over {args.classes} classes x {args.clips_per_class} clips "
          f"({n_clips} clips, {n_pairs} pairs); input {args.n_mels}x{args.n_frames}, FC {args.fc_units}, "
          f"torch threads {args.threads}; clips read from the {source}")

    # Warm-up, untimed: torch builds its kernels per input shape on first use (batch of 2 for the
    # per-pair path, the batch sizes of the cached path), so both are timed warm.
    embedder.embed(read(np.arange(2)))
    evaluate_one_shot(embedder, read, class_rows, ways=args.ways, runs=runs, seed=args.seed + 1,
                      batch_size=args.batch_size)
    t0 = time.perf_counter()
    cached = evaluate_one_shot(embedder, read, class_rows, ways=args.ways, runs=runs, seed=args.seed,
                               batch_size=args.batch_size)
    t_cached = time.perf_counter() - t0
    print(f"cached:   {t_cached:8.3f} s  (each clip used embedded once)  accuracy {cached.accuracy:.3f}")

    t0 = time.perf_counter()
    naive = summarize(tasks, score_per_pair(embedder, read, tasks))
    t_naive = time.perf_counter() - t0
    print(f"per pair: {t_naive:8.3f} s  ({2 * n_pairs} clip forwards)      accuracy {naive.accuracy:.3f}")

    same = np.array_equal(cached.chosen, naive.chosen)
    max_diff = float(np.abs(cached.scores - naive.scores).max())
    print(f"same choices: {same}; max |score difference| {max_diff:.2e} (float rounding of batch sizes)")
    n_embedded = int(np.unique(np.concatenate([tasks.query, tasks.support.ravel()])).size)
    ratio = t_naive / t_cached
    print(f"clip forwards per pair / cached: {2 * n_pairs / n_embedded:.1f}x; the rest of the speed-up is "
          f"what batching buys on this device")
    print(f"speed-up (per pair / cached): {ratio:.1f}x  (target >= 50x: {'met' if ratio >= 50 else 'NOT met'})")
    if not args.in_memory:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

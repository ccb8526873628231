"""Training-stage speed, measured side by side in one run.

(a) One training step (forward, backward, Adam) on an Algorithm 2 batch at
    pos 2, ratio 1:1, encoding each distinct clip once and pairing the
    embeddings, against encoding both sides of every pair. Target >= 1.5x.
(b) Pairs per second the sampler and loader deliver (reading each batch's
    clips from a sealed store, and from a resident copy) against pairs per
    second the model trains on. Target: loader >= 10x the model.

The network is the report's (Conv 64/32/12, FC 4096) on a modest input size
so that it runs in a minute or two on 2 CPU cores; everything is printed.

    PYTHONPATH=. python benchmarks/bench_train.py [--shape 64 64] [--classes 50] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import open_version
from siamese_audio.training.checkpoint import resolve_device
from siamese_audio.training.config import ModelConfig, TrainConfig
from siamese_audio.training.data import ResidentReader, StoreReader
from siamese_audio.training.embedder import autocast_context
from siamese_audio.training.loop import train_step
from siamese_audio.training.model import build_model
from siamese_audio.training.sampler import PairBatch, sample_pair_batch


def step_per_pair_side(model, optimizer, x_left, x_right, labels, device) -> float:
    """Baseline: encode the left and right clip of every pair (the textbook two-tower forward)."""
    model.train()
    with autocast_context(device):
        logits = model(x_left, x_right).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=2, default=(64, 64), metavar=("N_MELS", "N_FRAMES"))
    parser.add_argument("--classes", type=int, default=50, help="training classes (AudioMNIST: 50)")
    parser.add_argument("--clips", type=int, default=20, help="clips per class in the generated store")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps per variant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    shape = tuple(args.shape)
    model_config, config = ModelConfig(), TrainConfig(pos=2, ratio=(1, 1))
    print(f"device {device}, torch threads {torch.get_num_threads()}, input {shape}, "
          f"{args.classes} training classes, pos {config.pos}, ratio 1:1 (neg {config.neg})")

    with tempfile.TemporaryDirectory() as tmp:
        classes = [f"{i:02d}" for i in range(1, args.classes + 1)]
        t0 = time.perf_counter()
        version = open_version(make_synthetic_version(Path(tmp), classes=classes, clips_per_class=args.clips,
                                                      shape=shape, seed=0, clips_per_shard=1))
        print(f"generated store: {args.classes * args.clips} clips in {time.perf_counter() - t0:.1f} s")
        stored = version.stored()
        class_rows = {c: stored.loc[stored["class"] == c, "row"].to_numpy(np.int64) for c in classes}
        rng = np.random.default_rng(0)
        batch: PairBatch = sample_pair_batch(class_rows, pos=config.pos, neg=config.neg, rng=rng)

        # (a) encode each distinct clip once vs each pair side
        model = build_model(model_config, shape, seed=0).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        reader = StoreReader(version.read, device)
        x = reader.batch(batch.rows)
        left, right = torch.from_numpy(batch.left).to(device), torch.from_numpy(batch.right).to(device)
        labels = torch.from_numpy(batch.labels).to(device)
        once = timed(lambda: train_step(model, optimizer, x, batch, config, device), args.repeats, device)
        per_side = timed(lambda: step_per_pair_side(model, optimizer, x[left], x[right], labels, device),
                         args.repeats, device)
        n_pairs = batch.n_pairs
        print(f"\n(a) one training step, {n_pairs} pairs: {len(batch.rows)} distinct clips encoded once "
              f"vs {2 * n_pairs} pair sides")
        print(f"    encode once   : {once * 1e3:8.1f} ms/step  {n_pairs / once:8.1f} pairs/s")
        print(f"    each pair side: {per_side * 1e3:8.1f} ms/step  {n_pairs / per_side:8.1f} pairs/s")
        print(f"    speed-up {per_side / once:.2f}x (target >= 1.5x)")

        # (b) loader vs model
        def load_from_store():
            b = sample_pair_batch(class_rows, pos=config.pos, neg=config.neg, rng=rng)
            return reader.batch(b.rows)

        resident = ResidentReader(version.read, class_rows, device)

        def load_resident():
            b = sample_pair_batch(class_rows, pos=config.pos, neg=config.neg, rng=rng)
            return resident.batch(b.rows)

        store_s = timed(load_from_store, 20, device)
        resident_s = timed(load_resident, 50, device)
        print(f"\n(b) pairs/s, batches of {n_pairs} pairs ({len(batch.rows)} distinct clips of {shape})")
        print(f"    sampler + store reads   : {n_pairs / store_s:10.0f} pairs/s ({store_s * 1e3:.1f} ms/batch)")
        print(f"    sampler + resident copy : {n_pairs / resident_s:10.0f} pairs/s ({resident_s * 1e3:.1f} ms/batch)")
        print(f"    model training step     : {n_pairs / once:10.1f} pairs/s")
        print(f"    loader / model: store {once / store_s:.1f}x, resident {once / resident_s:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()

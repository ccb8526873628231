"""Ensembles of checkpoints on the validation classes: each network alone, then all of them together.

Takes two or more checkpoints trained on one split (e.g. ``cpu-esc50`` runs with different seeds),
embeds the split's **validation** clips with each, and scores the same C-way one-shot tasks the
training's validation draws (:func:`evaluation.evaluator.evaluate_one_shot`, the same seed, runs
and positive rule), for each network and for the ensemble: the cosine of the concatenated unit
embeddings, i.e. the mean of the networks' cosines. Prints each accuracy with its number of tasks
and 95% Wilson interval. It never reads the test classes: an ensemble is a recipe choice, made on
validation (issue 20). Cosine-head networks only (``cpu-esc50``, ``cpu-audiomnist``)::

    .venv/bin/python benchmarks/bench_ensemble.py RUN_A/best.pt RUN_B/best.pt \\
        --features STORE/esc50/VERSION --split report.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from siamese_audio.evaluation.evaluator import evaluate_one_shot
from siamese_audio.features.reader import open_version
from siamese_audio.manifests.split_catalog import clip_rows, clip_sources
from siamese_audio.manifests.splits import read_split
from siamese_audio.training.checkpoint import load_embedder
from siamese_audio.training.loop import validation_runs


class Ensemble:
    """Embedders whose unit embeddings are concatenated (scaled so that the cosine is their mean cosine)."""

    def __init__(self, members: list) -> None:
        self.members = members

    def embed(self, x: np.ndarray) -> np.ndarray:
        parts = []
        for member in self.members:
            z = np.asarray(member.embed(x), dtype=np.float64)
            parts.append(z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12))
        return (np.concatenate(parts, axis=1) / np.sqrt(len(parts))).astype(np.float32)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)).sum(axis=1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="two or more best.pt of one split")
    parser.add_argument("--features", type=Path, required=True, help="the feature version they were trained on")
    parser.add_argument("--split", type=Path, required=True, help="the split they were trained on")
    parser.add_argument("--tasks", type=int, default=2000, help="validation tasks, at least (default 2000)")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error(f"expected two or more checkpoints; got {len(args.checkpoints)}")
    torch.set_num_threads(args.threads)
    version = open_version(args.features)
    rows = clip_rows(read_split(args.split), version)["validation"]
    sources = clip_sources(version, rows)
    members = []
    for path in args.checkpoints:
        embedder, _ = load_embedder(path, "cpu")
        head = getattr(embedder.model.config, "head", "difference")
        if head != "cosine":
            parser.error(f"{path}: expected a cosine-head network (cpu-esc50, cpu-audiomnist); its head is {head!r}")
        members.append((str(path), embedder))
    runs = validation_runs(args.tasks, len(rows))
    print(f"validation classes {sorted(rows)}; {runs} tasks per class, {args.ways}-way, seed {args.seed}")
    for name, embedder in [*members, ("ensemble of all", Ensemble([e for _, e in members]))]:
        result = evaluate_one_shot(embedder, version.read, rows, ways=args.ways, runs=runs, seed=args.seed,
                                   class_sources=sources)
        low, high = result.ci95
        print(f"  {name}: {result.accuracy:.3f} [{low:.3f}, {high:.3f}] ({result.n_tasks} tasks)", flush=True)


if __name__ == "__main__":
    main()

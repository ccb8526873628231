"""Tied top scores: ranking by the float32 sigmoid (the old similarity) vs by the logit, on the same tasks.

Draws the tasks ``evaluate`` draws for a split's classes (:func:`evaluation.tasks.evaluation_tasks`,
same seed, ways, runs and positive rule), embeds every clip once with the checkpoint's network, and
scores every task twice from the same embeddings:

* sigmoid: ``float32(sigmoid(logit))``, what ``TorchEmbedder.similarity`` returned before; exactly
  1.0 above a logit of about 16.7, so supports tie;
* logit: the head's logit, what it returns now.

Prints, for each, the share of tasks whose top score is shared by two or more supports (the tie
rule, not the network, then chose) and the accuracy. ``--at-init`` scores the checkpoint's
architecture with its initial weights instead (seeded as training seeds them, with the
checkpoint's input standardisation when it has one): the state training starts from.
``--raw-db`` leaves the input unstandardised, as the report presets do: the state in which the
report's ESC-50 network gave logits up to 89::

    .venv/bin/python benchmarks/bench_ties.py demo-output/run/best.pt \\
        --features demo-output/store/audiomnist/<version_id> --split demo-output/split.parquet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from siamese_audio.evaluation.evaluator import embed_pool, score_cached, summarize
from siamese_audio.evaluation.tasks import evaluation_tasks
from siamese_audio.features.store import open_version
from siamese_audio.manifests.split_catalog import clip_rows, clip_sources
from siamese_audio.manifests.splits import read_split
from siamese_audio.training.checkpoint import BEST, load_checkpoint, load_embedder
from siamese_audio.training.config import model_config_from_dict
from siamese_audio.training.model import build_model


class SigmoidScores:
    """The old similarity: the float32 sigmoid of the embedder's logit."""

    def __init__(self, embedder) -> None:
        self.embedder = embedder

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self.embedder.embed(x)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        logits = torch.from_numpy(self.embedder.similarity(a, b))
        return torch.sigmoid(logits).numpy().astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--features", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--subset", default="test", choices=("test", "validation"))
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--same-source-ok", action="store_true")
    parser.add_argument("--at-init", action="store_true", help="the checkpoint's architecture at its initial weights")
    parser.add_argument("--raw-db", action="store_true",
                        help="with --at-init: no input standardisation (raw dB in, as the report presets)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    version = open_version(args.features)
    embedder, meta = load_embedder(args.checkpoint, "cpu")
    if embedder.similarity_kind != "logit":
        raise SystemExit("This checkpoint has no logit head (contrastive training): nothing saturates.")
    if args.at_init:
        path = Path(args.checkpoint)
        payload = load_checkpoint(path / BEST if path.is_dir() else path)
        model = build_model(model_config_from_dict(payload["model_config"]), tuple(payload["input_shape"]),
                            seed=payload["train_config"]["seed"])
        if not args.raw_db:
            state = payload["model_state"]
            model.set_input_stats(float(state["input_mean"]), float(state["input_std"]))  # as training began
        embedder.model = model.eval()
    rows = clip_rows(read_split(args.split), version)[args.subset]
    tasks = evaluation_tasks(rows, ways=args.ways, runs=args.runs, seed=args.seed,
                             class_sources=clip_sources(version, rows), same_source_ok=args.same_source_ok)
    (cache,) = embed_pool([embedder], version.read, tasks.pool, [tasks])
    logit = summarize(tasks, score_cached(embedder, cache, tasks))
    sigmoid = summarize(tasks, score_cached(SigmoidScores(embedder), cache, tasks))
    out = {
        "checkpoint": str(args.checkpoint), "at_init": args.at_init, "raw_db": args.raw_db, "classes": list(tasks.pool.classes),
        "ways": args.ways, "n_tasks": tasks.n_tasks, "max_logit": float(logit.scores.max()),
        "sigmoid": {"tied_top_share": sigmoid.tied_top_share, "n_tied_top": sigmoid.n_tied_top,
                    "accuracy": sigmoid.accuracy},
        "logit": {"tied_top_share": logit.tied_top_share, "n_tied_top": logit.n_tied_top, "accuracy": logit.accuracy},
    }
    state = (" (weights at initialisation" + (", raw dB input)" if args.raw_db else ")")) if args.at_init else ""
    print(f"{tasks.n_tasks} {args.ways}-way tasks on {', '.join(tasks.pool.classes)}{state}; "
          f"largest logit {out['max_logit']:.1f}")
    print(f"  tied top score, float32 sigmoid (before): {sigmoid.n_tied_top} tasks = {sigmoid.tied_top_share:.3f}; "
          f"accuracy {sigmoid.accuracy:.3f}")
    print(f"  tied top score, logit (now):              {logit.n_tied_top} tasks = {logit.tied_top_share:.3f}; "
          f"accuracy {logit.accuracy:.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

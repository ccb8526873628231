"""Ensembles of checkpoints on the validation classes: each network alone, then all of them together.

Takes two or more checkpoints trained on one split (e.g. ``cpu-esc50`` runs with different seeds),
embeds the split's **validation** clips with each, and scores the same C-way one-shot tasks the
training's validation draws (:func:`evaluation.evaluator.evaluate_one_shot`, the same seed, runs
and positive rule), for each network and for the ensemble: the cosine of the concatenated unit
embeddings, i.e. the mean of the networks' cosines. Prints each accuracy with its number of tasks
and 95% Wilson interval, then the ensemble's gain over its best member on the *same* tasks (a paired
difference with its 95% normal interval, narrower than two Wilson intervals side by side), and with
``--versus`` over a single network of the same budget; with ``--results-name`` the table goes to
``docs/results/<NAME>.md``. It never reads the test classes: an ensemble is a recipe choice, made on
validation (issue 20). Cosine-head networks only (``cpu-esc50``, ``cpu-audiomnist``)::

    .venv/bin/python benchmarks/bench_ensemble.py RUN_A/best.pt RUN_B/best.pt \\
        --features STORE/esc50/VERSION --split report.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import write_results  # noqa: E402

from siamese_audio.evaluation.evaluator import evaluate_one_shot  # noqa: E402
from siamese_audio.features.reader import open_version  # noqa: E402
from siamese_audio.manifests.split_catalog import clip_rows, clip_sources  # noqa: E402
from siamese_audio.manifests.splits import read_split  # noqa: E402
from siamese_audio.training.checkpoint import load_embedder  # noqa: E402
from siamese_audio.training.loop import validation_runs  # noqa: E402


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


def paired_gain(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same tasks, with its 95% normal interval.

    Parameters
    ----------
    a, b : ndarray of bool, shape (n_tasks,)
        Per-task correctness of two embedders scored on the same tasks.

    Returns
    -------
    tuple of float
        ``(gain, low, high)``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"expected two per-task vectors of one length >= 2; got shapes {np.shape(a)}, {np.shape(b)}")
    d = a - b
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="two or more best.pt of one split")
    parser.add_argument("--features", type=Path, required=True, help="the feature version they were trained on")
    parser.add_argument("--split", type=Path, required=True, help="the split they were trained on")
    parser.add_argument("--tasks", type=int, default=2000, help="validation tasks, at least (default 2000)")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--versus", type=Path, default=None,
                        help="a single network with the same budget (e.g. the preset's own run), scored on the same "
                             "tasks and compared with the ensemble, paired")
    parser.add_argument("--results-name", default="", help="also write docs/results/<NAME>.md")
    parser.add_argument("--note", default="", help="a line for the results file: how the members were trained")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error(f"expected two or more checkpoints; got {len(args.checkpoints)}")
    torch.set_num_threads(args.threads)
    version = open_version(args.features)
    rows = clip_rows(read_split(args.split), version)["validation"]
    sources = clip_sources(version, rows)
    members = []  # (name, embedder, epoch of its best.pt)
    for path in args.checkpoints:
        embedder, payload = load_embedder(path, "cpu")
        head = getattr(embedder.model.config, "head", "difference")
        if head != "cosine":
            parser.error(f"{path}: expected a cosine-head network (cpu-esc50, cpu-audiomnist); its head is {head!r}")
        members.append((f"`{path}`", embedder, payload.get("epoch", "")))
    scored = [*members, ("ensemble of all", Ensemble([e for _, e, _ in members]), "-")]
    if args.versus is not None:
        single, payload = load_embedder(args.versus, "cpu")
        scored.append((f"`{args.versus}` (single network, versus)", single, payload.get("epoch", "")))
    runs = validation_runs(args.tasks, len(rows))
    print(f"validation classes {sorted(rows)}; {runs} tasks per class, {args.ways}-way, seed {args.seed}")
    lines = ["| network | validation accuracy | 95% CI | tasks | best epoch |", "|---|---|---|---|---|"]
    results = []
    for name, embedder, epoch in scored:
        result = evaluate_one_shot(embedder, version.read, rows, ways=args.ways, runs=runs, seed=args.seed,
                                   class_sources=sources)
        results.append(result)
        low, high = result.ci95
        print(f"  {name}: {result.accuracy:.3f} [{low:.3f}, {high:.3f}] ({result.n_tasks} tasks)", flush=True)
        lines.append(f"| {name} | **{result.accuracy:.3f}** | [{low:.3f}, {high:.3f}] | {result.n_tasks} | {epoch} |")
    ensemble = results[len(members)]
    best = max(range(len(members)), key=lambda i: results[i].accuracy)
    against = [(f"its best member ({members[best][0]})", results[best])]
    if args.versus is not None:
        against.append((f"the single network (`{args.versus}`)", results[-1]))
    verdicts = []
    for what, other in against:
        gain, low, high = paired_gain(ensemble.correct, other.correct)
        verdicts.append(f"ensemble minus {what} on the same {ensemble.n_tasks} tasks: "
                        f"{gain:+.3f} [{low:+.3f}, {high:+.3f}] (paired, 95%)")
    verdict = ";\n".join(verdicts)
    for line in verdicts:
        print(f"  {line}", flush=True)
    if args.results_name:
        body = (f"Validation classes {sorted(rows)} of `{args.split}`; {args.ways}-way one-shot, {runs} tasks per "
                f"class, seed {args.seed}, positives from another recording. Ensemble = mean cosine of the members' "
                f"unit embeddings. Test classes are not read.\n\n"
                + (f"{args.note}\n\n" if args.note else "") + "\n".join(lines) + f"\n\n{verdict}.\n")
        write_results(args.results_name, body, title="Checkpoint ensembles on validation classes")


if __name__ == "__main__":
    main()

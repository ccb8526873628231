"""Is SINEX faithful on a model trained on real audio? Deletion/insertion orders, sanity, overlays.

Takes (or trains) a ``cpu-esc50`` checkpoint on the report split of the real ESC-50
(test classes glass_breaking, church_bells, frog, laughing, door_wood_creaks), runs
``siamese-audio explain`` on ``--tasks`` test tasks (default 60) with the
model-randomisation sanity check, and reports, over the positive supports, with
95% bootstrap intervals:

* per order of the segments (SINEX rho, its reverse, ``u_i`` alone, segment size
  largest / smallest first, the mean of ``--random-orders`` random orders): AOPC of
  the deletion curve, insertion area and the area between insertion and deletion;
* paired win rates of rho over the random orders and over each size order;
* the sanity check per randomisation stage (Spearman on h and on v - u_i);
* the rank correlation of rho with segment size.

Figures: the mean curves with bands, and one overlay per ESC-50 macro-category the
test classes allow (animals, human, interior, exterior), chosen as the first task
whose query is of that category (class names, axes in s and Hz, segments, the
similarity before and with the top-k segments kept or removed). Written to
``docs/results/faithfulness.md`` and ``docs/figures/faithfulness/``. Run::

    .venv/bin/python benchmarks/bench_faithfulness.py ESC50_DIR \\
        --checkpoint RUN/best.pt --features STORE/esc50/VERSION --split report.parquet

Without ``--checkpoint`` it builds the store, writes the report split and trains
``cpu-esc50`` first (``--max-minutes``, default the preset's 20).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import REPO, write_results  # noqa: E402

from siamese_audio.cli import main as cli  # noqa: E402
from siamese_audio.evaluation.explain.report import run_summary  # noqa: E402
from siamese_audio.evaluation.explain.report import stat_text as _stat  # noqa: E402

#: ESC-50's macro-categories: ``target // 10`` in meta/esc50.csv.
CATEGORIES = ("animals", "natural soundscapes", "human, non-speech", "interior/domestic", "exterior/urban")

#: Orders of the table: (label, AOPC key, insertion-area key, gap key).
ORDER_ROWS = (
    ("SINEX ρ (most relevant first)", "aopc_rho", "area_rho", "gap_rho"),
    ("random segment orders (mean)", "aopc_random_mean", "area_random_mean", "gap_random_mean"),
    ("reverse of ρ", "aopc_reverse", "area_reverse", "gap_reverse"),
    ("segment size, largest first", "aopc_size", "area_size", "gap_size"),
    ("segment size, smallest first", "aopc_size_small", "area_size_small", "gap_size_small"),
    ("u_i alone (segment kept alone, not per pixel)", "aopc_u", "area_u", "gap_u"),
)


def category_of_class(esc50_dir: Path) -> dict[str, str]:
    """Class name -> macro-category, from the release's meta/esc50.csv."""
    meta = pd.read_csv(esc50_dir / "meta" / "esc50.csv", usecols=["category", "target"]).drop_duplicates()
    return {str(r.category): CATEGORIES[int(r.target) // 10] for r in meta.itertuples()}


def prepare(args) -> tuple[Path, Path, Path]:
    """The feature version, split and checkpoint to explain (built, written and trained when not given)."""
    features, split, checkpoint = args.features, args.split, args.checkpoint
    work = args.out / "work"
    if features is None:
        work.mkdir(parents=True, exist_ok=True)
        run(["-q", "build", "esc50", str(args.esc50_dir), "--store", str(work / "store"), "--crop-long",
             "--no-progress", "--json"])  # prints the version; find it on disk
        versions = sorted((work / "store" / "esc50").iterdir())
        features = versions[-1]
    if split is None:
        split = work / "report-split.parquet"
        if not split.exists():
            run(["-q", "split", "esc50", "--features", str(features), "--scheme", "report", "--out", str(split)])
    if checkpoint is None:
        run_dir = work / "run"
        train = ["-q", "train", "--features", str(features), "--split", str(split), "--out", str(run_dir),
                 "--preset", "cpu-esc50", "--seed", str(args.seed), "--no-progress"]
        if args.max_minutes is not None:
            train += ["--max-minutes", str(args.max_minutes)]
        if (run_dir / "last.pt").exists():
            train.append("--resume")
        run(train)
        checkpoint = run_dir / "best.pt"
    return Path(features), Path(split), Path(checkpoint)


def pick_overlays(record: dict, categories: dict[str, str]) -> list[tuple[str, dict]]:
    """The first task whose query is of each macro-category present, in the categories' order."""
    picked: dict[str, dict] = {}
    for task in record["tasks"]:
        category = categories.get(task["query"]["class"], "unknown")
        picked.setdefault(category, task)
    return [(c, picked[c]) for c in (*CATEGORIES, "unknown") if c in picked]


def markdown(record: dict, summary: dict, overlays: list[tuple[str, dict, str]], args, checkpoint: Path,
             seconds: float) -> str:
    faith = record["faithfulness"]
    n = faith["n_supports"]
    lines = [
        f"Checkpoint `{checkpoint}`, "
        f"{n} test tasks of the report split (positive supports, logits: cosine scores), "
        f"{args.random_orders} random orders per support, {faith.get('bootstrap', '')}; {seconds / 60:.1f} min.",
        "",
        "| order of the segments | AOPC (deletion) | insertion area | insertion − deletion area |",
        "|---|---|---|---|",
    ]
    for label, a, i, g in ORDER_ROWS:
        lines.append(f"| {label} | {_stat(faith.get(a))} | {_stat(faith.get(i))} | {_stat(faith.get(g))} |")
    lines += [
        "",
        "| paired, per support | mean [95% CI] |",
        "|---|---|",
        f"| ΔAOPC, ρ − random | {_stat(faith.get('delta_aopc'))} |",
        f"| Δ insertion area, ρ − random | {_stat(faith.get('delta_area'))} |",
        f"| win rate of ρ over random orders (AOPC) | {_stat(faith.get('win_rate'), 2)} |",
        f"| win rate of ρ over random orders (insertion) | {_stat(faith.get('win_rate_insertion'), 2)} |",
        f"| ρ beats size, largest first (AOPC) | {_stat(faith.get('win_size'), 2)} |",
        f"| ρ beats size, smallest first (AOPC) | {_stat(faith.get('win_size_small'), 2)} |",
        f"| decision flips at (share of pixels), by ρ | {_stat(faith.get('flip_rho'), 2)} |",
        f"| decision flips at, random orders | {_stat(faith.get('flip_random_mean'), 2)} |",
        f"| decision flips at, by u_i | {_stat(faith.get('flip_u'), 2)} |",
    ]
    if summary.get("rho_size_abs_spearman_mean") is not None:
        lines += ["", f"Mean |Spearman(ρ, segment size)| over every explained support: "
                      f"{summary['rho_size_abs_spearman_mean']:.2f}."]
    sanity = record.get("sanity")
    if sanity:
        lines += ["", "Model-parameter randomisation (cascading from the top, only layers the forward pass "
                      "calls; Spearman with the trained model's scores, mean [95% CI] over supports):", "",
                  "| randomised down to | on h | on v − u_i | survived (> 0.5) on h | inverted (< −0.5) on h "
                  "| survived on v − u_i | passes (v − u_i CI ≤ 0.5) |", "|---|---|---|---|---|---|---|"]
        for s in sanity["stages"]:
            lines.append(f"| {s['randomised_down_to']} | {_stat(s.get('spearman_h'), 2)} | "
                         f"{_stat(s.get('spearman_vu'), 2)} | {s['n_flagged']}/{s['n']} | {s.get('n_inverted')} | "
                         f"{s.get('n_flagged_vu')} | {s.get('passes')} |")
    lines += ["", "Figures (`docs/figures/faithfulness/`):", "", "- `curves.png`: mean deletion and insertion "
              "curves per order (bands: 95% interval of ρ's mean, ±1 sd of a random order)"]
    for category, task, name in overlays:
        pos = task["supports"][task["positive"]]
        lines.append(f"- `{name}` (segments by {args.ranking}): {category}, task {task['task']}, query {task['query']['class']}: positive "
                     f"support v = {pos['v']:.3f}, top-{args.top_k} only {pos.get('v_top_kept', float('nan')):.3f}, "
                     f"top-{args.top_k} removed {pos.get('v_top_removed', float('nan')):.3f}; "
                     f"{'correct' if task['correct'] else 'wrong'}")
    return "\n".join(lines) + "\n"


def run(argv: list[str]) -> None:
    """One ``siamese-audio`` command in this process; stop on failure."""
    code = cli(argv)
    if code:
        raise SystemExit(f"siamese-audio {argv[0] if argv[0] != '-q' else argv[1]} failed (exit {code})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("esc50_dir", type=Path, help="the full ESC-50 in its release layout (audio/, meta/esc50.csv)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a cpu-esc50 checkpoint (trained if absent)")
    parser.add_argument("--features", type=Path, default=None, help="its sealed feature version (built if absent)")
    parser.add_argument("--split", type=Path, default=None, help="the report split it was trained on")
    parser.add_argument("--out", type=Path, default=Path("bench-output/faithfulness"))
    parser.add_argument("--tasks", type=int, default=60, help="test tasks to explain (default 60)")
    parser.add_argument("--random-orders", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--ranking", choices=("rho", "u"), default="rho",
                        help="what the overlays show and outline (default rho: SINEX's ranking, under judgement)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None, help="training budget when training")
    parser.add_argument("--no-sanity", action="store_true")
    parser.add_argument("--results-name", default="faithfulness")
    parser.add_argument("--figures-dir", type=Path, default=REPO / "docs" / "figures" / "faithfulness")
    args = parser.parse_args()
    if args.tasks < 50:
        print(f"note: {args.tasks} tasks; the issue's figure is over >= 50", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    features, split, checkpoint = prepare(args)
    explain_dir = args.out / "explain"
    if explain_dir.exists():
        shutil.rmtree(explain_dir)
    t0 = time.perf_counter()
    command = ["explain", str(checkpoint), "--features", str(features), "--split", str(split),
               "--tasks", str(args.tasks), "--random-orders", str(args.random_orders), "--top-k", str(args.top_k), "--ranking", args.ranking,
               "--seed", str(args.seed), "--no-sonify", "--device", "cpu", "--out", str(explain_dir), "--json"]
    if not args.no_sanity:
        command.append("--sanity")
    run(command)
    seconds = time.perf_counter() - t0
    record = json.loads((explain_dir / "explain.json").read_text())
    summary = run_summary(record, explain_dir)
    categories = category_of_class(args.esc50_dir)
    args.figures_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(explain_dir / "faithfulness.png", args.figures_dir / "curves.png")
    overlays = []
    for category, task in pick_overlays(record, categories):
        name = f"overlay_{task['query']['class']}.png"
        shutil.copyfile(explain_dir / task["files"]["overlay"], args.figures_dir / name)
        overlays.append((category, task, name))
    text = markdown(record, summary, overlays, args, checkpoint, seconds)
    (args.out / "faithfulness.md").write_text(text)
    print(text)
    write_results(args.results_name, text, title="Faithfulness of SINEX on a model trained on the real ESC-50")


if __name__ == "__main__":
    main()

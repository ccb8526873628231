#!/usr/bin/env bash
# How much the GPU bundle changes what a model scores: one checkpoint evaluated on the store built from
# the original ESC-50 and on the store built from the bundle (make_bundle.py), same split, same seed,
# same tasks (the tasks are drawn from clip ids, which the bundle keeps).
#
#   bash benchmarks/gpu/bench_bundle.sh ESC50_DIR BUNDLE_DIR CHECKPOINT SPLIT.parquet [WORK] [TASKS]
#
# CHECKPOINT: a cpu-esc50 best.pt trained on the original store; SPLIT: the report split of that store.
# Prints one line per store (accuracy, Wilson CI, tasks, baseline) and writes WORK/bundle-accuracy.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
esc50=$1 bundle=$2 checkpoint=$3 split=$4 work=${5:-/tmp/siamese-bundle-bench} tasks=${6:-1000}
SA=${SA:-.venv/bin/siamese-audio}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$work"
path() { "$PY" -c 'import json,sys; print(json.load(sys.stdin)["path"])'; }
original=$("$SA" -q build esc50 "$esc50" --store "$work/store-original" --crop-long --no-progress --json | path)
bundled=$("$SA" -q build esc50 "$bundle" --store "$work/store-bundle" --crop-long --no-progress --json | path)
for name in original bundled; do
  version=${!name}
  extra=()
  if [ "$name" = bundled ]; then extra=(--allow-feature-mismatch); fi
  rm -rf "${work:?}/eval-$name"
  "$SA" -q evaluate "$checkpoint" --features "$version" --split "$split" --runs $(( tasks / 5 )) --seed 0 \
      --no-curve --out "$work/eval-$name" "${extra[@]}" --json > "$work/eval-$name.json"
done
"$PY" - "$work" "$bundle" <<'PY'
import json, sys
from pathlib import Path
work, bundle = Path(sys.argv[1]), Path(sys.argv[2])
lines = ["| store | accuracy | 95% Wilson CI | tasks | baseline |", "|---|---|---|---|---|"]
for name in ("original", "bundled"):
    r = json.loads((work / f"eval-{name}.json").read_text())
    lines.append(f"| {name} | {r['accuracy']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['n_tasks']} | "
                 f"{r['baseline_accuracy']:.3f} |")
dist = bundle / "distance.json"
if dist.is_file():
    d = json.loads(dist.read_text())
    lines += ["", f"Bundle: {d['clips']} clips, {d['mib']} MiB, Opus level {d['level']}."]
    if "distance" in d:
        m = d["distance"]
        lines.append(f"Log-mel |dB| over {m['clips']} clips: median {m['median_db']}, worst clip median "
                     f"{m['worst_clip_median_db']} ({m['worst_clip']}); 99th percentile median "
                     f"{m['p99_db_median_over_clips']}, worst {m['p99_db_worst']}.")
text = "\n".join(lines) + "\n"
(work / "bundle-accuracy.md").write_text(text)
print(text)
PY

#!/usr/bin/env bash
# The prepared GPU check, for a lent machine with no network (Python 3.12 + a CUDA torch preinstalled):
# install offline -> build the bundle's store on all cores -> train report-esc50 (the authors' network,
# --resident, bf16) for MINUTES -> train cpu-esc50 for the same MINUTES -> evaluate both on the report
# split (TASKS tasks, Wilson CI, no-learning baseline) -> the speed rows of gpu_check.sh -> a table.
#
# Here, first (PyPI and a staged ESC-50 needed):
#   bash benchmarks/gpu/fetch_wheels.sh .whl                              # ~22 MB
#   python benchmarks/gpu/make_bundle.py ESC50_DIR .bundle --measure 200  # ~34 MiB
# There (carry .whl and .bundle; both are ignored by git):
#   bash benchmarks/gpu/device_run.sh                  # MINUTES=3 TASKS=1000 SPEED_EPOCHS=5 DEVICE=cuda
# Smoke test on a CPU: DEVICE=cpu MINUTES=0.5 TASKS=50 SPEED_EPOCHS=1 BUNDLE=<small bundle> ...
#
# Writes under OUT (default ./gpu-run): gpu-table.md, gpu-table.json, log.txt and each step's JSON.
# Budget on an H100 (16 cores): install ~20 s, build ~30 s, 2 x MINUTES training, ~1 min of evaluation,
# SPEED_EPOCHS x 4 speed rows; the defaults end in about 9 minutes, inside one 10-minute call.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-3}
TASKS=${TASKS:-1000}
SPEED_EPOCHS=${SPEED_EPOCHS:-5}
WHEELS=${WHEELS:-.whl}
BUNDLE=${BUNDLE:-.bundle}
OUT=${OUT:-$PWD/gpu-run}
WORK=${WORK:-/tmp/siamese-gpu-run}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

stamp "install offline from $WHEELS"
# shellcheck source=benchmarks/gpu/install_offline.sh
source benchmarks/gpu/install_offline.sh "$WHEELS" "$WORK/site"
SA=("$PY" -m siamese_audio.cli -q)
if [ "$DEVICE" = cuda ]; then nvidia-smi -L || true; fi

stamp "build the bundle's store ($BUNDLE) on $(nproc) cores"
"${SA[@]}" build esc50 "$BUNDLE" --store "$WORK/store" --crop-long --no-progress --json > "$OUT/build.json"
version=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["path"])' "$OUT/build.json")
"${SA[@]}" split esc50 --features "$version" --scheme report --out "$WORK/report-split.parquet" --json > /dev/null

for preset in report-esc50 cpu-esc50; do
  stamp "train $preset for $MINUTES minutes on $DEVICE"
  extra=()
  if [ "$preset" = report-esc50 ]; then extra=(--resident --precision bf16); fi
  rm -rf "$WORK/run-$preset"
  "${SA[@]}" train --features "$version" --split "$WORK/report-split.parquet" --out "$WORK/run-$preset" \
      --preset "$preset" --seed 0 --max-minutes "$MINUTES" --device "$DEVICE" "${extra[@]}" --profile \
      --no-progress --json > "$OUT/train-$preset.json"
  cp "$WORK/run-$preset/metrics.csv" "$OUT/metrics-$preset.csv" 2>/dev/null || true
  stamp "evaluate $preset: $TASKS tasks of the report split's test classes"
  "${SA[@]}" evaluate "$WORK/run-$preset/best.pt" --features "$version" --split "$WORK/report-split.parquet" \
      --runs $(( TASKS / 5 )) --seed 0 --device "$DEVICE" --no-curve --out "$WORK/eval-$preset" \
      --json > "$OUT/eval-$preset.json"
done

if [ "$SPEED_EPOCHS" -gt 0 ]; then
  stamp "speed rows: report-esc50, $SPEED_EPOCHS epochs each, store reads / resident x bf16 / fp32"
  for resident in "" "--resident"; do
    for precision in bf16 fp32; do
      name="speed${resident:+-resident}-$precision"
      rm -rf "${WORK:?}/$name"
      "${SA[@]}" train --features "$version" --split "$WORK/report-split.parquet" --out "$WORK/$name" \
          --preset report-esc50 --max-epochs "$SPEED_EPOCHS" --eval-every "$SPEED_EPOCHS" --eval-tasks 50 \
          --device "$DEVICE" --precision "$precision" $resident --profile --no-progress --json > "$OUT/$name.json"
    done
  done
fi

stamp "table"
"$PY" benchmarks/gpu/table.py "$OUT" --minutes "$MINUTES" --device "$DEVICE"
stamp "done"

#!/usr/bin/env bash
# GPU check of the report's presets, on a CUDA machine that holds only this repository.
#
# It installs the project, generates audio in both dataset layouts, builds their stores, and trains
# report-esc50 and report-audiomnist for a fixed number of epochs with and without --resident, with
# bf16 autocast on and off, printing for each: training pairs/s, seconds per epoch, peak GPU memory
# and the share of each step spent reading the batch (train --profile).
#
#   bash benchmarks/gpu_check.sh [EPOCHS]          # default 30 epochs per configuration
#
# Needs: python3.11 with venv, a CUDA build of torch (installed here as torch==2.13.0 unless
# TORCH_SPEC says otherwise), and about 2 GB of disk under $OUT (default ./gpu-check).
# DEVICE=cpu runs the same steps on the CPU (a smoke test of this script; CPU figures mean little).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-30}
OUT=${OUT:-$PWD/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ ! -x .venv/bin/siamese-audio ]; then
  $PY -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
  .venv/bin/pip install --quiet -e .
fi
BIN=$PWD/.venv/bin
DEVICE=${DEVICE:-cuda}
"$BIN/python" - "$DEVICE" <<'PY'
import sys
import torch
if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "no CUDA device: this check is for a GPU machine (DEVICE=cpu for a smoke test)"
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
else:
    print("device: cpu (smoke test)", "torch", torch.__version__)
PY
"$BIN/python" - "$OUT" <<'PY'
import sys
from pathlib import Path
from siamese_audio.manifests.dummies import make_audiomnist, make_esc50
out = Path(sys.argv[1])
if not (out / "audiomnist" / "data").is_dir():
    make_audiomnist(out / "audiomnist", speakers=[f"{i:02d}" for i in range(1, 21)], digits=10, reps=5, seed=0)
if not (out / "esc50" / "audio").is_dir():
    classes = ["dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow", "rain", "sea_waves",
               "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind", "pouring_water", "toilet_flush",
               "thunderstorm"]
    make_esc50(out / "esc50", classes=classes, clips_per_class=20, seconds=5.0, seed=0)
PY
for dataset in esc50 audiomnist; do
  src=$OUT/$dataset
  version=$("$BIN/siamese-audio" -q build "$dataset" "$src" --store "$OUT/store" --no-progress --json \
            | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["path"])')
  "$BIN/siamese-audio" -q split "$dataset" --features "$version" --scheme random --seed 0 --sizes 10/5/5 \
      --out "$OUT/$dataset-split.parquet" --json > /dev/null
  mkdir -p "$OUT/runs"
  for resident in "" "--resident"; do
    for precision in bf16 fp32; do
      run="$OUT/runs/$dataset${resident:+-resident}-$precision"
      rm -rf "$run"
      "$BIN/siamese-audio" -q train --features "$version" --split "$OUT/$dataset-split.parquet" --out "$run" \
          --preset "report-$dataset" --max-epochs "$EPOCHS" --eval-every "$EPOCHS" --eval-tasks 100 \
          --device "$DEVICE" --precision "$precision" $resident --profile --no-progress --json > "$run.json"
      "$BIN/python" - "$run.json" "$dataset" "${resident:-store-reads}" "$precision" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["timing"]
print(f"report-{sys.argv[2]:<10} {sys.argv[3]:<11} {sys.argv[4]:<5} pairs/s {t['pairs_per_s']:9.1f}  "
      f"epoch {t['epoch_s'] * 1000:8.1f} ms  peak GPU {t.get('peak_gpu_bytes', 0) / 2**30:6.2f} GiB  "
      f"loader share {100 * t['loader_share']:5.1f}%  ({t['epochs_timed']} epochs)")
PY
    done
  done
done

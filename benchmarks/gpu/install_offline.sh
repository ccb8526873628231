#!/usr/bin/env bash
# Install the project on a machine with no network: the wheels fetch_wheels.sh put in DIR, beside the
# interpreter's own torch and the image's packages. Nothing is downloaded (--no-index --no-deps).
#
#   source benchmarks/gpu/install_offline.sh [DIR] [TARGET]   # defaults: .whl, /tmp/siamese-site
#
# Sourced, it exports PYTHONPATH and PATH so that `python3 -m siamese_audio.cli` and `siamese-audio` run
# from TARGET; it then imports every stage once and prints the versions it found, failing loudly when a
# package is missing or torch is older than the project supports.
DIR=${1:-.whl}
TARGET=${2:-/tmp/siamese-site}
PY=${PYTHON:-python3}
if ! ls "$DIR"/*.whl >/dev/null 2>&1; then
  echo "install_offline: no wheels in $DIR (run benchmarks/gpu/fetch_wheels.sh where PyPI is reachable)" >&2
  return 1 2>/dev/null || exit 1
fi
"$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TARGET" \
  "$DIR"/*.whl || { echo "install_offline: pip could not install the wheels of $DIR" >&2; return 1 2>/dev/null || exit 1; }
export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$TARGET/bin:$PATH"
"$PY" - <<'PY' || { echo "install_offline: the installed project does not import (above)" >&2; return 1 2>/dev/null || exit 1; }
import importlib
import sys

import torch

major, minor = (int(p) for p in torch.__version__.split(".")[:2])
if (major, minor) < (2, 2):
    sys.exit(f"torch {torch.__version__}: the project needs >= 2.2")
for module in ("siamese_audio.cli", "siamese_audio.pipeline.build", "siamese_audio.training.loop",
               "siamese_audio.evaluation.reevaluate", "siamese_audio.evaluation.explain.run",
               "siamese_audio.training.tune.study", "dask.distributed", "zarr", "numcodecs", "soundfile",
               "librosa", "optuna", "blake3", "google_crc32c", "skimage"):
    importlib.import_module(module)
import dask, numpy, zarr  # noqa: E401

print(f"installed offline: python {sys.version.split()[0]}, torch {torch.__version__} "
      f"(cuda {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}), "
      f"numpy {numpy.__version__}, dask {dask.__version__}, zarr {zarr.__version__}")
PY

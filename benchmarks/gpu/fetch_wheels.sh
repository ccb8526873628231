#!/usr/bin/env bash
# Download, here (where PyPI is reachable), the wheels a lent GPU machine lacks, for its Python 3.12 on
# manylinux x86-64, plus a wheel of this project built from the working tree; then check that they and
# the device image's own packages (preinstalled.txt) are all the project needs.
#
#   bash benchmarks/gpu/fetch_wheels.sh [DIR]        # default DIR: .whl (ignored by git), ~22 MB
#
# The device step (install_offline.sh) installs them with --no-index --no-deps beside the image's
# torch 2.11: nothing there is downloaded.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$DIR"
rm -f "$DIR"/siamese_audio-*.whl
grep -v '^#' benchmarks/gpu/wheels.txt | grep . > "$DIR/.pins"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" -r "$DIR/.pins"
rm -f "$DIR/.pins"
# the project itself: pure Python, built here so the device needs no build backend
"$PY" -m pip wheel --quiet --no-deps -w "$DIR" . >/dev/null
rm -rf build siamese_audio.egg-info
"$PY" benchmarks/gpu/check_wheels.py "$DIR"
du -sh "$DIR"

#!/usr/bin/env bash
# On a machine WITH network: fill benchmarks/gpu/wheels/ (git-ignored) with the wheels that the GPU image
# lacks (it has torch, torchvision, timm, onnx, onnxruntime, opencv, matplotlib, pyyaml), at the versions
# this project is tested with, for the GPU machine's Python (argument 1, default 3.11) on x86_64 Linux.
#   bash benchmarks/gpu/make_wheels.sh 3.11
# Then copy the repository (with benchmarks/gpu/wheels/) and coco-mini to the GPU machine: run.sh installs
# from the folder only (pip --no-index), so nothing there needs the network.
set -euo pipefail
PY_VERSION="${1:-3.11}"
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$HERE/wheels"
# Each a package segtrain's training path imports that the GPU image may lack, pinned, installed with --no-deps
# (so pip never replaces the image's torch, numpy or opencv).
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$HERE/wheels" -r "$HERE/requirements.txt"
ls "$HERE/wheels"

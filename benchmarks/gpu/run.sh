#!/usr/bin/env bash
# Issue 22's GPU measurement in one command, on a GPU machine without network (see benchmarks/gpu/README.md):
#   bash benchmarks/gpu/run.sh [eager|compile|all]        (default all; from the repository root or anywhere)
# eager:   benchmarks/train_speed.py for DeepLabV3-ResNet50 and SegNet-VGG16-BN at 512 px, batch 8, on
#          coco-mini's training photos listed 10 times (1,540), segtrain's defaults (fp16 + channels_last on CUDA)
#          against the best of fp16/bf16 x NCHW/channels_last; about 1-2 min per model on an H100/H200.
# compile: the same with --compile (a and c compiled; fp16 only), compile time recorded as warmup_s;
#          a few minutes per model.
# Results: $OUT (or benchmarks/results/gpu/) as train_speed_gpu_<model>[_compile].json and run.log.
# Data: $DATA, else ../shared/data/coco-mini beside the repository, else shared/data/coco-mini inside it.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
STAGE="${1:-all}"
RESULTS="${OUT:-$REPO/benchmarks/results/gpu}"
mkdir -p "$RESULTS"
exec > >(tee -a "$RESULTS/run.log") 2>&1
for candidate in "${DATA:-}" "$REPO/../shared/data/coco-mini" "$REPO/shared/data/coco-mini"; do
    if [ -n "$candidate" ] && [ -d "$candidate/train" ]; then DATA="$candidate"; break; fi
done
[ -d "${DATA:-}/train" ] || { echo "coco-mini not found: set DATA=/path/to/coco-mini"; exit 2; }
PY="${PYTHON:-python3}"

echo "== $(date -u +%FT%TZ) $(nvidia-smi -L 2>/dev/null | head -1) | $($PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())')"
# Install, from benchmarks/gpu/wheels/ only, each requirement whose module does not import here.
missing=()
while read -r line; do
    req="${line%%#*}"; req="${req// /}"; module="${line##*# import }"
    [ -z "$req" ] && continue
    $PY -c "import $module" 2>/dev/null || missing+=("$req")
done < benchmarks/gpu/requirements.txt
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing from benchmarks/gpu/wheels: ${missing[*]}"
    $PY -m pip install --no-index --no-deps --find-links benchmarks/gpu/wheels "${missing[@]}" \
        || { echo "wheels missing: run benchmarks/gpu/make_wheels.sh on a machine with network first"; exit 2; }
fi
$PY -c "import torch; raise SystemExit(not torch.cuda.is_available())" || { echo "no CUDA device visible to torch"; exit 2; }

bench() {  # name, timeout in seconds, train_speed arguments...
    local name="$1" limit="$2"; shift 2
    echo "== $(date -u +%T) $name"
    timeout "$limit" env PYTHONPATH="$REPO" $PY benchmarks/train_speed.py --data "$DATA" --repeat 10 \
        --image-size 512 --batch-size 8 --json "$RESULTS/train_speed_gpu_$name.json" "$@" \
        || echo "!! $name failed or ran past ${limit}s"
}
if [ "$STAGE" = eager ] || [ "$STAGE" = all ]; then
    bench deeplab_r50 240 --model deeplab --encoder resnet50 --warmup 5 --steps 40
    bench segnet_vgg16 240 --model segnet --encoder vgg16_bn --warmup 5 --steps 40
fi
if [ "$STAGE" = compile ] || [ "$STAGE" = all ]; then
    bench deeplab_r50_compile 420 --model deeplab --encoder resnet50 --warmup 3 --steps 40 --compile --precisions fp16
    bench segnet_vgg16_compile 420 --model segnet --encoder vgg16_bn --warmup 3 --steps 40 --compile --precisions fp16
fi
echo "== $(date -u +%T) done; results in $RESULTS"

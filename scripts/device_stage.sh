#!/usr/bin/env bash
# One stage of MiniSD / judge training on the lent GPU machine (see docs/training.md).
# Run there from the repository root, with `.whl` carried (diffusers, importlib_metadata, zipp):
#   bash scripts/device_stage.sh base             # tokenizer + MiniVAE + MiniCLIP
#   STEPS=4000 bash scripts/device_stage.sh unet  # UNet up to step 4000 (resumes if checkpoints exist)
#   bash scripts/device_stage.sh judge
#   bash scripts/device_stage.sh assemble         # fp16 pipeline, packed for the trip back
#   FACTOR=seg STEPS=2000 bash scripts/device_stage.sh factor   # an FG-DM factor (needs the shipped MiniSD)
#   bash scripts/device_stage.sh graph            # fp16 copy of runs/train/graph, packed for the trip back
# What comes back (under $OUT, at most 8 files of <= 15 MiB): metrics and loss curves in one tar;
# for `base` the trained tokenizer/VAE/MiniCLIP in parts (commit them as checkpoints/base.tar.part-*),
# for `unet` the newest checkpoint (commit it as checkpoints/unet/), for `assemble` the pipeline.
# SMOKE=1 runs every stage here on CPU in seconds (tiny data, 2 steps, no .whl needed), to catch
# plumbing bugs before GPU minutes are spent:  SMOKE=1 OUT=/tmp/o bash scripts/device_stage.sh base
set -euo pipefail
stage=${1:?stage: base | unet | judge | assemble | factor | graph}
out=${OUT:-/tmp/fgdm-out}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
SMOKE_ARGS=()
if [ "${SMOKE:-0}" = 1 ]; then  # tiny everything; the assembled pipeline lives in runs/minisd
  SMOKE_ARGS=(--set steps=2 --set data.n_scenes=8 --set data.workers=0 --set data.holdout_n=2 --set batch_size=4
              --set checkpoint_every=1 --set compile=false --set mixed_precision=no)
fi
fgdm() {
  if [ "$1" = train ] && [ "${SMOKE:-0}" = 1 ] && [ "$2" != assemble ] && [ "$2" != assemble-graph ]; then
    local extra=()
    case "$2" in
      factor|image-factor) extra=(--set base.model=runs/minisd --set "extra.sizes=[64]" --set data.size=64) ;;
      vae|unet|clip|judge) extra=(--set data.size=64) ;;
    esac
    "$PY" -m fgdm "$@" "${SMOKE_ARGS[@]}" "${extra[@]}"
  else
    "$PY" -m fgdm "$@"
  fi
}
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no GPU") | tee "$out/gpu.txt"

# Restore what earlier sessions brought back and committed under checkpoints/ (nothing else survives).
if [ ! -d runs/train/vae/final ] && ls checkpoints/base.tar.part-* >/dev/null 2>&1; then
  mkdir -p runs/train && cat checkpoints/base.tar.part-* | tar -C runs/train -xf -
fi
if [ ! -d runs/train/unet/checkpoints ] && [ -f checkpoints/unet/state.json ]; then
  step=$(python3 -c "import json; print(json.load(open('checkpoints/unet/state.json'))['step'])")
  mkdir -p "runs/train/unet/checkpoints/step-$(printf %07d "$step")"
  cp checkpoints/unet/* "runs/train/unet/checkpoints/step-$(printf %07d "$step")/"
fi

case "$stage" in
  base)
    fgdm train tokenizer --config configs/tokenizer.yaml --quiet
    fgdm train vae --config configs/vae.yaml --quiet
    fgdm train clip --config configs/clip.yaml --quiet
    tar -C runs/train -cf - tokenizer/final vae/final clip/final | split -b 15m - "$out/base.tar.part-" ;;
  unet)
    resume=()
    [ -d runs/train/unet/checkpoints ] && resume=(--resume)
    fgdm train unet --config configs/unet.yaml --quiet --steps "${STEPS:?set STEPS}" "${resume[@]}"
    cp "$(ls -d runs/train/unet/checkpoints/step-* | tail -n 1)"/* "$out"/ ;;
  judge)
    fgdm train judge --config configs/judge.yaml --quiet ;;
  assemble)
    fgdm train assemble --tokenizer runs/train/tokenizer/final --text-encoder runs/train/clip/final \
      --vae runs/train/vae/final --unet runs/train/unet/final --out runs/minisd --overwrite
    tar -C runs -cf - minisd | split -b 15m - "$out/minisd.tar.part-" ;;
  factor)
    # configs/factor_<FACTOR>.yaml, or configs/image_factor.yaml for FACTOR=image
    cfg=configs/factor_${FACTOR:?set FACTOR}.yaml; comp=factor
    [ "$FACTOR" = image ] && cfg=configs/image_factor.yaml && comp=image-factor
    dir=$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['output_dir'])" "$cfg")
    if [ ! -d "$dir/checkpoints" ] && [ -f "checkpoints/factor_$FACTOR/state.json" ]; then
      step=$(python3 -c "import json; print(json.load(open('checkpoints/factor_$FACTOR/state.json'))['step'])")
      mkdir -p "$dir/checkpoints/step-$(printf %07d "$step")"
      cp "checkpoints/factor_$FACTOR"/* "$dir/checkpoints/step-$(printf %07d "$step")/"
    fi
    if [ ! -f runs/train/graph/graph.yaml ] && ls checkpoints/graph.tar.part-* >/dev/null 2>&1; then
      mkdir -p runs/train && cat checkpoints/graph.tar.part-* | tar -C runs/train -xf -
    fi
    resume=()
    [ -d "$dir/checkpoints" ] && resume=(--resume)
    fgdm train "$comp" --config "$cfg" --quiet --steps "${STEPS:?set STEPS}" "${resume[@]}"
    cp "$(ls -d "$dir"/checkpoints/step-* | tail -n 1)"/* "$out"/
    [ -f runs/train/graph/graph.yaml ] && tar -C runs/train -cf - graph | split -b 15m - "$out/graph.tar.part-" ;;
  graph)
    fgdm train assemble-graph --graph runs/train/graph --out runs/fgdm --overwrite
    tar -C runs -cf - fgdm | split -b 15m - "$out/fgdm.tar.part-" ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
tar -C runs -czf "$out/reports.tgz" --ignore-failed-read $(cd runs && ls -d train/*/metrics.json train/*/loss.csv train/*/config.json 2>/dev/null)
ls -la "$out"

#!/usr/bin/env bash
# Put what one `scripts/device_stage.sh STAGE` call brought back where the next call (or session)
# and the package expect it. Run here, in the repository root, on the reply's files_at folder:
#   bash scripts/receive_stage.sh STAGE FILES_AT            # FACTOR=seg for the factor stage
#   FINAL=1 bash scripts/receive_stage.sh unet FILES_AT     # the UNet is done: ship MiniSD + MiniCLIP
#   JUDGE_FINAL=1 bash scripts/receive_stage.sh unet-judge FILES_AT   # UNet checkpoint kept, judge shipped
# Checkpoints go to checkpoints/ (tracked: they travel with the tree to the next call or session);
# with FINAL=1 the weights go to src/fgdm/models/data/ and the checkpoints they replace are
# deleted, so the travelling tree stays under the device's 64 MiB (docs/training.md).
# Metrics, loss curves and eval results are unpacked under runs/received/ for the docs.
set -euo pipefail
stage=${1:?stage: base | unet | unet-judge | judge | factor | factors | graph | eval-base | eval-fgdm | eval-data}
src=${2:?the folder where the device call returned its files}
[ -d "$src" ] || { echo "no folder $src" >&2; exit 2; }
data=src/fgdm/models/data
stamp=$(date -u +%Y%m%dT%H%M%S)
keep="runs/received/$stage-$stamp"
mkdir -p "$keep" "$data"
[ -f "$src/reports.tgz" ] && tar -C "$keep" -xzf "$src/reports.tgz"
[ -f "$src/eval.tgz" ] && tar -C "$keep" -xzf "$src/eval.tgz"
[ -f "$src/gpu.txt" ] && cp "$src/gpu.txt" "$keep/"

checkpoint() {  # checkpoint NAME [FOLDER]: checkpoints/NAME <- FOLDER (default: the returned checkpoint/), replacing it
  local from=${2:-$src/checkpoint}
  [ -f "$from/state.json" ] || { echo "no $from/state.json" >&2; exit 2; }
  rm -rf "checkpoints/$1" && mkdir -p "checkpoints/$1" && cp "$from"/* "checkpoints/$1/"
  chmod -R u+w,a+r "checkpoints/$1"  # the device's files arrive read-only
  if ls "checkpoints/$1"/ema-*.safetensors >/dev/null 2>&1; then  # keep the EMA only (the weights budget;
    rm -f "checkpoints/$1"/model-*.safetensors                      # a resume starts the model from it)
  fi
  local step
  step=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["step"])' "checkpoints/$1/state.json")
  echo "checkpoints/$1: step $step"
}
ship_judge() {  # ship_judge FOLDER: a judge's final/ folder becomes the package's judge, with its provenance
               # (the run's metrics.json, its newest checkpoint's state.json) where the run has them; its checkpoint goes
  rm -rf "$data/judge" && cp -r "$1" "$data/judge"
  local run newest
  run=$(dirname "$1")
  [ -f "$run/metrics.json" ] && cp "$run/metrics.json" "$data/judge/"
  newest=$(ls -d "$run"/checkpoints/step-* 2>/dev/null | tail -n 1)  # zero-padded: ls sorts them
  [ -n "$newest" ] && [ -f "$newest/state.json" ] && cp "$newest/state.json" "$data/judge/"
  chmod -R u+w,a+r "$data/judge" && rm -rf checkpoints/judge
  echo "shipped $data/judge ($(ls "$data/judge" | tr '\n' ' '))"
}
graph_parts() {  # graph_parts [SKIP]: every returned <graph>.tar.part-* (but SKIP's) to checkpoints/, replacing the old
  local f g
  for f in "$src"/*.tar.part-aa; do
    g=$(basename "$f" .tar.part-aa)
    [ "$g" = "${1:-}" ] && continue
    rm -f "checkpoints/$g.tar.part-"* && cp "$src/$g.tar.part-"* checkpoints/ && echo "checkpoints/$g.tar.part-*"
  done
}
unpack() {  # unpack() PREFIX DEST: cat PREFIX.tar.part-* | tar -C DEST -x
  ls "$src/$1".tar.part-* >/dev/null 2>&1 || { echo "no $1.tar.part-* in $src" >&2; exit 2; }
  cat "$src/$1".tar.part-* | tar -C "$2" -xf -
}

case "$stage" in
  base)
    rm -f checkpoints/base.tar.part-* && cp "$src"/base.tar.part-* checkpoints/ ;;
  unet)
    if [ -f "$data/minisd/model_index.json" ] && [ "${FINAL:-0}" != 1 ]; then  # MiniSD has shipped: a further run
      # either replaces it (FINAL=1) or stays out of the tree (shipped MiniSD + a 14 MB checkpoint exceed 40 MiB)
      mkdir -p "$keep/checkpoint" "$keep/preview" && cp "$src"/checkpoint/* "$keep/checkpoint/" && unpack minisd "$keep/preview"
      echo "MiniSD has shipped: checkpoint and preview kept in $keep (not committed); FINAL=1 ships the preview"
      exit 0
    fi
    checkpoint unet
    if [ "${FINAL:-0}" = 1 ]; then
      rm -rf "$data/minisd" "$data/miniclip" && unpack minisd "$data"
      rm -rf checkpoints/unet checkpoints/base.tar.part-*
      echo "shipped $data/minisd and $data/miniclip; removed the UNet checkpoint and base.tar"
    else
      mkdir -p "$keep/preview" && unpack minisd "$keep/preview"
      echo "preview pipeline in $keep/preview (not shipped)"
    fi ;;
  judge)
    checkpoint judge
    if [ "${FINAL:-0}" = 1 ]; then
      mkdir -p "$keep/judge" && unpack judge "$keep/judge" && ship_judge "$keep/judge/final"
    fi ;;
  unet-judge)  # the UNet's checkpoint (never final here: no pipeline came back); the judge's run under $keep,
               # and with JUDGE_FINAL=1 its final/ shipped, else its checkpoint kept in checkpoints/judge/
    checkpoint unet "$src/unet"
    tar -C "$keep" -xf "$src/judge-run.tar" && tar -C "$keep" -xzf "$src/logs.tgz"
    if [ "${JUDGE_FINAL:-0}" = 1 ]; then
      ship_judge "$keep/train/judge/final"
    else
      checkpoint judge "$(ls -d "$keep"/train/judge/checkpoints/step-* | tail -n 1)"
    fi ;;
  factor)
    checkpoint "factor_${FACTOR:?set FACTOR}"
    graph_parts ;;
  factors)  # several factor runs of one call: each checkpoint to checkpoints/factor_NAME/, their graphs' parts
    mkdir -p "$keep/ck" && unpack factors-ckpt "$keep/ck"
    for d in "$keep"/ck/factor_*/; do checkpoint "$(basename "$d")" "${d%/}"; done
    rm -rf "$keep/ck" && tar -C "$keep" -xzf "$src/logs.tgz"
    graph_parts factors-ckpt ;;
  graph)
    rm -rf "$data/fgdm" && unpack fgdm "$data"
    rm -rf checkpoints/factor_* checkpoints/graph.tar.part-*
    echo "shipped $data/fgdm; removed the factor checkpoints and the graph parts" ;;
  eval-base|eval-fgdm|eval-data)
    echo "results in $keep/eval" ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
du -sh checkpoints "$data" 2>/dev/null || true

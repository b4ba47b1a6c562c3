#!/usr/bin/env bash
# Before a device call: what travels to the device (tracked and untracked-not-ignored files of the
# working tree, and the carried paths) must stay under 64 MiB. The shipped weights alone are ~39 MiB
# and the docs' figures ~13 MB, so with the diffusers wheels (6.4 MB) and a stage's checkpoints
# (factors: ~9 MB of EMA weights and, as fp16, ~9 MB of graph) it would not fit. This takes out of the
# working tree the tracked files no device stage reads, and reports what would travel:
#
#   bash scripts/device_slim.sh STAGE [CARRIED_PATH ...]   # e.g. factors .whl; exit 1 if over 64 MiB
#   bash scripts/device_slim.sh restore                    # after the session's calls: put them back
#   bash scripts/device_slim.sh size [CARRIED_PATH ...]    # only report
#
# Taken out: the docs' figures (docs/*.png) always; the evaluation MiniCLIP
# (src/fgdm/models/data/miniclip) for the stages that do not use it (base, judge, factor, factors,
# graph, bench-train, eval-data); committed FG-DM factor checkpoints (checkpoints/factor_*) for every
# stage but factor and factors (the others read the graph, checkpoints/<graph>.tar.part-*). Only
# committed files are taken (uncommitted changes there are refused; untracked files are left and
# counted), and `restore` checks out exactly the files taken, so nothing is lost.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
stage=${1:?"STAGE (as for scripts/device_stage.sh), restore, or size"}
shift
limit=$((64 * 1024 * 1024))
clip=src/fgdm/models/data/miniclip
ck='checkpoints/factor_*'

travelling() {  # bytes that would travel: present tracked and untracked-not-ignored files, and the carried paths
  local total=0 n
  n=$(git ls-files -z -co --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')
  total=$((total + n))
  for p in "$@"; do
    [ -e "$p" ] || { echo "carried path $p does not exist" >&2; exit 2; }
    n=$(du -sb "$p" | cut -f1)
    total=$((total + n))
  done
  echo "$total"
}

report() {
  local bytes
  bytes=$(travelling "$@")
  awk -v b="$bytes" -v l="$limit" 'BEGIN {printf "would travel: %.1f MiB of 64 MiB (%.1f MiB left)\n", b / 1048576, (l - b) / 1048576}'
  [ "$bytes" -le "$limit" ] || { echo "over the device's 64 MiB: take out or carry less" >&2; return 1; }
}

case "$stage" in
  restore)
    gone=$(git ls-files -d -- 'docs/*.png' "$clip" "$ck" | wc -l)
    git ls-files -z -d -- 'docs/*.png' "$clip" "$ck" | xargs -0 -r git checkout --
    echo "restored $gone file(s)"
    exit 0 ;;
  size)
    report "$@"
    exit $? ;;
  factor|factors) paths=('docs/*.png' "$clip") ;;
  unet|unet-judge|assemble|eval-base|eval-fgdm) paths=('docs/*.png' "$ck") ;;
  base|judge|graph|bench-train|eval-data) paths=('docs/*.png' "$clip" "$ck") ;;
  *) echo "unknown stage $stage (see scripts/device_stage.sh)" >&2; exit 2 ;;
esac
if ! git diff --quiet --diff-filter=MT -- "${paths[@]}"; then  # (files an earlier slim took out are fine)
  echo "uncommitted changes under ${paths[*]}: commit them first (a slim takes these files out of the tree)" >&2
  exit 2
fi
n=$(git ls-files -z -- "${paths[@]}" | tr -cd '\0' | wc -c)
git ls-files -z -- "${paths[@]}" | xargs -0 -r rm -f
echo "took out $n tracked file(s) no '$stage' call reads (${paths[*]}); 'bash scripts/device_slim.sh restore' puts them back"
report "$@"

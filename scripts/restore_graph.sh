#!/usr/bin/env bash
# Restore the FG-DM graph the package shipped at commit REV into DEST, from the git history:
# the recipes and results that started from an earlier shipped graph name the commit and the folder.
#   bash scripts/restore_graph.sh ba60147 runs/shipped/fgdm-ba60147   # seg (from scratch) -> image adapter
#   bash scripts/restore_graph.sh ce32bb0 runs/shipped/fgdm-ce32bb0   # seg adapter -> image adapter
# It refuses a DEST that already holds files (nothing is overwritten) and needs the clone's history
# (a shallow clone: git fetch --unshallow).
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: bash scripts/restore_graph.sh REV DEST" >&2
  exit 2
fi
rev=$1 src=src/fgdm/models/data/fgdm
case "$2" in /*) dest=$2 ;; *) dest="$PWD/$2" ;; esac  # absolute, before the cd (no GNU realpath -m)
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"  # the clone this script is in, from anywhere
if ! git cat-file -e "$rev^{commit}" 2>/dev/null; then
  echo "restore_graph: REV '$rev' is not a commit of this clone" >&2
  exit 2
fi
files=$(git ls-tree -r --name-only "$rev" -- "$src")
if [ -z "$files" ]; then
  echo "restore_graph: commit $rev ships no graph ($src)" >&2
  exit 2
fi
if [ -d "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
  echo "restore_graph: DEST '$dest' is not empty; refusing to write there" >&2
  exit 2
fi
tmp="$dest.partial"
rm -rf "$tmp"
for f in $files; do
  rel=${f#"$src"/}
  mkdir -p "$tmp/$(dirname "$rel")"
  git show "$rev:$f" > "$tmp/$rel"
done
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp" "$dest"
echo "restored the graph of $rev ($(echo "$files" | wc -l) files) to $dest"

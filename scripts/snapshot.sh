#!/usr/bin/env bash
# Export the committed HEAD (or the commit named by $2) into .snap/ (or the git-ignored folder named by $1,
# e.g. .snap_attn, so teammates' GPU runs never share one) for a GPU run: teammates' uncommitted files in
# the shared tree never reach the device build, and results match a commit. Then, with the device tool:
#   carry [".carry", "<dir>"], command:
#   source .carry/gpu_env.sh && cd <dir> && bash scripts/gpu_check.sh [--tests ...] [--bench ...]
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
dir=${1:-.snap}
rev=${2:-HEAD}
case "$dir" in
  .snap|.snap_[a-z0-9]*) ;;
  *) echo "snapshot folder must be .snap or .snap_<name> (lower-case letters, digits)"; exit 2 ;;
esac
grep -qx "/$dir/" .git/info/exclude 2>/dev/null || echo "/$dir/" >> .git/info/exclude
rm -rf "$dir" && mkdir "$dir"
git archive --format=tar "$rev" | tar -x -C "$dir"
git rev-parse --short=12 "$rev" > "$dir/SNAPSHOT_SHA"
echo "snapshot of $(cat "$dir/SNAPSHOT_SHA") in $dir ($(du -sh "$dir" | cut -f1))"

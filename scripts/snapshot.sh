#!/usr/bin/env bash
# Export the committed HEAD into .snap/ (git-ignored) for a GPU run, so teammates' uncommitted files
# in the shared tree never reach the device build, and results match a commit. Then, with the device
# tool: carry [".carry", ".snap"], command:
#   source .carry/gpu_env.sh && cd .snap && bash scripts/gpu_check.sh [--tests ...] [--bench ...]
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '/.snap/' .git/info/exclude 2>/dev/null || echo '/.snap/' >> .git/info/exclude
rm -rf .snap && mkdir .snap
git archive --format=tar HEAD | tar -x -C .snap
git rev-parse --short=12 HEAD > .snap/SNAPSHOT_SHA
echo "snapshot of $(cat .snap/SNAPSHOT_SHA) in .snap ($(du -sh .snap | cut -f1))"

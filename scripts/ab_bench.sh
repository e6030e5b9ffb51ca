#!/usr/bin/env bash
# A/B of commits in one GPU-machine call: one wheel per commit (built in parallel), optional CUDA tests of
# each, then passes that install the wheels in turn and run one benchmark, so every build is timed on the
# same machine in the same state. Run-to-run spread on the H100 is ~0.2-1 µs for few-µs kernels, more
# than many changes being judged (kernel notes, tree mask rounds 8 and 13): compare builds inside one call.
#
# Here (exports each commit with scripts/snapshot.sh into .snap_ab_<sha>, the folders to carry):
#   bash scripts/ab_bench.sh --prepare 6dd7b80 HEAD
# On the device, from the repository root (carry [".carry", ".snap_ab_<sha>", ...]):
#   source .carry/gpu_env.sh && bash scripts/ab_bench.sh --bench tree_mask \
#     [--providers ssdk-cuda] [--passes 3] [--tests "tests/ops/test_tree_mask.py"] [--full]
# Without --providers the passes interleave every provider (the benchmark protocol); with it, only those.
# Prints one line of µs per build and pass; $OUT/ab_results.tgz holds each pass's JSON (<bench>_<sha>_<pass>.json)
# and the build logs (the device tool brings back only a few files).
set -euo pipefail

if [ "${1:-}" = "--prepare" ]; then
  shift
  for rev in "$@"; do
    dir=.snap_ab_$(git rev-parse --short=7 "$rev")
    bash "$(dirname "$0")/snapshot.sh" "$dir" "$rev" && echo "carry $dir"
  done
  exit 0
fi

BENCH="" PROVIDERS="" PASSES=2 TESTS="" QUICK="--quick"
while [ $# -gt 0 ]; do
  case "$1" in
    --bench) BENCH="$2"; shift 2 ;;
    --providers) PROVIDERS="--providers $2"; shift 2 ;;
    --passes) PASSES="$2"; shift 2 ;;
    --tests) TESTS="$2"; shift 2 ;;
    --full) QUICK=""; shift ;;
    *) echo "unknown argument: $1"; exit 2 ;;
  esac
done
[ -n "$BENCH" ] || { echo "--bench is required"; exit 2; }
OUT=${OUT:-/tmp/ssdk_out}
WHEELS=/tmp/ab_wheels RESULTS=/tmp/ab_results
mkdir -p "$OUT" "$WHEELS" "$RESULTS"
snaps=$(ls -d "$(pwd)"/.snap_ab_* 2>/dev/null || true)
[ -n "$snaps" ] || { echo "no .snap_ab_* folders here (run --prepare, carry them, run from the repository root)"; exit 2; }

for dir in $snaps; do
  sha=$(cat "$dir/SNAPSHOT_SHA")
  mkdir -p "$WHEELS/$sha"
  (cd "$dir" && python3 -m pip wheel --no-build-isolation --no-deps -q -w "$WHEELS/$sha" . > "$RESULTS/build_$sha.log" 2>&1 ||
    { echo "build of $sha failed:"; tail -20 "$RESULTS/build_$sha.log"; }) &
done
wait

install() { python3 -m pip install --no-deps -q --force-reinstall "$WHEELS/$1"/*.whl > /dev/null 2>&1; }
if [ -n "$TESTS" ]; then
  for dir in $snaps; do
    sha=$(cat "$dir/SNAPSHOT_SHA")
    install "$sha"
    echo "== tests $sha: $(cd "$dir" && python3 -m pytest -q -m cuda -p no:cacheprovider $TESTS 2>&1 | tail -1)"
  done
fi
for pass in $(seq 1 "$PASSES"); do
  for dir in $snaps; do
    sha=$(cat "$dir/SNAPSHOT_SHA")
    install "$sha"
    line=$(cd "$dir/bench_kernels" && python3 "bench_$BENCH.py" $QUICK $PROVIDERS --out "$RESULTS/${BENCH}_${sha}_$pass.json" |
      awk -F'|' '/ us |µs/ {next} NF >= 3 {gsub(/ /, "", $1); gsub(/ /, "", $2); gsub(/ /, "", $3); printf "%s %s %s; ", $1, $2, $3}') ||
      line="$line (the benchmark failed)"
    echo "== $sha pass $pass: $line"
  done
done
tar czf "$OUT/ab_results.tgz" -C "$RESULTS" .

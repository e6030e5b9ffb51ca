#!/usr/bin/env bash
# One GPU-machine call: build against the installed torch, run the CUDA tests, run benchmarks, and
# leave logs + result JSONs in $OUT (the device tool brings back at most 8 files: one log + one tarball).
#
# Runs inside a snapshot of a commit made by scripts/snapshot.sh (never the shared working tree):
#   carry [".carry", ".snap"];  source .carry/gpu_env.sh && cd .snap && \
#     bash scripts/gpu_check.sh [--tests "tests/ops/test_norm.py ..."] [--bench "norm rope ..."] [--quick]
#
# Defaults: every test marked cuda, every bench_kernels/bench_*.py.
set -uo pipefail
OUT=${OUT:-/tmp/ssdk_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
TESTS="tests"
BENCHES=$(ls bench_kernels/bench_*.py 2>/dev/null | sed 's|bench_kernels/bench_||; s|\.py||' | tr '\n' ' ')
QUICK=""
PYTEST_ARGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) TESTS="$2"; shift 2 ;;
    --bench) BENCHES="$2"; shift 2 ;;
    --quick) QUICK="--quick"; shift ;;
    --pytest-args) PYTEST_ARGS="$2"; shift 2 ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
if [ ! -f SNAPSHOT_SHA ]; then
  echo "gpu_check.sh must run in a snapshot of a commit: run 'bash scripts/snapshot.sh' locally, carry"
  echo "[\".carry\", \".snap\"], and use: source .carry/gpu_env.sh && cd .snap && bash scripts/gpu_check.sh ..."
  exit 2
fi
export SSDK_GIT_SHA=$(cat SNAPSHOT_SHA)
status=0
exec > >(tee -a "$LOG") 2>&1

echo "== build ($(date -u +%FT%TZ), sha ${SSDK_GIT_SHA:-unknown})"
start=$(date +%s)
if ! python3 -m pip install --no-build-isolation --no-deps -q . ; then
  echo "BUILD FAILED"; exit 1
fi
echo "build took $(( $(date +%s) - start )) s"
python3 -m ssdk.env
ldd "$(python3 -c 'import ssdk._C as m; print(m.__file__)')" | grep -E "stdc\+\+|torch_cpu" || true

if [ "$TESTS" != "none" ]; then
  echo "== cuda tests: $TESTS"
  eval "pytest_args=($PYTEST_ARGS)"  # shell words, so --pytest-args "-k 'a or b'" keeps its quotes
  python3 -m pytest -m "cuda or multi_gpu" -q -rs -p no:cacheprovider "${pytest_args[@]}" $TESTS || status=1
fi

if [ "$BENCHES" != "none" ]; then
  for bench in $BENCHES; do
    echo "== bench $bench"
    (cd bench_kernels && python3 "bench_$bench.py" $QUICK) || status=1
  done
fi
tar czf "$OUT/results.tgz" bench_kernels/results e2e/results 2>/dev/null || true
echo "== gpu_check exit status $status"
exit $status

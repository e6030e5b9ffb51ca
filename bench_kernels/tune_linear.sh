#!/usr/bin/env bash
# Builds and runs bench_kernels/tune_linear.cu (GPU machine); output to stdout and $OUT/tune_linear.txt.
#   bash bench_kernels/tune_linear.sh [--build-only]   (a second call without the flag reuses the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${TMPDIR:-/tmp}/tune_linear
if [ ! -x "$bin" ] || [ bench_kernels/tune_linear.cu -nt "$bin" ] || [ csrc/include/ssdk/linear.cuh -nt "$bin" ] ||
   [ bench_kernels/tune_timing.cuh -nt "$bin" ]; then
  "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" -O3 -std=c++17 -arch=${ARCH:-sm_90a} --expt-relaxed-constexpr \
    -Xptxas -v -I csrc/include bench_kernels/tune_linear.cu -o "$bin" 2> "${OUT:-/tmp}/tune_linear_ptxas.txt"
fi
[ "${1:-}" = "--build-only" ] && exit 0
"$bin" | tee "${OUT:-/tmp}/tune_linear.txt"

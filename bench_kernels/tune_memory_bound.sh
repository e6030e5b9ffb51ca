#!/usr/bin/env bash
# Builds and runs bench_kernels/tune_memory_bound.cu (GPU machine, after `source .carry/gpu_env.sh`).
# FlashInfer's headers come from its installed wheel; output goes to stdout (and $OUT/tune_memory_bound.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
fi_include=${FI_INCLUDE:-$(python3 -c 'import flashinfer, os; print(os.path.join(os.path.dirname(flashinfer.__file__), "data", "include"))')}
# FlashInfer's norm.cuh includes cublasLt.h: take it from the CUDA toolkit or torch's nvidia wheels.
nv_include=$(python3 -c 'import nvidia, os; print(" ".join("-I" + os.path.join(p, d, "include") for p in nvidia.__path__ for d in os.listdir(p) if os.path.isdir(os.path.join(p, d, "include"))))' 2>/dev/null || true)
# FAST_MATH=1 adds -use_fast_math (FlashInfer's JIT flag) to the whole binary, for a side-by-side check.
extra=${FAST_MATH:+-use_fast_math}
bin=${TMPDIR:-/tmp}/tune_memory_bound${FAST_MATH:+_fast}
"${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" -O3 -std=c++17 -arch=${ARCH:-sm_90a} --expt-relaxed-constexpr $extra -DENABLE_BF16 -DENABLE_FP8 \
  -I csrc/include -I "$fi_include" $nv_include bench_kernels/tune_memory_bound.cu -o "$bin"
"$bin" "$@" | tee "${OUT:-/tmp}/tune_memory_bound${FAST_MATH:+_fast}.txt"

// RMSNorm and fused residual-add RMSNorm over rows of a [rows, hidden] view.
//   rmsnorm:            out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * w
//   fused_add_rmsnorm:  residual[r] += x[r];  x[r] = rmsnorm(residual[r])   (in place)
// T in {float, __half, __nv_bfloat16}; rows strided (last dim contiguous); fp32 math.
// hf_exact follows transformers' LlamaRMSNorm/Qwen3RMSNorm rounding: the sum x + residual is
// rounded to T before the norm, and the normalized value is rounded to T before the weight multiply.
// Otherwise FlashInfer's order: one rounding at the end, the norm uses the fp32 sum.
// One block per row; each thread keeps VPT vectors of VEC elements (and the matching weights) in
// registers, so every byte is read once. Batch invariant: a row's result depends only on that row,
// the weight and the layout (hidden size, alignment), never on how many rows are normalized with it.
#pragma once
#include <type_traits>

#include "ssdk/common.cuh"

namespace ssdk::norm {

template <typename T>
struct RMSNormArgs {
  T* out;              // [rows, hidden] (== input for the fused op)
  const T* input;      // [rows, hidden]
  T* residual;         // nullptr for plain rmsnorm
  const T* weight;     // [hidden]
  int64_t out_stride, input_stride, residual_stride;
  int rows, hidden;
  float eps;
  bool hf_exact;
  int num_sms;         // of the device, for the launch shape
  int l2_bytes;        // L2 size of the device, for the launch shape (0: unknown)
};

constexpr int kMaxThreads = 1024;  // x 16 scalars per thread = the 16384 limit on odd rows
constexpr int64_t kThroughputElements = int64_t{1} << 20;  // measured crossover on H100

// kStreaming: ld/st.global.cs for the row data; kLateWeight: load the weight after the reduction
// instead of with the row. Template flags so bench_kernels/tune_memory_bound.cu can compare them.
template <typename T, int VEC, int VPT, bool kStreaming = false, bool kLateWeight = false>
__global__ void __launch_bounds__(kMaxThreads) rmsnorm_kernel(RMSNormArgs<T> a) {
  using V = Vec<T, VEC>;
  const int row = blockIdx.x;
  const int num_vec = a.hidden / VEC;
  const T* in_row = a.input + row * a.input_stride;
  T* res_row = a.residual ? a.residual + row * a.residual_stride : nullptr;
  T* out_row = a.out + row * a.out_stride;
  auto load = [](V& v, const T* p) { if constexpr (kStreaming) v.load_streaming(p); else v.load(p); };
  auto store = [](const V& v, T* p) { if constexpr (kStreaming) v.store_streaming(p); else v.store(p); };

  // Issue every load (input, residual, weight) before any use, so the row costs one memory round
  // trip; the weight latency also hides behind the reduction. Values stay packed in T (fewer registers,
  // more rows resident per SM) and are converted again after the reduction.
  V x[VPT], r[VPT], w[VPT];
  pdl_wait();  // inputs may come from the previous kernel
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int v = threadIdx.x + i * blockDim.x;
    if (v < num_vec) {
      load(x[i], in_row + v * VEC);
      if (res_row) load(r[i], res_row + v * VEC);
      if constexpr (!kLateWeight) w[i].load(a.weight + v * VEC);
    }
  }
  pdl_launch_dependents();
  // The value that is normalized: x, or x + residual (fp32 sum; the rounded sum when hf_exact).
  auto value = [&](int i, int j) {
    if (!res_row) return to_float(x[i].data[j]);
    const float s = to_float(x[i].data[j]) + to_float(r[i].data[j]);
    return a.hf_exact ? round_to<T>(s) : s;
  };
  // Sum of squares per vector (sequential over its VEC elements), then a pairwise sum over vector
  // indices: the per-row arithmetic does not depend on VPT or the block size (batch invariance).
  float sum_sq[VPT];
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    sum_sq[i] = 0.f;
    const int v = threadIdx.x + i * blockDim.x;
    if (v < num_vec) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float value_ij = value(i, j);
        sum_sq[i] += value_ij * value_ij;
      }
      if (res_row) {
        V sum;
#pragma unroll
        for (int j = 0; j < VEC; ++j) sum.data[j] = from_float<T>(to_float(x[i].data[j]) + to_float(r[i].data[j]));
        store(sum, res_row + v * VEC);
      }
    }
  }
  const float rstd = rsqrtf(block_pairwise_sum(sum_sq) / a.hidden + a.eps);
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int v = threadIdx.x + i * blockDim.x;
    if (v < num_vec) {
      if constexpr (kLateWeight) w[i].load(a.weight + v * VEC);
      V y;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float normed = a.hf_exact ? round_to<T>(value(i, j) * rstd) : value(i, j) * rstd;
        y.data[j] = from_float<T>(normed * to_float(w[i].data[j]));
      }
      store(y, out_row + v * VEC);
    }
  }
}

// Launch shape, from bench_kernels/tune_memory_bound.cu and bench_norm on H100 (docs/kernel_notes.md):
// - small inputs (<= 1M elements: decode, verify): one vector per thread, up to 1024 threads, for the
//   shortest critical path;
// - large inputs whose rows fit in one wave of one-vector-per-thread blocks, and the large fused op
//   whose rows (x and residual) do not fit in L2: one vector per thread, streaming row accesses, the
//   weight loaded after the reduction;
// - other large inputs (rmsnorm over more rows, a fused op that L2 holds): two vectors per thread and
//   plain accesses, so smaller blocks keep more rows resident and L2 keeps what the last kernel wrote.
// The per-row sum is the same for one or two vectors per thread when the vector count is a power of two
// (block_pairwise_sum); other widths keep one choice for every row count, so results never depend on the
// batch.
struct LaunchPlan {
  int vpt;
  bool streaming_late_weight;
};

inline LaunchPlan plan_launch(int64_t rows, int hidden, int num_vec, bool fused, bool vectorized, int num_sms,
                              int64_t row_bytes, int64_t l2_bytes) {
  int min_vpt = 1;
  while (min_vpt * kMaxThreads < num_vec) min_vpt *= 2;
  if (!vectorized || rows * hidden <= kThroughputElements) return {min_vpt, false};
  const bool pow2 = num_vec >= 64 && (num_vec & (num_vec - 1)) == 0;
  const int threads = (num_vec / min_vpt + 31) / 32 * 32;
  const int64_t rows_per_wave = int64_t{num_sms} * (2048 / threads);
  const bool fused_beyond_l2 = fused && (l2_bytes == 0 || 2 * rows * row_bytes > l2_bytes);
  if (fused_beyond_l2 || !pow2 || min_vpt > 1 || rows <= rows_per_wave) return {min_vpt, true};
  return {2, false};
}

template <typename T, int VEC, bool kStreaming = false, bool kLateWeight = false>
cudaError_t launch_rmsnorm_vec(const RMSNormArgs<T>& a, cudaStream_t stream, int vpt) {
  const int num_vec = a.hidden / VEC;
  if (vpt * VEC > 16) return cudaErrorInvalidValue;
  const int threads = ((num_vec + vpt - 1) / vpt + 31) / 32 * 32;
  const dim3 grid(a.rows), block(threads);
  // Only VPT * VEC <= 16 is ever needed (hidden <= 16384 over <= 1024 threads); nothing larger is compiled.
  cudaError_t err = cudaSuccess;
  auto launch = [&](auto vpt_constant) {
    constexpr int kVpt = decltype(vpt_constant)::value;
    if constexpr (kVpt * VEC <= 16)
      err = launch_pdl(rmsnorm_kernel<T, VEC, kVpt, kStreaming, kLateWeight>, grid, block, 0, stream, a);
  };
  switch (vpt) {
    case 1: launch(std::integral_constant<int, 1>{}); break;
    case 2: launch(std::integral_constant<int, 2>{}); break;
    case 4: launch(std::integral_constant<int, 4>{}); break;
    case 8: launch(std::integral_constant<int, 8>{}); break;
    default: launch(std::integral_constant<int, 16>{}); break;
  }
  return err;
}

// Picks 16-byte vectors when every row start is 16-byte aligned, else scalar accesses.
template <typename T>
cudaError_t launch_rmsnorm(const RMSNormArgs<T>& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  constexpr int kVec = 16 / sizeof(T);
  const bool vectorizable = a.hidden % kVec == 0 && a.out_stride % kVec == 0 && a.input_stride % kVec == 0 &&
                            (!a.residual || a.residual_stride % kVec == 0) && is_aligned(a.out, 16) &&
                            is_aligned(a.input, 16) && is_aligned(a.weight, 16) &&
                            (!a.residual || is_aligned(a.residual, 16));
  const bool fused = a.residual != nullptr;
  if (!vectorizable)
    return launch_rmsnorm_vec<T, 1>(a, stream, plan_launch(a.rows, a.hidden, a.hidden, fused, false, a.num_sms,
                                                            0, 0).vpt);
  const LaunchPlan plan = plan_launch(a.rows, a.hidden, a.hidden / kVec, fused, true, a.num_sms,
                                      int64_t{a.hidden} * sizeof(T), a.l2_bytes);
  if (plan.streaming_late_weight)
    return launch_rmsnorm_vec<T, kVec, /*kStreaming=*/true, /*kLateWeight=*/true>(a, stream, plan.vpt);
  return launch_rmsnorm_vec<T, kVec>(a, stream, plan.vpt);
}

}  // namespace ssdk::norm

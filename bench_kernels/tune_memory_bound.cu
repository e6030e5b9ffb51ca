// Launch-configuration sweep for the memory-bound kernels (RMSNorm family, silu_and_mul) against
// FlashInfer's kernels compiled from its headers in the same binary, timed the same way: a CUDA graph of
// kLaunches back-to-back launches (PDL edges where the launch allows them), hot L2, median over replays.
// Used to pick the production launch rules in include/ssdk/{norm,activation}.cuh; see docs/kernel_notes.md.
//   bash bench_kernels/tune_memory_bound.sh   (GPU machine; needs the flashinfer wheel for its headers)
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "flashinfer/activation.cuh"
#include "flashinfer/norm.cuh"
#include "ssdk/activation.cuh"
#include "ssdk/norm.cuh"
#include "tune_timing.cuh"

using bf16 = __nv_bfloat16;
constexpr int kLaunches = 20;

// Median microseconds per launch of `launch` (which enqueues one kernel on `stream`), kLaunches per graph.
float time_us(const std::function<cudaError_t(cudaStream_t)>& launch) {
  return time_us(kLaunches, [&](cudaStream_t stream, int) { return launch(stream); });
}

int num_sms() {
  int n = 0;
  CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, 0));
  return n;
}

// Values in [-2, 2).
void fill(bf16* p, size_t n) {
  fill_kernel<<<1024, 256>>>(p, n, 2.f);
  CHECK(cudaDeviceSynchronize());
}

void report(const char* op, int rows, int d, const std::string& variant, float us) {
  std::printf("%-18s T=%-5d d=%-6d %-28s %8.3f us\n", op, rows, d, variant.c_str(), us);
}

template <int VPT, bool kFused, bool kStreaming, bool kLateWeight>
void sweep_norm_ours(bf16* x, bf16* res, bf16* w, bf16* out, int rows, int hidden) {
  ssdk::norm::RMSNormArgs<bf16> a{};
  a.out = kFused ? x : out, a.input = x, a.residual = kFused ? res : nullptr, a.weight = w;
  a.out_stride = a.input_stride = a.residual_stride = hidden;
  a.rows = rows, a.hidden = hidden, a.eps = 1e-6f, a.hf_exact = false, a.num_sms = num_sms();
  const int threads = ((hidden / 8 + VPT - 1) / VPT + 31) / 32 * 32;
  if (threads > 1024) return;
  const float us = time_us([&](cudaStream_t s) {
    return ssdk::norm::launch_rmsnorm_vec<bf16, 8, kStreaming, kLateWeight>(a, s, VPT);
  });
  report(kFused ? "fused_add_rmsnorm" : "rmsnorm", rows, hidden,
         "ssdk vpt" + std::to_string(VPT) + (kStreaming ? " streaming" : "") + (kLateWeight ? " late-w" : ""), us);
}

template <bool kFused>
void sweep_norm_variants(bf16* x, bf16* res, bf16* w, bf16* out, int rows, int hidden) {
  sweep_norm_ours<1, kFused, false, false>(x, res, w, out, rows, hidden);
  sweep_norm_ours<1, kFused, true, false>(x, res, w, out, rows, hidden);
  sweep_norm_ours<1, kFused, false, true>(x, res, w, out, rows, hidden);
  sweep_norm_ours<1, kFused, true, true>(x, res, w, out, rows, hidden);
  sweep_norm_ours<2, kFused, false, false>(x, res, w, out, rows, hidden);
  sweep_norm_ours<2, kFused, true, false>(x, res, w, out, rows, hidden);
  sweep_norm_ours<2, kFused, false, true>(x, res, w, out, rows, hidden);
  sweep_norm_ours<2, kFused, true, true>(x, res, w, out, rows, hidden);
}

void sweep_norm(int rows, int hidden) {
  bf16 *x, *res, *w, *out;
  const size_t n = size_t(rows) * hidden;
  CHECK(cudaMalloc(&x, n * 2));
  CHECK(cudaMalloc(&res, n * 2));
  CHECK(cudaMalloc(&out, n * 2));
  CHECK(cudaMalloc(&w, hidden * 2));
  fill(x, n);
  fill(res, n);
  fill(w, hidden);
  ssdk::norm::RMSNormArgs<bf16> a{};
  a.out = x, a.input = x, a.residual = res, a.weight = w;
  a.out_stride = a.input_stride = a.residual_stride = hidden;
  a.rows = rows, a.hidden = hidden, a.eps = 1e-6f, a.hf_exact = false, a.num_sms = num_sms();
  report("fused_add_rmsnorm", rows, hidden, "ssdk production",
         time_us([&](cudaStream_t s) { return ssdk::norm::launch_rmsnorm(a, s); }));
  report("fused_add_rmsnorm", rows, hidden, "flashinfer", time_us([&](cudaStream_t s) {
           return flashinfer::norm::FusedAddRMSNorm(x, res, w, rows, hidden, hidden, hidden, 1e-6f, true, s);
         }));
  sweep_norm_variants<true>(x, res, w, out, rows, hidden);
  a.residual = nullptr, a.out = out;
  report("rmsnorm", rows, hidden, "ssdk production",
         time_us([&](cudaStream_t s) { return ssdk::norm::launch_rmsnorm(a, s); }));
  report("rmsnorm", rows, hidden, "flashinfer", time_us([&](cudaStream_t s) {
           return flashinfer::norm::RMSNorm(x, w, out, rows, hidden, hidden, hidden, 1e-6f, true, s);
         }));
  sweep_norm_variants<false>(x, res, w, out, rows, hidden);
  CHECK(cudaFree(x));
  CHECK(cudaFree(res));
  CHECK(cudaFree(out));
  CHECK(cudaFree(w));
}

// Experimental: one block per row looping over its 16-byte chunks (FlashInfer's mapping), fast silu.
__global__ void silu_rowloop_kernel(bf16* out, const bf16* in, int d) {
  using V = ssdk::Vec<bf16, 8>;
  const bf16* gate_row = in + size_t(blockIdx.x) * 2 * d;
  bf16* out_row = out + size_t(blockIdx.x) * d;
  ssdk::pdl_wait();
  for (int c = threadIdx.x; c < d / 8; c += blockDim.x) {
    V g, u, y;
    g.load(gate_row + c * 8);
    u.load(gate_row + d + c * 8);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      y.data[j] = __float2bfloat16_rn(ssdk::activation::silu_fast(__bfloat162float(g.data[j])) *
                                      __bfloat162float(u.data[j]));
    y.store(out_row + c * 8);
  }
  ssdk::pdl_launch_dependents();
}

// FlashInfer's silu (its JIT template defines it force-inlined; so do we).
__device__ __forceinline__ float fi_silu(const float& x) { return x / (1.0f + __expf(-x)); }

void sweep_silu(int rows, int d) {
  bf16 *in, *out;
  CHECK(cudaMalloc(&in, size_t(rows) * 2 * d * 2));
  CHECK(cudaMalloc(&out, size_t(rows) * d * 2));
  fill(in, size_t(rows) * 2 * d);
  ssdk::activation::SiluAndMulArgs<bf16> a{out, in, d, 2 * d, rows, d, false};
  report("silu_and_mul", rows, d, "ssdk production",
         time_us([&](cudaStream_t s) { return ssdk::activation::launch_silu_and_mul(a, s); }));
  const int fi_block = std::min(1024, d / 8);
  report("silu_and_mul", rows, d, "flashinfer", time_us([&](cudaStream_t s) {
           return ssdk::launch_pdl(flashinfer::activation::act_and_mul_kernel<bf16, fi_silu>, dim3(rows),
                                   dim3(fi_block), 0, s, out, static_cast<const bf16*>(in), d);
         }));
  const unsigned chunks = d / 8, total = chunks * rows;
  for (int block : {128, 256, 512}) {
    report("silu_and_mul", rows, d, "ssdk flat block" + std::to_string(block), time_us([&](cudaStream_t s) {
             return ssdk::launch_pdl(ssdk::activation::silu_and_mul_kernel<bf16, 8>, dim3((total + block - 1) / block),
                                     dim3(block), 0, s, a, chunks, total);
           }));
  }
  for (int block : {256, 512, 1024}) {
    report("silu_and_mul", rows, d, "rowloop block" + std::to_string(block), time_us([&](cudaStream_t s) {
             return ssdk::launch_pdl(silu_rowloop_kernel, dim3(rows), dim3(block), 0, s, out,
                                     static_cast<const bf16*>(in), d);
           }));
  }
  for (int block : {128, 256, 512}) {
    report("silu_and_mul", rows, d, "ssdk streaming block" + std::to_string(block), time_us([&](cudaStream_t s) {
             return ssdk::launch_pdl(ssdk::activation::silu_and_mul_kernel<bf16, 8, true>,
                                     dim3((total + block - 1) / block), dim3(block), 0, s, a, chunks, total);
           }));
  }
  CHECK(cudaFree(in));
  CHECK(cudaFree(out));
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const bool large_only = mode == "--large" || mode == "--silu";  // 256 and 4096 rows only
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  for (int rows : {1, 64, 256, 4096})
    for (int hidden : {2048, 4096, 8192})
      if ((!large_only || rows >= 256) && mode != "--silu") sweep_norm(rows, hidden);
  for (int rows : {1, 16, 64, 256, 4096})
    for (int d : {14336, 12288})
      if (!large_only || rows >= 256) sweep_silu(rows, d);
  return 0;
}

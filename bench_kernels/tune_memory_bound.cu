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

using bf16 = __nv_bfloat16;
constexpr int kLaunches = 20, kReplays = 15;

#define CHECK(call)                                                                          \
  do {                                                                                       \
    cudaError_t e_ = (call);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

// Median microseconds per launch of `launch` (which enqueues one kernel on `stream`).
float time_us(const std::function<cudaError_t(cudaStream_t)>& launch) {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int i = 0; i < 3; ++i) CHECK(launch(stream));
  CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kLaunches; ++i) CHECK(launch(stream));
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  CHECK(cudaGraphLaunch(exec, stream));
  std::vector<float> times;
  for (int r = 0; r < kReplays; ++r) {
    CHECK(cudaEventRecord(start, stream));
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms * 1000.f / kLaunches);
  }
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaStreamDestroy(stream));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void report(const char* op, int rows, int d, const std::string& variant, float us) {
  std::printf("%-18s T=%-5d d=%-6d %-28s %8.3f us\n", op, rows, d, variant.c_str(), us);
}

// Dynamic shared memory that caps the resident blocks per SM at `cap` (0: no cap).
size_t smem_for_cap(int cap) {
  if (cap == 0) return 0;
  int per_sm;
  CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0));
  return per_sm / cap - 1024 - 1024;  // 1 KB reserved per block, 1 KB slack
}

template <int VPT, bool kFused>
void sweep_norm_ours(bf16* x, bf16* res, bf16* w, int rows, int hidden) {
  ssdk::norm::RMSNormArgs<bf16> a{};
  a.out = x, a.input = x, a.residual = kFused ? res : nullptr, a.weight = w;
  a.out_stride = a.input_stride = a.residual_stride = hidden;
  a.rows = rows, a.hidden = hidden, a.eps = 1e-6f, a.hf_exact = false;
  const int num_vec = hidden / 8;
  const int threads = ((num_vec + VPT - 1) / VPT + 31) / 32 * 32;
  if (threads > 1024) return;
  auto kernel = ssdk::norm::rmsnorm_kernel<bf16, 8, VPT>;
  for (int cap : {0, 2, 3, 4, 6, 8}) {
    const size_t smem = smem_for_cap(cap);
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const float us = time_us([&](cudaStream_t s) {
      return ssdk::launch_pdl(kernel, dim3(rows), dim3(threads), smem, s, a);
    });
    report(kFused ? "fused_add_rmsnorm" : "rmsnorm", rows, hidden,
           "ssdk vpt" + std::to_string(VPT) + " cap" + std::to_string(cap), us);
  }
}

void sweep_norm(int rows, int hidden) {
  bf16 *x, *res, *w, *out;
  const size_t n = size_t(rows) * hidden;
  CHECK(cudaMalloc(&x, n * 2));
  CHECK(cudaMalloc(&res, n * 2));
  CHECK(cudaMalloc(&out, n * 2));
  CHECK(cudaMalloc(&w, hidden * 2));
  CHECK(cudaMemset(x, 0, n * 2));
  CHECK(cudaMemset(res, 0, n * 2));
  CHECK(cudaMemset(w, 0, hidden * 2));
  ssdk::norm::RMSNormArgs<bf16> a{};
  a.out = x, a.input = x, a.residual = res, a.weight = w;
  a.out_stride = a.input_stride = a.residual_stride = hidden;
  a.rows = rows, a.hidden = hidden, a.eps = 1e-6f, a.hf_exact = false;
  report("fused_add_rmsnorm", rows, hidden, "ssdk production",
         time_us([&](cudaStream_t s) { return ssdk::norm::launch_rmsnorm(a, s); }));
  report("fused_add_rmsnorm", rows, hidden, "flashinfer", time_us([&](cudaStream_t s) {
           return flashinfer::norm::FusedAddRMSNorm(x, res, w, rows, hidden, hidden, hidden, 1e-6f, true, s);
         }));
  sweep_norm_ours<1, true>(x, res, w, rows, hidden);
  sweep_norm_ours<2, true>(x, res, w, rows, hidden);
  a.residual = nullptr, a.out = out;
  report("rmsnorm", rows, hidden, "ssdk production",
         time_us([&](cudaStream_t s) { return ssdk::norm::launch_rmsnorm(a, s); }));
  report("rmsnorm", rows, hidden, "flashinfer", time_us([&](cudaStream_t s) {
           return flashinfer::norm::RMSNorm(x, w, out, rows, hidden, hidden, hidden, 1e-6f, true, s);
         }));
  sweep_norm_ours<1, false>(x, res, w, rows, hidden);
  sweep_norm_ours<2, false>(x, res, w, rows, hidden);
  CHECK(cudaFree(x));
  CHECK(cudaFree(res));
  CHECK(cudaFree(out));
  CHECK(cudaFree(w));
}

// Experimental silu_and_mul: each thread handles CPT 16-byte chunks of one row, all loads first.
template <int CPT>
__global__ void silu_rowblock_kernel(bf16* out, const bf16* in, int d) {
  using V = ssdk::Vec<bf16, 8>;
  const int row = blockIdx.y;
  const int chunks = d / 8;
  const bf16* gate_row = in + size_t(row) * 2 * d;
  bf16* out_row = out + size_t(row) * d;
  V g[CPT], u[CPT];
  ssdk::pdl_wait();
#pragma unroll
  for (int i = 0; i < CPT; ++i) {
    const int c = (blockIdx.x * CPT + i) * blockDim.x + threadIdx.x;
    if (c < chunks) {
      g[i].load(gate_row + c * 8);
      u[i].load(gate_row + d + c * 8);
    }
  }
  ssdk::pdl_launch_dependents();
#pragma unroll
  for (int i = 0; i < CPT; ++i) {
    const int c = (blockIdx.x * CPT + i) * blockDim.x + threadIdx.x;
    if (c < chunks) {
      V y;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        y.data[j] = __float2bfloat16_rn(ssdk::activation::silu(__bfloat162float(g[i].data[j])) *
                                        __bfloat162float(u[i].data[j]));
      y.store(out_row + c * 8);
    }
  }
}

// Experimental: the production flat mapping with streaming cache hints (L1 bypass, evict-first stores).
__global__ void silu_flat_hints_kernel(bf16* out, const bf16* in, int d, unsigned chunks_per_row, unsigned total) {
  const unsigned gid = blockIdx.x * blockDim.x + threadIdx.x;
  if (gid >= total) return;
  const unsigned row = gid / chunks_per_row, col = (gid - row * chunks_per_row) * 8;
  const bf16* src = in + size_t(row) * 2 * d + col;
  ssdk::pdl_wait();
  const uint4 gate_bits = __ldcs(reinterpret_cast<const uint4*>(src));
  const uint4 up_bits = __ldcs(reinterpret_cast<const uint4*>(src + d));
  ssdk::pdl_launch_dependents();
  const bf16* g = reinterpret_cast<const bf16*>(&gate_bits);
  const bf16* u = reinterpret_cast<const bf16*>(&up_bits);
  uint4 y_bits;
  bf16* y = reinterpret_cast<bf16*>(&y_bits);
#pragma unroll
  for (int j = 0; j < 8; ++j)
    y[j] = __float2bfloat16_rn(ssdk::activation::silu(__bfloat162float(g[j])) * __bfloat162float(u[j]));
  __stcs(reinterpret_cast<uint4*>(out + size_t(row) * d + col), y_bits);
}

__device__ float fi_silu(const float& x) { return x / (1.0f + __expf(-x)); }

void sweep_silu(int rows, int d) {
  bf16 *in, *out;
  CHECK(cudaMalloc(&in, size_t(rows) * 2 * d * 2));
  CHECK(cudaMalloc(&out, size_t(rows) * d * 2));
  CHECK(cudaMemset(in, 0, size_t(rows) * 2 * d * 2));
  ssdk::activation::SiluAndMulArgs<bf16> a{out, in, d, 2 * d, rows, d, false};
  report("silu_and_mul", rows, d, "ssdk production",
         time_us([&](cudaStream_t s) { return ssdk::activation::launch_silu_and_mul(a, s); }));
  const int fi_block = std::min(1024, d / 8);
  report("silu_and_mul", rows, d, "flashinfer", time_us([&](cudaStream_t s) {
           return ssdk::launch_pdl(flashinfer::activation::act_and_mul_kernel<bf16, fi_silu>, dim3(rows),
                                   dim3(fi_block), 0, s, out, static_cast<const bf16*>(in), d);
         }));
  const unsigned chunks = d / 8, total = chunks * rows;
  for (int block : {128, 256, 512, 1024}) {
    report("silu_and_mul", rows, d, "ssdk flat block" + std::to_string(block), time_us([&](cudaStream_t s) {
             return ssdk::launch_pdl(ssdk::activation::silu_and_mul_kernel<bf16, 8>, dim3((total + block - 1) / block),
                                     dim3(block), 0, s, a, chunks, total);
           }));
  }
  for (int block : {256, 1024}) {
    report("silu_and_mul", rows, d, "flat hints block" + std::to_string(block), time_us([&](cudaStream_t s) {
             return ssdk::launch_pdl(silu_flat_hints_kernel, dim3((total + block - 1) / block), dim3(block), 0, s,
                                     out, static_cast<const bf16*>(in), d, chunks, total);
           }));
  }
  auto rowblock = [&](auto cpt_constant, int block) {
    constexpr int kCpt = decltype(cpt_constant)::value;
    const dim3 grid((chunks + block * kCpt - 1) / (block * kCpt), rows);
    report("silu_and_mul", rows, d, "rowblock cpt" + std::to_string(kCpt) + " block" + std::to_string(block),
           time_us([&](cudaStream_t s) {
             return ssdk::launch_pdl(silu_rowblock_kernel<kCpt>, grid, dim3(block), 0, s, out,
                                     static_cast<const bf16*>(in), d);
           }));
  };
  for (int block : {128, 256, 512}) {
    rowblock(std::integral_constant<int, 1>{}, block);
    rowblock(std::integral_constant<int, 2>{}, block);
    rowblock(std::integral_constant<int, 4>{}, block);
  }
  CHECK(cudaFree(in));
  CHECK(cudaFree(out));
}

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  for (int rows : {256, 4096})
    for (int hidden : {2048, 4096, 8192}) sweep_norm(rows, hidden);
  for (int rows : {64, 256, 4096})
    for (int d : {14336, 12288}) sweep_silu(rows, d);
  return 0;
}

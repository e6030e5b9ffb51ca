// SwiGLU gate: out[r, i] = silu(x[r, i]) * x[r, d + i] for x = [gate | up] rows of width 2d.
// silu(g) = g / (1 + expf(-g)) in fp32 (PyTorch's formula, precise expf and division; fp16/bf16 outputs
// outside hf_exact use the hardware exp and approximate division, see silu_fast).
// hf_exact rounds silu(g) to T before the multiply (transformers' act_fn(gate) * up); otherwise one rounding.
// One thread per W-element chunk of the output (W = 16 bytes of T when rows allow it), rows strided.
#pragma once
#include "ssdk/common.cuh"

namespace ssdk::activation {

template <typename T>
struct SiluAndMulArgs {
  T* out;          // [rows, d]
  const T* input;  // [rows, 2d]
  int64_t out_stride, input_stride;
  int rows, d;
  bool hf_exact;
};

__device__ __forceinline__ float silu(float g) { return g / (1.f + expf(-g)); }
// Hardware exp and approximate division (a few fp32 ulps): for 16-bit outputs outside hf_exact, which keep
// 8 or 11 mantissa bits of it. The precise form costs ~30% at 64-256 rows, where the kernel is latency bound.
__device__ __forceinline__ float silu_fast(float g) { return __fdividef(g, 1.f + __expf(-g)); }

// kStreaming: ld/st.global.cs (data touched once).
template <typename T, int W, bool kStreaming = false>
__global__ void silu_and_mul_kernel(SiluAndMulArgs<T> a, unsigned chunks_per_row, unsigned total) {
  using V = Vec<T, W>;
  const unsigned gid = blockIdx.x * blockDim.x + threadIdx.x;
  if (gid >= total) return;
  const unsigned row = gid / chunks_per_row;
  const unsigned col = (gid - row * chunks_per_row) * W;
  const T* in = a.input + row * a.input_stride + col;
  V gate, up, y;
  pdl_wait();  // the input may come from the previous kernel
  if constexpr (kStreaming) {
    gate.load_streaming(in);
    up.load_streaming(in + a.d);
  } else {
    gate.load(in);
    up.load(in + a.d);
  }
  pdl_launch_dependents();
#pragma unroll
  for (int j = 0; j < W; ++j) {
    const float g = to_float(gate.data[j]);
    float act;
    if constexpr (sizeof(T) == 4) {
      act = silu(g);
    } else {
      act = a.hf_exact ? round_to<T>(silu(g)) : silu_fast(g);
    }
    y.data[j] = from_float<T>(act * to_float(up.data[j]));
  }
  if constexpr (kStreaming) y.store_streaming(a.out + row * a.out_stride + col);
  else y.store(a.out + row * a.out_stride + col);
}

// 16-byte chunks when d, both row strides and both pointers allow it; else one element per thread.
template <typename T>
cudaError_t launch_silu_and_mul(const SiluAndMulArgs<T>& a, cudaStream_t stream) {
  if (a.rows == 0 || a.d == 0) return cudaSuccess;
  constexpr int kVec = 16 / sizeof(T);
  const bool vectorizable = a.d % kVec == 0 && a.out_stride % kVec == 0 && a.input_stride % kVec == 0 &&
                            is_aligned(a.out, 16) && is_aligned(a.input, 16);
  const int w = vectorizable ? kVec : 1;
  const uint64_t chunks_per_row = a.d / w, total = chunks_per_row * a.rows;
  if (total >= (uint64_t{1} << 32)) return cudaErrorInvalidValue;
  // Small launches spread over more SMs; 256-thread blocks up to 1M chunks, 1024 above (H100, an
  // interleaved A/B at eb96ddb, docs/kernel_notes.md: at 256 x 14336 256 threads beat 512 by 4 %, at
  // 4096 rows 1024 beat 512 by 0.2-0.3 %).
  const int block = total <= 128 * 132 ? 128 : total <= (uint64_t{1} << 20) ? 256 : 1024;
  const unsigned grid = static_cast<unsigned>((total + block - 1) / block);
  // Programmatic dependent launch: the next kernel's launch overlaps this one's tail on sm_90.
  if (vectorizable) return launch_pdl(silu_and_mul_kernel<T, kVec>, dim3(grid), dim3(block), 0, stream, a,
                                      static_cast<unsigned>(chunks_per_row), static_cast<unsigned>(total));
  return launch_pdl(silu_and_mul_kernel<T, 1>, dim3(grid), dim3(block), 0, stream, a,
                    static_cast<unsigned>(chunks_per_row), static_cast<unsigned>(total));
}

}  // namespace ssdk::activation

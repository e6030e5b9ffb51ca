// Device helpers shared by ssdk kernels: vector loads, dtype conversion, block reductions.
// Raw pointers only; no torch headers (FlashInfer-style include/).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <utility>

namespace ssdk {

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Rounds v to T's precision and back: models "cast to the input dtype" steps of HF code.
template <typename T> __device__ __forceinline__ float round_to(float v) { return to_float<T>(from_float<T>(v)); }

// N contiguous elements of T moved as one (up to 16-byte) transaction.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T data[N];
  __device__ __forceinline__ void load(const T* ptr) { *this = *reinterpret_cast<const Vec*>(ptr); }
  __device__ __forceinline__ void store(T* ptr) const { *reinterpret_cast<Vec*>(ptr) = *this; }
  // Cache-streaming variants (ld/st.global.cs: data touched once, evicted first) for 16-byte vectors.
  __device__ __forceinline__ void load_streaming(const T* ptr) {
    if constexpr (sizeof(Vec) == 16) {
      const uint4 bits = __ldcs(reinterpret_cast<const uint4*>(ptr));
      *this = *reinterpret_cast<const Vec*>(&bits);
    } else {
      load(ptr);
    }
  }
  __device__ __forceinline__ void store_streaming(T* ptr) const {
    if constexpr (sizeof(Vec) == 16) {
      __stcs(reinterpret_cast<uint4*>(ptr), *reinterpret_cast<const uint4*>(this));
    } else {
      store(ptr);
    }
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Pairwise (binary-tree) sum over the block of K values per thread, where thread t's value i stands
// for index v = t + i * blockDim.x; every thread gets the result. Index bits are combined from the
// lowest up (butterflies with ascending offsets, then the K values), and missing indices add exact
// zeros, so for a power-of-two count of indices the result is bitwise the same whichever blockDim.x
// and K split them. blockDim.x must be a multiple of 32; K a power of two <= 16.
template <int K>
__device__ __forceinline__ float block_pairwise_sum(float (&values)[K]) {
  static_assert(K >= 1 && K <= 16 && (K & (K - 1)) == 0, "K must be a power of two <= 16");
  __shared__ float partial[K][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, num_warps = blockDim.x >> 5;
  float v[K];
#pragma unroll
  for (int i = 0; i < K; ++i) {
    v[i] = values[i];
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) v[i] += __shfl_xor_sync(0xffffffffu, v[i], offset);
  }
  if (num_warps > 1) {
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < K; ++i) partial[i][warp] = v[i];
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < K; ++i) {
      v[i] = lane < num_warps ? partial[i][lane] : 0.f;
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) v[i] += __shfl_xor_sync(0xffffffffu, v[i], offset);
    }
  }
#pragma unroll
  for (int stride = 1; stride < K; stride <<= 1) {
#pragma unroll
    for (int i = 0; i + stride < K; i += 2 * stride) v[i] += v[i + stride];
  }
  return v[0];
}

// Programmatic dependent launch (sm_90+): a kernel launched with launch_pdl() may start while the
// previous kernel in the stream drains; it must call pdl_wait() before touching memory that kernel
// wrote, and calls pdl_launch_dependents() once the next kernel may begin its own launch.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization
// allowed (ignored by GPUs older than sm_90, where the launch is ordinary).
template <typename... KernelArgs, typename... Args>
cudaError_t launch_pdl(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

// Kernel function attributes (dynamic shared memory, carveout, cluster opt-ins) are per device: runs
// set_attributes (a callable returning cudaError_t) once per device for the caller's kernel, `done` being the
// caller's own static flags; a device index past the table repeats it every call.
constexpr int kMaxDevices = 64;
template <typename SetAttributes>
cudaError_t once_per_device(bool (&done)[kMaxDevices], SetAttributes&& set_attributes) {
  int device = 0;
  if (const cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) return err;
  const bool tracked = device >= 0 && device < kMaxDevices;
  if (tracked && done[device]) return cudaSuccess;
  const cudaError_t err = set_attributes();
  if (err == cudaSuccess && tracked) done[device] = true;
  return err;
}

__host__ __device__ inline bool is_aligned(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

}  // namespace ssdk

// Skinny linear (GEMV-style): out[m, n] = sum_k x[m, k] * weight[n, k] (+ bias[n]) for M <= kMaxRows rows
// of x, the decode-time shape where the weight read is the whole cost (N*K*sizeof(T) bytes, read once).
// T in {__half, __nv_bfloat16}; fp32 accumulation, one rounding to T at the end (bias added in fp32).
//
// Mapping: S warps of a block own R consecutive weight rows (a "group"), each warp one contiguous slice of
// K (S = 1: the whole row); lane l reads the W-element chunks l, l + 32, ... of its slice of each row (512
// contiguous bytes per warp load when W*sizeof(T) = 16), U chunks per row in flight, R*U independent
// 16-byte loads per lane. S > 1 (few rows, e.g. o_proj's 4096) puts more warps on the weight; the S
// partial sums of a group meet in shared memory and are added in slice order. The MT (>= M, padded) rows of x are
// read through L1 (every warp of the SM reads the same columns at about the same time; the weight loads
// bypass L1), each x vector is reused for the R weight rows. Per-lane fp32 partials, warp-shuffle sums,
// one store per output; no second kernel. The grid is persistent: at most one wave of blocks
// (occupancy x SMs), warps striding over the groups.
// SwiGLU epilogue (kSwiGlu, linear_silu_mul): the weight is [gate | up], 2n rows for n outputs; a group's R
// rows are R/2 gate rows j and the R/2 up rows n + j, and out[m, j] = silu(gate) * up with gate and up first
// rounded to T (what linear writes) and the activation of activation::silu_and_mul_kernel, so the result is
// bit for bit linear -> silu_and_mul whenever the split S is the unfused [2n, K] linear's (launch_swiglu).
// PDL: each warp prefetches the start of its first group into L2 before griddepcontrol.wait (the weight is
// a layer's, not the previous kernel's output; and a prefetch only warms the coherent L2, it returns no
// data); x is read, and out written, only after the wait.
#pragma once
#include <algorithm>

#include "ssdk/activation.cuh"
#include "ssdk/common.cuh"

namespace ssdk::gemv {

// Rows of x the kernel serves; more go to cuBLAS (csrc/linear.cu). At 8 rows the FMAs and the x traffic
// through L1 made it ~30 % slower than cuBLAS on the Llama-3.1-8B shapes (H100 sweep).
constexpr int kMaxRows = 4;
constexpr int kThreads = 256;  // per block
constexpr int kWarps = kThreads / 32;
// Warps per SM the split of K aims for (S doubles up to kMaxSplit while rows/4 * S stay below it); chosen
// from N and the SM count only, so every M sums a row in the same order.
constexpr int kSplitTargetWarpsPerSm = 24, kMaxSplit = 4;

template <typename T>
struct LinearArgs {
  T* out;            // [m, n], row stride out_stride
  const T* x;        // [m, k], row stride x_stride
  const T* weight;   // [n, k] (SwiGLU: [2n, k], gate rows then up rows), row stride weight_stride
  const T* bias;     // [n] or nullptr (always nullptr for SwiGLU)
  int64_t out_stride, x_stride, weight_stride;
  int m, n, k;
  int num_sms;       // of the device, for the grid size
  bool hf_exact;     // SwiGLU only: activation::silu_and_mul's hf_exact
};

// 16-byte weight load that skips L1 (each byte is used once; L1 is kept for x).
template <typename V>
__device__ __forceinline__ V load_weight(const void* ptr) {
  if constexpr (sizeof(V) == 16) {
    uint4 bits;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(bits.x), "=r"(bits.y), "=r"(bits.z), "=r"(bits.w)
        : "l"(ptr));
    return *reinterpret_cast<const V*>(&bits);
  } else {
    return *reinterpret_cast<const V*>(ptr);
  }
}

__device__ __forceinline__ void prefetch_l2(const void* ptr) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(ptr));
}

// acc[m][r] += dot(x[m, chunk c + 32u], weight[row r, chunk c + 32u]) for u < UU; chunk = W elements.
template <typename T, int MT, int R, int UU, int W>
__device__ __forceinline__ void accumulate(float (&acc)[MT][R], const T* (&w_rows)[R], const T* (&x_rows)[MT], int c) {
  using V = Vec<T, W>;
  V w[R][UU];
#pragma unroll
  for (int u = 0; u < UU; ++u)
#pragma unroll
    for (int r = 0; r < R; ++r) w[r][u] = load_weight<V>(w_rows[r] + (c + 32 * u) * W);
#pragma unroll
  for (int u = 0; u < UU; ++u) {
    float wf[R][W];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int j = 0; j < W; ++j) wf[r][j] = to_float(w[r][u].data[j]);
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      V xv;
      xv.load(x_rows[m] + (c + 32 * u) * W);
#pragma unroll
      for (int j = 0; j < W; ++j) {
        const float xf = to_float(xv.data[j]);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[m][r] = fmaf(wf[r][j], xf, acc[m][r]);
      }
    }
  }
}

// Weight row of a group's row r: R outputs g * R + r, or (SwiGLU) R/2 outputs j = g * R/2 + r % (R/2),
// gate row j for r < R/2 and up row n + j above. Rows past the last output repeat it (computed, not stored).
template <int R, bool kSwiGlu>
__device__ __forceinline__ int64_t weight_row(int g, int r, int n) {
  constexpr int kOut = kSwiGlu ? R / 2 : R;
  const int j = min(g * kOut + r % kOut, n - 1);
  return kSwiGlu && r >= kOut ? int64_t{n} + j : int64_t{j};
}

// MT: rows of x computed (>= a.m; the rows past a.m repeat the last row and are not stored).
// R: weight rows per group. U: chunks per row and lane in flight. W: elements per chunk (16 bytes, or 1
// when K, a row stride or a pointer is not 16-byte aligned). S: warps (K slices) per group.
// kSwiGlu: the SwiGLU epilogue (see the top of the file); a group then makes R/2 outputs.
template <typename T, int MT, int R, int U, int W, int S, bool kSwiGlu>
__global__ void __launch_bounds__(kThreads) skinny_linear_kernel(LinearArgs<T> a) {
  static_assert(kWarps % S == 0 && MT * R <= 32, "S must divide the block's warps; MT * R <= 32 lanes");
  static_assert(!kSwiGlu || R % 2 == 0, "SwiGLU pairs R/2 gate rows with R/2 up rows");
  constexpr int kGroupsPerBlock = kWarps / S;
  constexpr int kOut = kSwiGlu ? R / 2 : R;  // outputs per group and row of x
  __shared__ float partial[S > 1 ? kWarps : 1][MT * R];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int slice = warp % S, local_group = warp / S;
  const int groups = (a.n + kOut - 1) / kOut;
  const int chunks = a.k / W;
  // This warp's slice of K, in chunks: whole multiples of 32 chunks (one warp load) but the last.
  const int slice_chunks = (chunks + 32 * S - 1) / (32 * S) * 32;
  const int begin = min(slice * slice_chunks, chunks), end = min(begin + slice_chunks, chunks);
  const int group_stride = gridDim.x * kGroupsPerBlock;

  const int first_group = blockIdx.x * kGroupsPerBlock + local_group;
  if (first_group < groups) {  // the first two steps of the first group, into L2, before the wait
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const T* row = a.weight + weight_row<R, kSwiGlu>(first_group, r, a.n) * a.weight_stride;
#pragma unroll
      for (int u = 0; u < 2 * U; ++u)
        if (begin + lane + 32 * u < end) prefetch_l2(row + (begin + lane + 32 * u) * W);
    }
  }
  pdl_wait();  // x may come from the previous kernel, which may also still read out
  pdl_launch_dependents();  // the grid is one wave: nothing of ours waits for the SMs the next kernel takes

  const T* x_rows[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) x_rows[m] = a.x + min(m, a.m - 1) * a.x_stride;

  // Every warp of the block makes the same number of trips (the block synchronizes when S > 1).
  for (int base = blockIdx.x * kGroupsPerBlock; base < groups; base += group_stride) {
    const int g = base + local_group;
    float acc[MT][R];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) acc[m][r] = 0.f;
    if (g < groups) {
      const T* w_rows[R];
#pragma unroll
      for (int r = 0; r < R; ++r)
        w_rows[r] = a.weight + weight_row<R, kSwiGlu>(g, r, a.n) * a.weight_stride;
      int c = begin + lane;
      for (; c + 32 * (U - 1) < end; c += 32 * U) accumulate<T, MT, R, U, W>(acc, w_rows, x_rows, c);
      for (; c < end; c += 32) accumulate<T, MT, R, 1, W>(acc, w_rows, x_rows, c);
    }
    // Every lane gets every warp sum; lane m * R + r keeps output (m, row r).
    float mine = 0.f;
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float v = warp_sum(acc[m][r]);
        if (lane == m * R + r) mine = v;
      }
    if constexpr (S > 1) {
      if (lane < MT * R) partial[warp][lane] = mine;
      __syncthreads();
      if (slice == 0 && lane < MT * R) {
        mine = partial[warp][lane];
#pragma unroll
        for (int s = 1; s < S; ++s) mine += partial[warp + s][lane];
      }
      __syncthreads();  // partial is rewritten on the next trip
    }
    const int m = lane / R, r = lane % R, col = g * kOut + r;
    if constexpr (kSwiGlu) {  // lane m * R + r (r < R/2) holds gate (m, col), lane m * R + R/2 + r its up
      const float up = round_to<T>(__shfl_down_sync(0xffffffffu, mine, kOut));
      if (slice == 0 && g < groups && lane < MT * R && r < kOut && m < a.m && col < a.n) {
        const float gate = round_to<T>(mine);
        const float act = a.hf_exact ? round_to<T>(activation::silu(gate)) : activation::silu_fast(gate);
        a.out[m * a.out_stride + col] = from_float<T>(act * up);
      }
    } else if (slice == 0 && g < groups && lane < MT * R && m < a.m && col < a.n) {
      if (a.bias) mine += to_float(a.bias[col]);
      a.out[m * a.out_stride + col] = from_float<T>(mine);
    }
  }
}

// Blocks of one kernel instantiation resident per SM (queried once per instantiation).
template <typename T, int MT, int R, int U, int W, int S, bool kSwiGlu>
int blocks_per_sm() {
  static const int blocks = [] {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, skinny_linear_kernel<T, MT, R, U, W, S, kSwiGlu>,
                                                      kThreads, 0) != cudaSuccess)
      n = 1;
    return std::max(n, 1);
  }();
  return blocks;
}

// Blocks of work (S-warp row groups, kWarps / S per block) of a launch.
template <int R, int S, bool kSwiGlu>
int64_t block_tasks(const int n) {
  constexpr int kOut = kSwiGlu ? R / 2 : R;
  const int64_t groups = (n + kOut - 1) / kOut;
  return (groups + kWarps / S - 1) / (kWarps / S);
}

template <typename T, int MT, int R, int U, int W, int S, bool kSwiGlu>
cudaError_t launch_split(const LinearArgs<T>& a, cudaStream_t stream) {
  const int64_t resident = int64_t{a.num_sms} * blocks_per_sm<T, MT, R, U, W, S, kSwiGlu>();
  const int grid = static_cast<int>(std::min(block_tasks<R, S, kSwiGlu>(a.n), resident));
  return launch_pdl(skinny_linear_kernel<T, MT, R, U, W, S, kSwiGlu>, dim3(grid), dim3(kThreads), 0, stream, a);
}

// K slices per group for a weight of `rows` rows, from the rows and the SM count only (never M): see
// kSplitTargetWarpsPerSm. (A rule keeping the M = 1 grid within one wave, qkv S = 4 -> 2 on H100, measured
// worse at 2cefa07: qkv M = 1 20.42 -> 19.98 µs, M = 2 18.00 -> 21.55, M = 4 19.74 -> 22.65.)
inline int split_for(int64_t rows, int num_sms) {
  int split = 1;
  while (split < kMaxSplit && (rows + 3) / 4 * split < int64_t{kSplitTargetWarpsPerSm} * num_sms) split *= 2;
  return split;
}

// Share of the block slots that hold work over the trips of the persistent grid: tasks / (trips x resident).
// A last trip on few blocks leaves HBM bandwidth unused (the weight stream is the whole cost).
template <typename T, int MT, int R, int U, int W, bool kSwiGlu>
double wave_fill(const LinearArgs<T>& a, int split) {
  int64_t tasks, resident = a.num_sms;
  switch (split) {
    case 1: tasks = block_tasks<R, 1, kSwiGlu>(a.n), resident *= blocks_per_sm<T, MT, R, U, W, 1, kSwiGlu>(); break;
    case 2: tasks = block_tasks<R, 2, kSwiGlu>(a.n), resident *= blocks_per_sm<T, MT, R, U, W, 2, kSwiGlu>(); break;
    default: tasks = block_tasks<R, 4, kSwiGlu>(a.n), resident *= blocks_per_sm<T, MT, R, U, W, 4, kSwiGlu>();
  }
  const int64_t trips = (tasks + resident - 1) / resident;
  return static_cast<double>(tasks) / static_cast<double>(trips * resident);
}

// SwiGLU splits like the unfused linear of its [2n, K] weight, so the sums (and the bits) are the same.
template <bool kSwiGlu, typename T>
int split_of(const LinearArgs<T>& a) {
  return split_for(kSwiGlu ? 2 * int64_t{a.n} : a.n, a.num_sms);
}

template <typename T, int MT, int R, int U, int W, bool kSwiGlu>
cudaError_t launch_config(const LinearArgs<T>& a, cudaStream_t stream) {
  switch (split_of<kSwiGlu>(a)) {
    case 1: return launch_split<T, MT, R, U, W, 1, kSwiGlu>(a, stream);
    case 2: return launch_split<T, MT, R, U, W, 2, kSwiGlu>(a, stream);
    default: return launch_split<T, MT, R, U, W, 4, kSwiGlu>(a, stream);
  }
}

// (R, U) per padded row count MT, from the H100 sweep (bench_kernels/tune_linear.cu, cold weights; see
// docs/kernel_notes.md "Skinny linear"). Eight loads of 16 bytes in flight per lane in every case.
// SwiGLU keeps (R, U): a group's R rows are then R/2 gate and R/2 up rows.
template <typename T, int MT, int W, bool kSwiGlu>
cudaError_t launch_rows(const LinearArgs<T>& a, cudaStream_t stream) {
  if constexpr (MT == 1) {
    if (a.k >= 8192) return launch_config<T, MT, 2, 4, W, kSwiGlu>(a, stream);  // long rows: 2x the warps
    return launch_config<T, MT, 4, 2, W, kSwiGlu>(a, stream);
  } else if constexpr (MT == 2) {
    return launch_config<T, MT, 2, 4, W, kSwiGlu>(a, stream);
  } else {
    return launch_config<T, MT, 4, 2, W, kSwiGlu>(a, stream);
  }
}

// One row of x runs the two-row kernel (its second row repeats the first and is not stored; a row's sum does
// not depend on the rows beside it, so the bits are the same) when that fills the block slots of its trips
// clearly better than the one-row kernel with launch_rows' (R, U). On H100 this picks the shapes whose M = 2
// time beat M = 1 in every run: Llama / Qwen3 down (fill 0.78 -> 0.97; 43.3 -> 39.8 and 37.6 -> 34.3 µs at
// d2470e0), qkv 6144 x 4096 (0.73 -> 0.97; M = 2 18.0 vs M = 1 20.4 µs at d15a816) and Qwen3 gate_up (0.73
// -> 0.97; 67.1 vs 70.2), and keeps o, Llama gate_up and the LM heads (equal fill; M = 1 as fast or faster).
template <typename T, int W, bool kSwiGlu>
bool two_rows_fill_better(const LinearArgs<T>& a) {
  const int split = split_of<kSwiGlu>(a);
  const double one_row = a.k >= 8192 ? wave_fill<T, 1, 2, 4, W, kSwiGlu>(a, split)
                                     : wave_fill<T, 1, 4, 2, W, kSwiGlu>(a, split);
  return wave_fill<T, 2, 2, 4, W, kSwiGlu>(a, split) > one_row + 0.1;
}

template <typename T, int W, bool kSwiGlu>
cudaError_t launch_width(const LinearArgs<T>& a, cudaStream_t stream) {
  // The scalar path (W = 1: odd K or unaligned rows) keeps the one-row kernel: not measured.
  if (a.m <= 1 && (W == 1 || !two_rows_fill_better<T, W, kSwiGlu>(a)))
    return launch_rows<T, 1, W, kSwiGlu>(a, stream);
  if (a.m <= 2) return launch_rows<T, 2, W, kSwiGlu>(a, stream);
  return launch_rows<T, 4, W, kSwiGlu>(a, stream);
}

// Requires 1 <= a.m <= kMaxRows, a.n >= 1, a.k >= 1. kSwiGlu: a.n outputs from 2 * a.n weight rows, no bias.
// The chunk width W follows from K, the strides and the pointers alike for both, so a row of linear and of
// its SwiGLU form sum in the same order.
template <typename T, bool kSwiGlu = false>
cudaError_t launch_skinny_linear(const LinearArgs<T>& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vectorizable = a.k % kVec == 0 && a.x_stride % kVec == 0 && a.weight_stride % kVec == 0 &&
                            is_aligned(a.x, 16) && is_aligned(a.weight, 16);
  if (vectorizable) return launch_width<T, kVec, kSwiGlu>(a, stream);
  return launch_width<T, 1, kSwiGlu>(a, stream);
}

}  // namespace ssdk::gemv

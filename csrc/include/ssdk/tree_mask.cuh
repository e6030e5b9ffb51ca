// Draft-tree description for a batch of trees: depth, positions, the compact ancestor bitmask and
// FlashInfer's packed custom mask (see ssdk.ops.tree.build_tree_mask for the exact layout).
//
// Grid (chunks, B), one kernel, no host sync. CTA x of request b owns node slice x of ceil(n / chunks)
// nodes (depth, positions, compact rows) and the x-th contiguous range of the packed segment's 16-byte
// vectors. It loads the request's parents into shared memory and builds the ancestor rows of the nodes it
// needs (its slice and the packed rows its range covers), transposed (word w of node i at anc[w * Np + i],
// so the threads' read-modify-writes hit distinct banks): one thread walks one node's parent chain. Each
// vector is assembled from funnel-shifted ancestor words (all ones inside the prefix) and stored with one
// 16-byte store (byte stores only where a vector straddles the segment's ends). Segment offsets are the byte sizes of the
// earlier requests, summed by each CTA. Launched as a programmatic dependent (waits before any access).
#pragma once
#include "ssdk/common.cuh"

namespace ssdk::tree {

constexpr int kMaxMaskWords = 32;  // 1024 nodes per request
constexpr int kThreads = 256;

struct TreeMaskArgs {
  const int32_t* parents;      // [N_total]
  const int32_t* qo_indptr;    // [B+1]
  const int32_t* prefix_lens;  // [B]
  void* positions;             // [N_total] int32 or int64
  bool positions_int64;
  int32_t* depth;              // [N_total]
  uint32_t* tree_mask;         // [N_total, W]
  uint8_t* packed;             // nullptr: no packed mask
  int32_t* mask_indptr;        // [B+1] (with packed)
  int batch, words, packed_rows;
};

// Byte size of request b's packed segment: r_b rows x (prefix_b + n_b) columns, rounded up to bytes.
__device__ __forceinline__ int64_t segment_bytes(const TreeMaskArgs& a, int b) {
  const int n = a.qo_indptr[b + 1] - a.qo_indptr[b];
  const int rows = a.packed_rows > 0 ? min(a.packed_rows, n) : n;
  return (static_cast<int64_t>(rows) * (a.prefix_lens[b] + n) + 7) / 8;
}

// The packed segment of one request, seen as a bit stream of rows x cols bits.
struct Segment {
  const uint32_t* anc;  // transposed ancestor table [W][Np]
  int Np, W, n;         // table stride, words, nodes in the table
  int prefix, first_row;
  int64_t rows, cols;

  __device__ __forceinline__ uint32_t anc_word(int node, int w) const {
    return node < n && w < W ? anc[w * Np + node] : 0u;
  }

  // Bits of columns [c, c + len) of packed row r (node first_row + r), len in [1, 32], bit 0 = column c.
  template <typename I>
  __device__ __forceinline__ uint32_t row_bits(I r, I c, int len) const {
    const uint32_t mask = len == 32 ? 0xffffffffu : (1u << len) - 1u;
    const I j0 = c - prefix;  // first tree column (negative: inside the prefix)
    if (j0 + len <= 0) return mask;
    const int node = first_row + static_cast<int>(r);
    uint32_t bits;
    if (j0 >= 0) {
      const int w = static_cast<int>(j0 >> 5);
      bits = __funnelshift_r(anc_word(node, w), anc_word(node, w + 1), static_cast<uint32_t>(j0 & 31));
    } else {
      const int s = static_cast<int>(-j0);  // 1..31 prefix columns first
      bits = (anc_word(node, 0) << s) | ((1u << s) - 1u);
    }
    return bits & mask;
  }

  // Bits [k, k + 32) of the stream, (r, c) = the row and column of bit k; for cols >= 32 (at most two rows).
  template <typename I>
  __device__ __forceinline__ uint32_t word_at(I r, I c) const {
    if (r >= static_cast<I>(rows)) return 0u;
    const int len = static_cast<int>(min(static_cast<I>(32), static_cast<I>(cols) - c));
    uint32_t bits = row_bits<I>(r, c, len);
    if (len < 32 && r + 1 < static_cast<I>(rows)) bits |= row_bits<I>(r + 1, I{0}, 32 - len) << len;
    return bits;
  }

  // 128 bits of the stream starting at bit k0 (may be negative: those bits are 0, as are bits past the
  // end). I = int when rows * cols < 2^31 (32-bit division and arithmetic), else int64_t. Rows of >= 32
  // columns take four independent 32-bit words (one division per vector, the same few steps in every
  // lane); narrower rows walk the stream piece by piece.
  template <typename I>
  __device__ __forceinline__ uint4 bits128(int64_t k0) const {
    const I C = static_cast<I>(cols);
    if (C < 32) return bits128_narrow<I>(k0);
    if (k0 >= 0) {
      I r = static_cast<I>(k0) / C, c = static_cast<I>(k0) - r * C;
      if (r < static_cast<I>(rows) && c + 128 <= prefix) return make_uint4(~0u, ~0u, ~0u, ~0u);  // one row's prefix
      uint32_t o[4];
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        o[t] = word_at<I>(r, c);
        c += 32;  // C >= 32: at most one row boundary per word
        if (c >= C) {
          c -= C;
          ++r;
        }
      }
      return make_uint4(o[0], o[1], o[2], o[3]);
    }
    // The segment's first vector when it starts mid-vector: word t covers bits [k0 + 32t, k0 + 32t + 32).
    uint32_t o[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int64_t ws = k0 + 32 * t;
      const I s = static_cast<I>(ws > 0 ? ws : 0);
      const I r = s / C;
      const uint32_t w = ws <= -32 ? 0u : word_at<I>(r, s - r * C);
      o[t] = ws >= 0 ? w : ws <= -32 ? 0u : w << static_cast<int>(-ws);
    }
    return make_uint4(o[0], o[1], o[2], o[3]);
  }

  // bits128 for rows of fewer than 32 columns: piece by piece (a word may span many rows).
  template <typename I>
  __device__ __forceinline__ uint4 bits128_narrow(int64_t k0) const {
    uint32_t o0 = 0u, o1 = 0u, o2 = 0u, o3 = 0u;  // named, not an array: stays in registers
    const I k = static_cast<I>(k0 > 0 ? k0 : 0);
    const I R = static_cast<I>(rows), C = static_cast<I>(cols);
    int pos = static_cast<int>(k - k0);
    I r = k / C, c = k - r * C;
    while (pos < 128 && r < R) {
      const int off = pos & 31;
      const int len = static_cast<int>(min(static_cast<I>(32 - off), C - c));
      const uint32_t v = row_bits<I>(r, c, len) << off;
      const int t = pos >> 5;
      o0 |= t == 0 ? v : 0u;
      o1 |= t == 1 ? v : 0u;
      o2 |= t == 2 ? v : 0u;
      o3 |= t == 3 ? v : 0u;
      pos += len;
      c += len;
      if (c == C) {
        c = 0;
        ++r;
      }
    }
    return make_uint4(o0, o1, o2, o3);
  }
};

__global__ void __launch_bounds__(kThreads) tree_mask_kernel(TreeMaskArgs a) {
  extern __shared__ uint32_t smem[];  // [Np] parents, then [W][Np] ancestor table (transposed)
  __shared__ long long partial[kThreads / 32];
  pdl_wait();
  pdl_launch_dependents();
  const int b = blockIdx.y, chunks = gridDim.x, x = blockIdx.x;
  const int W = a.words, Np = 32 * W;
  const int start = a.qo_indptr[b];
  const int n_all = a.qo_indptr[b + 1] - start;
  const int n = min(n_all, Np);  // nodes past 32 * W have no ancestor bits (documented limit)
  const int prefix = a.prefix_lens[b];
  int* par = reinterpret_cast<int*>(smem);
  uint32_t* anc = smem + Np;

  // Offset of this request's segment: the earlier segments' sizes (block reduction).
  long long before = 0;
  if (a.packed != nullptr)
    for (int r = threadIdx.x; r < b; r += blockDim.x) before += segment_bytes(a, r);
  for (int i = threadIdx.x; i < n; i += blockDim.x) par[i] = a.parents[start + i];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) before += __shfl_xor_sync(0xffffffffu, before, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = before;
  __syncthreads();
  int64_t offset = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) offset += partial[w];

  // This CTA's work: node slice [node_lo, node_hi) (depth, positions, compact rows) and a contiguous
  // range of the packed segment's 16-byte vectors, which covers packed rows [row_lo, row_hi).
  const int per = (n + chunks - 1) / chunks;
  const int node_lo = min(n, x * per), node_hi = min(n, node_lo + per);
  Segment seg{anc, Np, W, n, prefix, 0, 0, 0};
  const int64_t bytes = a.packed != nullptr ? segment_bytes(a, b) : 0;
  seg.rows = a.packed_rows > 0 ? min(a.packed_rows, n_all) : n_all;
  seg.first_row = n_all - static_cast<int>(seg.rows);  // packed rows are the request's last `rows` nodes
  seg.cols = static_cast<int64_t>(prefix) + n_all;
  uint8_t* out = a.packed != nullptr ? a.packed + offset : nullptr;
  const uintptr_t base = reinterpret_cast<uintptr_t>(out) & ~static_cast<uintptr_t>(15);
  const int64_t head = static_cast<int64_t>(reinterpret_cast<uintptr_t>(out) - base);  // 0..15
  const int64_t num_vec = bytes > 0 ? (head + bytes + 15) / 16 : 0;
  const int64_t per_vec = (num_vec + chunks - 1) / chunks;
  const int64_t vec_lo = min(num_vec, x * per_vec), vec_hi = min(num_vec, vec_lo + per_vec);
  int row_lo = 0, row_hi = 0;  // nodes first_row + [row_lo, row_hi) (clamped to the table)
  if (vec_lo < vec_hi) {
    const int64_t bit_lo = max(int64_t{0}, vec_lo * 16 - head) * 8, bit_hi = min(bytes, vec_hi * 16 - head) * 8;
    row_lo = min(n, seg.first_row + static_cast<int>(bit_lo / seg.cols));
    row_hi = min(n, seg.first_row + static_cast<int>(min(seg.rows, (bit_hi - 1) / seg.cols + 1)));
  }

  // One thread per needed node (the slice, then the packed rows outside it): walk to the root, setting one
  // bit per ancestor in the node's own column. A parent that is not a smaller local index ends the walk.
  const int slice = node_hi - node_lo;
  for (int t = threadIdx.x; t < slice + (row_hi - row_lo); t += blockDim.x) {
    const int i = t < slice ? node_lo + t : row_lo + (t - slice);
    if (t >= slice && i >= node_lo && i < node_hi) continue;  // already walked as part of the slice
    for (int w = 0; w < W; ++w) anc[w * Np + i] = 0u;
    int d = -1;
    for (int j = i; j >= 0;) {
      anc[(j >> 5) * Np + i] |= 1u << (j & 31);
      ++d;
      const int p = par[j];
      j = p < j ? p : -1;
    }
    if (t < slice) {
      a.depth[start + i] = d;
      if (a.positions_int64)
        static_cast<int64_t*>(a.positions)[start + i] = static_cast<int64_t>(prefix) + d;
      else
        static_cast<int32_t*>(a.positions)[start + i] = prefix + d;
    }
  }
  __syncthreads();
  for (int k = node_lo * W + threadIdx.x; k < node_hi * W; k += blockDim.x) {  // compact rows, coalesced
    const int i = k / W, w = k - i * W;
    a.tree_mask[static_cast<int64_t>(start) * W + k] = anc[w * Np + i];
  }
  if (a.packed == nullptr) return;
  if (x == 0 && threadIdx.x == 0) {
    a.mask_indptr[b + 1] = static_cast<int32_t>(offset + bytes);
    if (b == 0) a.mask_indptr[0] = 0;
  }
  const bool small = seg.rows * seg.cols < (int64_t{1} << 31);  // 32-bit positions suffice
  for (int64_t q = vec_lo + threadIdx.x; q < vec_hi; q += blockDim.x) {
    const int64_t rel = q * 16 - head;  // segment byte of the vector's first byte
    const uint4 v = small ? seg.bits128<int>(rel * 8) : seg.bits128<int64_t>(rel * 8);
    if (rel >= 0 && rel + 16 <= bytes) {
      *reinterpret_cast<uint4*>(out + rel) = v;
    } else {
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        const uint32_t word = e < 4 ? v.x : e < 8 ? v.y : e < 12 ? v.z : v.w;
        if (rel + e >= 0 && rel + e < bytes) out[rel + e] = static_cast<uint8_t>(word >> (8 * (e & 3)));
      }
    }
  }
}

inline size_t tree_mask_smem_bytes(int words) {
  return static_cast<size_t>(32 * words) * (1 + words) * sizeof(uint32_t);
}

// chunks: CTAs per request (the launcher sizes it from the packed buffer's capacity per request).
inline cudaError_t launch_tree_mask(const TreeMaskArgs& a, int chunks, cudaStream_t stream) {
  if (a.batch == 0) {
    if (a.packed) return cudaMemsetAsync(a.mask_indptr, 0, sizeof(int32_t), stream);
    return cudaSuccess;
  }
  const size_t smem = tree_mask_smem_bytes(a.words);
  if (smem > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(tree_mask_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  return launch_pdl(tree_mask_kernel, dim3(chunks, a.batch), dim3(kThreads), smem, stream, a);
}

}  // namespace ssdk::tree

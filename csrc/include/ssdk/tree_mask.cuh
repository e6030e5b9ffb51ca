// Draft-tree description for a batch of trees: depth, positions, the compact ancestor bitmask and
// FlashInfer's packed custom mask (see ssdk.ops.tree.build_tree_mask for the exact layout).
//
// Grid (chunks, B), one kernel, no host sync. CTA x of request b owns node slice x of ceil(n / chunks)
// nodes (depth, positions, compact rows) and the x-th contiguous range of the packed segment's 16-byte
// vectors. Two round trips: the request bounds with the earlier segments' sizes (this segment's offset),
// then the parents into shared memory; while those are in flight the CTA stores its all-ones vectors (inside
// one row's prefix: no ancestor bits needed). It then builds the ancestor rows of the nodes it needs (its
// slice and the packed rows its range covers), transposed (word w of node i at anc[w * Np + i], so the
// threads' read-modify-writes hit distinct banks): one thread walks one node's parent chain. The remaining
// vectors are compacted and assembled from funnel-shifted ancestor words as 32-bit words, four threads per
// vector (byte stores only where a word straddles the segment's ends). Launched as a programmatic dependent
// (waits before any access).
#pragma once
#include <algorithm>

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

// n / d for 0 <= n < 2^31 by a multiply-high and a shift (Granlund-Montgomery), d in [1, 2^31) fixed per
// CTA: the runtime 32-bit division is a ~25-instruction dependent chain, on the critical path here.
struct FastDiv {
  uint32_t mul = 1, shift = 0;
  FastDiv() = default;
  __device__ explicit FastDiv(uint32_t d) {
    shift = 32 - __clz(d - 1);  // ceil(log2 d)
    mul = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ int operator()(int n) const {
    return static_cast<int>((__umulhi(static_cast<uint32_t>(n), mul) + static_cast<uint32_t>(n)) >> shift);
  }
};

// The packed segment of one request, seen as a bit stream of rows x cols bits.
struct Segment {
  const uint32_t* anc;  // transposed ancestor table [W][Np]
  int Np, W, n;         // table stride, words, nodes in the table
  int prefix, first_row;
  int64_t rows, cols;
  FastDiv by_cols;  // set when rows * cols < 2^31 (the 32-bit path)

  template <typename I>
  __device__ __forceinline__ I row_of(I k) const {
    if constexpr (sizeof(I) == 4) return by_cols(k);
    else return k / static_cast<I>(cols);
  }

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

  // Bits [k, k + 32) of the stream for k >= 0 (bits past the end are 0). I = int when rows * cols < 2^31
  // (32-bit division and arithmetic), else int64_t. Rows of >= 32 columns: one division, at most two
  // rows; narrower rows walk the word piece by piece (a word may span many rows).
  template <typename I>
  __device__ __forceinline__ uint32_t word_from(I k) const {
    const I C = static_cast<I>(cols);
    I r = row_of(k), c = k - r * C;
    if (C >= 32) return word_at<I>(r, c);
    uint32_t o = 0u;
    for (int pos = 0; pos < 32 && r < static_cast<I>(rows);) {
      const int len = static_cast<int>(min(static_cast<I>(32 - pos), C - c));
      o |= row_bits<I>(r, c, len) << pos;
      pos += len;
      c += len;
      if (c == C) {
        c = 0;
        ++r;
      }
    }
    return o;
  }

  // Bits [k, k + 32) for any k: bits before the stream's start (k < 0) are 0.
  template <typename I>
  __device__ __forceinline__ uint32_t word(int64_t k) const {
    if (k >= 0) return word_from<I>(static_cast<I>(k));
    return k <= -32 ? 0u : word_from<I>(I{0}) << static_cast<int>(-k);
  }

  // Whether the 128 bits from k0 >= 0 lie inside one row's prefix (all ones).
  template <typename I>
  __device__ __forceinline__ bool prefix_only(I k0) const {
    const I C = static_cast<I>(cols);
    const I r = row_of(k0);
    return r < static_cast<I>(rows) && k0 - r * C + 128 <= prefix;
  }
};

// x / y for 0 <= x, 0 < y: the 32-bit division whenever both fit (the 64-bit one is a long subroutine).
__device__ __forceinline__ int64_t div_nonneg(int64_t x, int64_t y) {
  return ((x | y) >> 31) == 0 ? static_cast<int64_t>(static_cast<uint32_t>(x) / static_cast<uint32_t>(y)) : x / y;
}

// kGeometry: find the vectors that are not all ones from the rows' geometry (CTAs of many vectors) instead
// of testing each vector in rounds of kThreads (kernel notes, tree mask round 13).
template <bool kGeometry>
__global__ void __launch_bounds__(kThreads) tree_mask_kernel(TreeMaskArgs a) {
  constexpr int kWarps = kThreads / 32;
  constexpr int kParentsPerThread = 32 * kMaxMaskWords / kThreads;
  extern __shared__ uint32_t smem[];  // [Np] parents, then [W][Np] ancestor table (transposed)
  __shared__ long long partial[kWarps];
  pdl_wait();
  pdl_launch_dependents();
  const int b = blockIdx.y, chunks = gridDim.x, x = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int W = a.words, Np = 32 * W;

  // Round trip 1: this request's bounds and the earlier segments' sizes (this segment's offset).
  long long before = 0;
  if (a.packed != nullptr)
    for (int r = tid; r < b; r += kThreads) before += segment_bytes(a, r);
  const int start = a.qo_indptr[b];
  const int n_all = a.qo_indptr[b + 1] - start;
  const int n = min(n_all, Np);  // nodes past 32 * W have no ancestor bits (documented limit)
  const int prefix = a.prefix_lens[b];
  // Round trip 2, in flight while the offset and this CTA's ranges are computed: the parents.
  int parent[kParentsPerThread];
#pragma unroll
  for (int k = 0; k < kParentsPerThread; ++k) {
    const int i = tid + k * kThreads;
    parent[k] = i < n ? a.parents[start + i] : 0;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) before += __shfl_xor_sync(0xffffffffu, before, o);
  if (lane == 0) partial[warp] = before;
  __syncthreads();
  int64_t offset = 0;
  for (int w = 0; w < kWarps; ++w) offset += partial[w];

  // This CTA's work: node slice [node_lo, node_hi) (depth, positions, compact rows) and a contiguous
  // range of the packed segment's 16-byte vectors, which covers packed rows [row_lo, row_hi).
  const int per = (n + chunks - 1) / chunks;
  const int node_lo = min(n, x * per), node_hi = min(n, node_lo + per);
  int* par = reinterpret_cast<int*>(smem);
  uint32_t* anc = smem + Np;
  Segment seg{anc, Np, W, n, prefix, 0, 0, 0};
  const int64_t bytes = a.packed != nullptr ? segment_bytes(a, b) : 0;
  seg.rows = a.packed_rows > 0 ? min(a.packed_rows, n_all) : n_all;
  seg.first_row = n_all - static_cast<int>(seg.rows);  // packed rows are the request's last `rows` nodes
  seg.cols = static_cast<int64_t>(prefix) + n_all;
  uint8_t* out = a.packed != nullptr ? a.packed + offset : nullptr;
  const uintptr_t base = reinterpret_cast<uintptr_t>(out) & ~static_cast<uintptr_t>(15);
  const int64_t head = static_cast<int64_t>(reinterpret_cast<uintptr_t>(out) - base);  // 0..15
  const int64_t num_vec = bytes > 0 ? (head + bytes + 15) / 16 : 0;
  const int64_t per_vec = div_nonneg(num_vec + chunks - 1, chunks);
  const int64_t vec_lo = min(num_vec, x * per_vec), vec_hi = min(num_vec, vec_lo + per_vec);
  int pr_lo = 0, pr_hi = 0;  // packed rows [pr_lo, pr_hi) meet the range
  if (vec_lo < vec_hi) {
    const int64_t bit_lo = max(int64_t{0}, vec_lo * 16 - head) * 8, bit_hi = min(bytes, vec_hi * 16 - head) * 8;
    pr_lo = static_cast<int>(div_nonneg(bit_lo, seg.cols));
    pr_hi = static_cast<int>(min(seg.rows, div_nonneg(bit_hi - 1, seg.cols) + 1));
  }
  // Their nodes first_row + [row_lo, row_hi), clamped to the table.
  const int row_lo = min(n, seg.first_row + pr_lo), row_hi = min(n, seg.first_row + pr_hi);
  // A vector inside one row's prefix is all ones and needs no ancestor bits (most vectors when the prefix is
  // long): stored now, while the parents are in flight.
  const bool small = seg.rows * seg.cols < (int64_t{1} << 31);  // 32-bit stream positions suffice
  if (small && seg.cols > 0) seg.by_cols = FastDiv(static_cast<uint32_t>(seg.cols));
  auto all_ones = [&](int64_t q) {
    const int64_t rel = q * 16 - head;  // segment byte of the vector's first byte
    return rel >= 0 && rel + 16 <= bytes &&
           (small ? seg.prefix_only<int>(static_cast<int>(rel * 8)) : seg.prefix_only<int64_t>(rel * 8));
  };
  for (int64_t q = vec_lo + tid; q < vec_hi; q += kThreads)
    if (all_ones(q)) *reinterpret_cast<uint4*>(out + q * 16 - head) = make_uint4(~0u, ~0u, ~0u, ~0u);
#pragma unroll
  for (int k = 0; k < kParentsPerThread; ++k)
    if (tid + k * kThreads < n) par[tid + k * kThreads] = parent[k];
  __syncthreads();

  // One thread per needed node (the slice, then the packed rows outside it): walk to the root, setting one
  // bit per ancestor in the node's own column. A parent that is not a smaller local index ends the walk.
  const int slice = node_hi - node_lo;
  for (int t = tid; t < slice + (row_hi - row_lo); t += kThreads) {
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
  for (int k = node_lo * W + tid; k < node_hi * W; k += kThreads) {  // compact rows, coalesced
    const int i = k / W, w = k - i * W;
    a.tree_mask[static_cast<int64_t>(start) * W + k] = anc[w * Np + i];
  }
  if (a.packed == nullptr) return;
  if (x == 0 && tid == 0) {
    a.mask_indptr[b + 1] = static_cast<int32_t>(offset + bytes);
    if (b == 0) a.mask_indptr[0] = 0;
  }

  // The vectors that are not all ones (tree columns, row ends, the segment's ends), as 32-bit words.
  auto store_word = [&](int64_t rel) {  // rel: the word's first segment byte
    const uint32_t v = small ? seg.word<int>(rel * 8) : seg.word<int64_t>(rel * 8);
    if (rel >= 0 && rel + 4 <= bytes) {
      *reinterpret_cast<uint32_t*>(out + rel) = v;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (rel + k >= 0 && rel + k < bytes) out[rel + k] = static_cast<uint8_t>(v >> (8 * k));
    }
  };
  if constexpr (!kGeometry) {
    // The other vectors (tree columns, row ends, the segment's ends), kThreads candidates per round: compacted
    // in order and computed as 32-bit words, four threads per vector, so the long bit-assembly path runs once
    // per word in parallel instead of serially per vector in a few threads of each warp.
    __shared__ int warp_count[2][kWarps];  // per round, double-buffered
    // This round's vectors that are not all ones (offsets from the round's first). A thread reaches the next
    // round's writes only past its first barrier, so after every thread's reads of this round.
    __shared__ int mixed[kThreads];
    for (int64_t round = vec_lo, parity = 0; round < vec_hi; round += kThreads, parity ^= 1) {
      const int64_t q = round + tid;
      const bool is_mixed = q < vec_hi && !all_ones(q);
      const unsigned ballot = __ballot_sync(0xffffffffu, is_mixed);
      int* counts = warp_count[parity];
      if (lane == 0) counts[warp] = __popc(ballot);
      __syncthreads();
      int slot = __popc(ballot & ((1u << lane) - 1u)), count = 0;
      for (int w = 0; w < kWarps; ++w) {
        slot += w < warp ? counts[w] : 0;
        count += counts[w];
      }
      if (count == 0) continue;
      if (is_mixed) mixed[slot] = tid;
      __syncthreads();
      for (int e = tid; e < 4 * count; e += kThreads) store_word((round + mixed[e >> 2]) * 16 - head + 4 * (e & 3));
    }
  } else {
    // kGeometry (long prefixes at large B): found from the geometry, no test per vector. A vector is all
    // ones unless it meets a row's tree columns [r C + prefix, (r + 1) C) of the stream (every row ends with
    // them, so that covers vectors across row boundaries and the segment's last one) or is the segment's
    // partial first vector. Row r's vectors start after row r - 1's last one (rows shorter than a vector
    // share it). Built in one pass over items (row, vector slot of the row), each split over as many threads
    // (4, 2 or 1: 1, 2 or 4 words per thread) as keep every item in the pass's first kThreads threads.
    const int64_t head_bits = head * 8, C = seg.cols;
    const int per_row = (n_all + 127) / 128 + 1;  // vectors one row's tree columns can meet
    const int64_t items = static_cast<int64_t>(pr_hi - pr_lo) * per_row;
    // item / per_row by a multiply-high with a 32-bit reciprocal (exact for item, per_row < 2^16; per_row >= 2),
    // else a division. Not FastDiv: its constructor's 64-bit division cost this pass 0.4 µs per call at B=16
    // n225 prefix 4096 (kernel notes, tree mask round 15).
    const uint32_t per_row_inv = 0xffffffffu / static_cast<uint32_t>(per_row) + 1;
    const bool quick_div = items < (1 << 16);
    auto last_vector = [&](int64_t r) { return (head_bits + (r + 1) * C - 1) >> 7; };
    const int split_log2 = 4 * (items + 1) <= kThreads ? 2 : 2 * (items + 1) <= kThreads ? 1 : 0;
    const int words_per_thread = 4 >> split_log2;
    for (int64_t e = tid; e < ((items + 1) << split_log2); e += kThreads) {
      const int64_t item = e >> split_log2;
      int64_t q;
      if (item < items) {
        const int64_t row_off = quick_div ? __umulhi(static_cast<uint32_t>(item), per_row_inv) : item / per_row;
        const int64_t r = pr_lo + row_off;
        int64_t first = (head_bits + r * C + prefix) >> 7;
        if (r > 0) first = max(first, last_vector(r - 1) + 1);
        q = first + (item - row_off * per_row);
        if (q > last_vector(r)) continue;
      } else {
        q = 0;  // the segment's first vector when it starts mid-vector, unless row 0's tree columns meet it
        if (head == 0 || (head_bits + prefix) >> 7 == 0) continue;
      }
      if (q < vec_lo || q >= vec_hi) continue;
      const int first_word = static_cast<int>(e & ((1 << split_log2) - 1)) * words_per_thread;
      for (int w = first_word; w < first_word + words_per_thread; ++w) store_word(q * 16 - head + 4 * w);
    }
  }
}

inline size_t tree_mask_smem_bytes(int words) {
  return static_cast<size_t>(32 * words) * (1 + words) * sizeof(uint32_t);
}

// > 48 KB of dynamic shared memory needs a per-kernel opt-in (per device): set once, to the most any launch
// asks (kMaxMaskWords words) or, where less, the most the device allows (a larger launch then fails).
template <bool kGeometry>
cudaError_t prepare_tree_mask_kernel() {
  static bool done[kMaxDevices] = {};
  return once_per_device(done, [] {
    const auto kernel = tree_mask_kernel<kGeometry>;
    int device = 0, optin = 0;
    cudaFuncAttributes attr{};
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (err == cudaSuccess) err = cudaFuncGetAttributes(&attr, kernel);
    if (err != cudaSuccess) return err;
    const int smem = std::min(static_cast<int>(tree_mask_smem_bytes(kMaxMaskWords)),
                              optin - static_cast<int>(attr.sharedSizeBytes));  // static + dynamic <= opt-in
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  });
}

// chunks: CTAs per request (the launcher sizes it from the packed buffer's capacity per request);
// geometry: the kGeometry instantiation (the launcher picks it when a CTA's share of the capacity exceeds
// one round of kThreads vectors).
inline cudaError_t launch_tree_mask(const TreeMaskArgs& a, int chunks, bool geometry, cudaStream_t stream) {
  if (a.batch == 0) {
    if (a.packed) return cudaMemsetAsync(a.mask_indptr, 0, sizeof(int32_t), stream);
    return cudaSuccess;
  }
  void (*kernel)(TreeMaskArgs) = geometry ? tree_mask_kernel<true> : tree_mask_kernel<false>;
  const size_t smem = tree_mask_smem_bytes(a.words);
  if (smem > 48 * 1024) {
    const cudaError_t err = geometry ? prepare_tree_mask_kernel<true>() : prepare_tree_mask_kernel<false>();
    if (err != cudaSuccess) return err;
  }
  return launch_pdl(kernel, dim3(chunks, a.batch), dim3(kThreads), smem, stream, a);
}

}  // namespace ssdk::tree

// Draft-tree description for a batch of trees: depth, positions, the compact ancestor bitmask and
// FlashInfer's packed custom mask (see ssdk.ops.tree.build_tree_mask for the exact layout).
//
// Grid (chunks, B): every CTA of request b rebuilds the request's ancestor table in shared memory
// (one thread walks one node's parent chain; trees are small), then CTA 0 writes positions, depth and
// the compact mask, and all CTAs of the request split its packed segment byte by byte. Segment
// offsets are the byte sizes of the earlier requests summed by each CTA: no host sync, no second pass.
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

__global__ void __launch_bounds__(kThreads) tree_mask_kernel(TreeMaskArgs a) {
  extern __shared__ uint32_t smem[];  // [32 * words] parents, then [32 * words][words] ancestor table
  const int b = blockIdx.y;
  const int start = a.qo_indptr[b];
  const int n = min(a.qo_indptr[b + 1] - start, 32 * a.words);
  const int prefix = a.prefix_lens[b];
  const int W = a.words;
  int* par = reinterpret_cast<int*>(smem);
  uint32_t* anc = smem + 32 * W;

  for (int i = threadIdx.x; i < n; i += blockDim.x) par[i] = a.parents[start + i];
  __syncthreads();
  // One thread per node: walk to the root, setting one bit per ancestor in the node's own row.
  // A parent that is not a smaller local index ends the walk (malformed input cannot loop forever).
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    uint32_t* row = anc + i * W;
    for (int w = 0; w < W; ++w) row[w] = 0u;
    int d = -1;
    for (int j = i; j >= 0;) {
      row[j >> 5] |= 1u << (j & 31);
      ++d;
      const int p = par[j];
      j = p < j ? p : -1;
    }
    if (blockIdx.x == 0) {
      a.depth[start + i] = d;
      if (a.positions_int64)
        static_cast<int64_t*>(a.positions)[start + i] = static_cast<int64_t>(prefix) + d;
      else
        static_cast<int32_t*>(a.positions)[start + i] = prefix + d;
    }
  }
  __syncthreads();
  if (blockIdx.x == 0) {  // coalesced copy of the compact rows
    for (int k = threadIdx.x; k < n * W; k += blockDim.x) a.tree_mask[static_cast<int64_t>(start) * W + k] = anc[k];
  }
  if (a.packed == nullptr) return;

  // Offset of this request's segment: sum of the earlier segments (block-wide reduction).
  __shared__ long long partial[kThreads / 32];
  long long before = 0;
  for (int r = threadIdx.x; r < b; r += blockDim.x) before += segment_bytes(a, r);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) before += __shfl_xor_sync(0xffffffffu, before, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = before;
  __syncthreads();
  int64_t offset = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) offset += partial[w];
  const int64_t bytes = segment_bytes(a, b);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    a.mask_indptr[b + 1] = static_cast<int32_t>(offset + bytes);
    if (b == 0) a.mask_indptr[0] = 0;
  }

  const int rows = a.packed_rows > 0 ? min(a.packed_rows, n) : n;
  const int first_row = n - rows;  // packed rows are the request's last `rows` nodes
  const uint32_t cols = static_cast<uint32_t>(prefix + n);
  const uint32_t total_bits = static_cast<uint32_t>(rows) * cols;
  uint8_t* out = a.packed + offset;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < bytes;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t bit0 = static_cast<uint32_t>(k) * 8u;
    uint32_t r = bit0 / cols, c = bit0 - r * cols;
    uint32_t byte = 0;
    if (c + 8u <= static_cast<uint32_t>(prefix)) {
      byte = 0xffu;  // all eight bits in the fully visible prefix of one row
    } else {
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        if (bit0 + t < total_bits) {
          uint32_t bit = 1u;
          if (c >= static_cast<uint32_t>(prefix)) {
            const int j = static_cast<int>(c) - prefix;
            bit = (anc[(first_row + r) * W + (j >> 5)] >> (j & 31)) & 1u;
          }
          byte |= bit << t;
        }
        if (++c == cols) { c = 0; ++r; }
      }
    }
    out[k] = static_cast<uint8_t>(byte);
  }
}

inline size_t tree_mask_smem_bytes(int words) {
  return static_cast<size_t>(32 * words) * (1 + words) * sizeof(uint32_t);
}

inline cudaError_t launch_tree_mask(const TreeMaskArgs& a, int num_sms, cudaStream_t stream) {
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
  // Enough CTAs per request that the packed segments (up to ~100 KB each) spread over the GPU.
  const int chunks = a.packed ? max(1, min(16, (2 * num_sms + a.batch - 1) / a.batch)) : 1;
  tree_mask_kernel<<<dim3(chunks, a.batch), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace ssdk::tree

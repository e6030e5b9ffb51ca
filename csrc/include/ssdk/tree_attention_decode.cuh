// Decode path of tree attention (max_q_len == 1): one new query row per request, so a CTA owns all the
// q heads of one kv head (the GQA group, <= 16 rows of one mma.sync M tile) for one KV split.
// Included only by csrc/tree_attention_decode.cu.
//
// Latency chain of a CTA (what the general kernel paid more of at small batch):
//   1. one round trip: request bounds (qo_indptr, prefix_lens) and the page ids of the CTA's first
//      kStages - 1 tiles together. Splits take tiles round-robin (split s: tiles s, s + S, s + 2S ...),
//      so a CTA knows where its tiles start without the request length: the first page ids are loaded
//      speculatively (bounded by the block_tables width) while the length is still in flight.
//   2. one round trip: q and the first K/V tiles (16-byte cp.async, 3-stage ring), then one page-id
//      load per tile issued an iteration ahead of its copies.
//   3. the merge: a single split writes out/lse directly. Otherwise every split writes its normalized
//      (O, lse) to an fp32 workspace and a second kernel (decode_merge_kernel, launched with PDL right
//      after the splits, so its launch overlaps them) merges them: one CTA per (group row, kv head,
//      request), each thread loads its slice of up to kMaxDecodeSplits / 8 states in one round trip
//      together with the request length, and the slices combine in slice order. The merge reads the
//      states on as many SMs as there are rows instead of one CTA per pair, and needs no counter, fence
//      or atomic, so split calls may run on several streams at once.
// The math is the general kernel's (tree_attention_kernel.cuh): 4 warps split each 64-token tile's
// columns, S = Q K^T and O += P V on mma.sync with fp32 accumulators, online softmax in the log2 domain.
#pragma once
#include "ssdk/tree_attention_kernel.cuh"

namespace ssdk::tree_attn {

// kRowThreads: threads that copy one K/V tile row (see issue_tile); 2 or D / 8 (DecodeParams::wide_copies).
template <typename T, int D, int kRowThreads>
struct DecodeConfig {
  static constexpr int kThreads = 128;
  static constexpr int kWarps = 4;
  static constexpr int kWarpN = kBlockN / kWarps;  // 16 columns of a tile per warp
  static constexpr int kStages = 3;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  // K/V copies: kThreadsPerRow threads per tile row, each copying the row's chunks chunk0, chunk0 +
  // kThreadsPerRow, ... of kRowsPerThread rows kRowStep apart (one page id and row address per row).
  static constexpr int kThreadsPerRow = kRowThreads;
  static constexpr int kCopyChunks = kChunks / kThreadsPerRow;
  static constexpr int kRowStep = kThreads / kThreadsPerRow;
  static constexpr int kRowsPerThread = kBlockN / kRowStep;
  static constexpr int kTileElems = kBlockN * D;
  static constexpr int kSmemQ = 16 * D * int(sizeof(T));
  static constexpr int kSmemKV = kStages * 2 * kTileElems * int(sizeof(T));
  static constexpr int kOStride = D + 4;  // fp32 epilogue row stride
  static constexpr int kSmemEpi = kWarps * 16 * (kOStride + 2) * 4;
  static constexpr int kSmem = kSmemQ + (kSmemKV > kSmemEpi ? kSmemKV : kSmemEpi);
  // D = 64: 50 KB, 4 CTAs per SM (512 CTAs of B = 64 fit one wave); D = 128: 98 KB, 2 per SM.
  static constexpr int kMinBlocks = D == 64 ? 4 : 2;
  static_assert((kThreadsPerRow & (kThreadsPerRow - 1)) == 0 && kThreadsPerRow <= kChunks && kRowStep % 8 == 0,
                "issue_tile's XOR offsets: chunk0 below kThreadsPerRow, every row of a thread at the same r % 8");
};

template <typename T, int D, int kRowThreads>
__global__ void __launch_bounds__(DecodeConfig<T, D, kRowThreads>::kThreads, DecodeConfig<T, D, kRowThreads>::kMinBlocks)
    decode_attention_kernel(const __grid_constant__ DecodeParams p) {
  using Cfg = DecodeConfig<T, D, kRowThreads>;
  constexpr int kStages = Cfg::kStages, kChunks = Cfg::kChunks, kCopyChunks = Cfg::kCopyChunks;
  constexpr int kRowStep = Cfg::kRowStep, kRowsPerThread = Cfg::kRowsPerThread;
  constexpr float kNegInf = -__builtin_huge_valf();

  const int split = blockIdx.x, kv_head = blockIdx.y, b = blockIdx.z;
  const int num_splits = gridDim.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int copy_row = tid / Cfg::kThreadsPerRow, chunk0 = tid % Cfg::kThreadsPerRow;
  const int32_t* page_table = p.block_tables + b * p.block_table_stride;
  const int table_tokens = p.table_pages * p.page_size;  // positions block_tables can map
  // Position of this thread's first row of the split's local tile `tile` (global tile split + tile *
  // num_splits); its rows are kRowStep apart.
  auto row_pos = [&](int tile) { return (split + tile * num_splits) * kBlockN + copy_row; };
  // Page ids of those rows, -1 at or past `end`.
  auto fetch_pages = [&](int tile, int end, int (&pages)[kRowsPerThread]) {
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int pos = row_pos(tile) + i * kRowStep;
      pages[i] = pos < end ? __ldg(page_table + p.page_index(pos)) : -1;
    }
  };

  pdl_wait();  // q, the cache and the index tensors may be written by the previous kernel
  if (num_splits > 1) pdl_launch_dependents();  // the merge kernel: launched now, it waits for our completion
  // Round trip 1: the request bounds and, speculatively, the first tiles' page ids.
  const int q_start = p.qo_indptr[b], q_end = p.qo_indptr[b + 1], prefix = p.prefix_lens[b];
  int pages[kStages - 1][kRowsPerThread];
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) fetch_pages(s, table_tokens, pages[s]);

  if (q_end <= q_start) return;  // no new token: no output row (every split of the pair leaves)
  const int kv_len = prefix + 1;  // the prefix and the new token (visible unless tree_mask says not)
  const int total_tiles = (kv_len + kBlockN - 1) / kBlockN;
  const int active_splits = min(num_splits, total_tiles);
  if (split >= active_splits) return;  // no tile: the merge counts only active splits
  const int num_tiles = (total_tiles - 1 - split) / num_splits + 1;

  extern __shared__ __align__(128) uint8_t smem[];
  T* s_q = reinterpret_cast<T*>(smem);
  T* s_k = reinterpret_cast<T*>(smem + Cfg::kSmemQ);  // [kStages][kBlockN][D]
  T* s_v = s_k + kStages * Cfg::kTileElems;

  // Q rows of the group -> shared (rows >= group zero-filled), in the cp.async group of tile 0.
  const T* q = static_cast<const T*>(p.q) + q_start * p.q_stride_n + kv_head * p.group * p.q_stride_h;
  for (int c = tid; c < 16 * kChunks; c += Cfg::kThreads) {
    const int r = c / kChunks, chunk = c % kChunks;
    cp_async16(s_q + swz<D>(r, chunk), q + (r < p.group ? r * p.q_stride_h + chunk * 8 : 0), r < p.group);
  }

  // What does not change with the tile is computed here: a row costs one slot and one IMAD.WIDE per K
  // and V address (strides < 2^31, checked on the host), then the copies at immediate offsets. Chunk
  // chunk0 + c kThreadsPerRow of row r lands at swz(r, chunk0) ^ 8 c kThreadsPerRow (chunk0 and c
  // kThreadsPerRow share no bit; the XOR with r % 8 commutes), and rows kRowStep apart (a multiple of 8)
  // at the same XOR pattern.
  const T* k_row = static_cast<const T*>(p.k_cache) + kv_head * p.k_stride_head + chunk0 * 8;
  const T* v_row = static_cast<const T*>(p.v_cache) + kv_head * p.v_stride_head + chunk0 * 8;
  const uint32_t k_stride_page = uint32_t(p.k_stride_page), k_stride_tok = uint32_t(p.k_stride_tok);
  const uint32_t v_stride_page = uint32_t(p.v_stride_page), v_stride_tok = uint32_t(p.v_stride_tok);
  const int copy_dst = swz<D>(copy_row, chunk0);
  auto issue_tile = [&](int tile, int stage, const int (&tile_pages)[kRowsPerThread]) {
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int pos = row_pos(tile) + i * kRowStep;
      const bool ok = pos < kv_len;  // zero-fill past the request (masked below, never read)
      const uint32_t slot = ok ? p.page_slot(pos) : 0u, pg = ok ? tile_pages[i] : 0u;
      const T* src_k = k_row + (uint64_t(pg) * k_stride_page + slot * k_stride_tok);
      const T* src_v = v_row + (uint64_t(pg) * v_stride_page + slot * v_stride_tok);
      T* dst_k = s_k + stage * Cfg::kTileElems + i * kRowStep * D;
      T* dst_v = s_v + stage * Cfg::kTileElems + i * kRowStep * D;
#pragma unroll
      for (int c = 0; c < kCopyChunks; ++c) {
        const int dst = copy_dst ^ (c * Cfg::kThreadsPerRow * 8);
        cp_async16(dst_k + dst, src_k + c * Cfg::kThreadsPerRow * 8, ok);
        cp_async16(dst_v + dst, src_v + c * Cfg::kThreadsPerRow * 8, ok);
      }
    }
  };

  // Round trip 2: q, the first tiles and (tree_mask) whether the query sees its own token.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) issue_tile(s, s, pages[s]);
    cute::cp_async_fence();
  }
  const bool sees_self = p.tree_mask == nullptr || (__ldg(p.tree_mask + int64_t(q_start) * p.mask_stride) & 1);
  int next_pages[kRowsPerThread];
  fetch_pages(kStages - 1, kv_len, next_pages);

  const int g = lane >> 2, t4 = lane & 3;
  const int col0 = warp * Cfg::kWarpN;  // this warp's first column of every tile
  uint32_t q_frag[D / 16][4];
  float o[D / 8][4];
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

  for (int tile = 0; tile < num_tiles; ++tile) {
    cute::cp_async_wait<kStages - 2>();
    __syncthreads();
    if (tile + kStages - 1 < num_tiles) issue_tile(tile + kStages - 1, (tile + kStages - 1) % kStages, next_pages);
    cute::cp_async_fence();
    fetch_pages(tile + kStages, kv_len, next_pages);  // consumed by the next iteration's copies
    if (tile == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ldsm(s_q + swz<D>(lane & 15, kk * 2 + (lane >> 4)), q_frag[kk]);
    }
    const T* tk = s_k + (tile % kStages) * Cfg::kTileElems;
    const T* tv = s_v + (tile % kStages) * Cfg::kTileElems;

    // S = Q K^T for the group's rows (padded to 16) x this warp's 16 columns.
    float s[2][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t kb[4];
      ldsm(tk + swz<D>(col0 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)), kb);
      mma<T>(s[0], q_frag[kk], kb[0], kb[1]);
      mma<T>(s[1], q_frag[kk], kb[2], kb[3]);
    }

    // Log2-domain scores; the tile that holds the new token masks it (tree_mask) and the zero-filled tail.
    const int pos0 = (split + tile * num_splits) * kBlockN + col0;
    const bool masked = pos0 + Cfg::kWarpN > prefix;
#pragma unroll
    for (int nf = 0; nf < 2; ++nf) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nf][e] *= p.scale_log2;
        const int pos = pos0 + nf * 8 + 2 * t4 + (e & 1);
        if (masked && (pos > prefix || (pos == prefix && !sees_self))) s[nf][e] = kNegInf;
      }
    }

    // Online softmax over this warp's columns (a row's 4 owners are lanes 4g .. 4g + 3).
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float mx = fmaxf(m[hr], fmaxf(fmaxf(s[0][2 * hr], s[0][2 * hr + 1]), fmaxf(s[1][2 * hr], s[1][2 * hr + 1])));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float base = mx == kNegInf ? 0.f : mx;
      const float alpha = ex2(m[hr] - base);
      m[hr] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nf = 0; nf < 2; ++nf) {
        s[nf][2 * hr] = ex2(s[nf][2 * hr] - base);
        s[nf][2 * hr + 1] = ex2(s[nf][2 * hr + 1] - base);
        sum += s[nf][2 * hr] + s[nf][2 * hr + 1];
      }
      l[hr] = l[hr] * alpha + sum;
#pragma unroll
      for (int df = 0; df < D / 8; ++df) {
        o[df][2 * hr] *= alpha;
        o[df][2 * hr + 1] *= alpha;
      }
    }

    // O += P V (P's accumulator layout is the A operand of the next mma).
    const uint32_t pa[4] = {pack2<T>(s[0][0], s[0][1]), pack2<T>(s[0][2], s[0][3]), pack2<T>(s[1][0], s[1][1]),
                            pack2<T>(s[1][2], s[1][3])};
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t vb[4];
      ldsm_t(tv + swz<D>(col0 + (lane & 7) + (((lane >> 3) & 1) << 3), dp * 2 + (lane >> 4)), vb);
      mma<T>(o[2 * dp], pa, vb[0], vb[1]);
      mma<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
    }
  }
  if (num_splits == 1) pdl_launch_dependents();  // the next kernel may start its launch; it waits for our completion

  // The 4 warps' states of each group row -> shared memory (over the KV ring), merged per (row, 4 cols).
  cute::cp_async_wait<0>();
  __syncthreads();
  float* s_o = reinterpret_cast<float*>(smem + Cfg::kSmemQ);  // [kWarps][16][kOStride]
  float* s_m = s_o + Cfg::kWarps * 16 * Cfg::kOStride;         // [kWarps][16]
  float* s_l = s_m + Cfg::kWarps * 16;
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 1);
    l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 2);
    const int r = g + 8 * hr;
    if (r < p.group) {
      if (t4 == 0) {
        s_m[warp * 16 + r] = m[hr];
        s_l[warp * 16 + r] = l[hr];
      }
#pragma unroll
      for (int df = 0; df < D / 8; ++df)
        *reinterpret_cast<float2*>(s_o + (warp * 16 + r) * Cfg::kOStride + df * 8 + 2 * t4) =
            make_float2(o[df][2 * hr], o[df][2 * hr + 1]);
    }
  }
  __syncthreads();

  // One active split: out and lse directly. Otherwise this split's state for decode_merge_kernel: O
  // normalized, lse in the log2 domain (-inf: saw no key).
  const int64_t pair = int64_t(b) * p.num_kv_heads + kv_head;
  float* part_o = p.partial_o + (pair * num_splits + split) * p.group * D;
  float* part_lse = p.partial_lse + (pair * num_splits + split) * p.group;
  const int num_items = p.group * (D / 4);
  for (int e = tid; e < num_items; e += Cfg::kThreads) {
    const int r = e / (D / 4), c4 = e % (D / 4);
    float mx = kNegInf;
#pragma unroll
    for (int w = 0; w < Cfg::kWarps; ++w) mx = fmaxf(mx, s_m[w * 16 + r]);
    const float base = mx == kNegInf ? 0.f : mx;
    float sum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < Cfg::kWarps; ++w) {
      const float scale = ex2(s_m[w * 16 + r] - base);
      sum += scale * s_l[w * 16 + r];
      const float4 v = *reinterpret_cast<const float4*>(s_o + (w * 16 + r) * Cfg::kOStride + c4 * 4);
      acc.x += scale * v.x, acc.y += scale * v.y, acc.z += scale * v.z, acc.w += scale * v.w;
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const float lse_log2 = sum > 0.f ? mx + log2f(sum) : kNegInf;
    if (active_splits == 1) {
      const int head = kv_head * p.group + r;
      T* out = static_cast<T*>(p.out) + int64_t(q_start) * p.out_stride_n + head * p.out_stride_h + c4 * 4;
      *reinterpret_cast<uint2*>(out) = make_uint2(pack2<T>(acc.x * inv, acc.y * inv), pack2<T>(acc.z * inv, acc.w * inv));
      if (c4 == 0 && p.lse != nullptr) p.lse[int64_t(q_start) * p.num_qo_heads + head] = lse_log2 * 0.6931471805599453f;
    } else {
      __stcg(reinterpret_cast<float4*>(part_o + r * D + c4 * 4), make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv));
      if (c4 == 0) __stcg(part_lse + r, lse_log2);
    }
  }
}

// Merge of the split states (num_splits > 1), launched with PDL right after decode_attention_kernel: one
// CTA per (group row r, kv head, request). Thread (slice k of 8, float4 column c4) owns the contiguous
// splits [k c, (k + 1) c), c = ceil(num_splits / 8) <= kMaxDecodeSplits / 8, and loads their (lse, O)
// in the same round trip as the request length (states past the request's active splits are loaded but
// not used: the workspace is not initialized there); the 8 slices combine in slice order through shared
// memory. Every sum's order follows from num_splits and the request length alone (deterministic).
template <int D>
struct DecodeMergeConfig {
  static constexpr int kCols = D / 4;  // float4 columns of a row
  static constexpr int kSlices = 8;
  static constexpr int kThreads = kSlices * kCols;  // 128 at D = 64, 256 at D = 128
  static constexpr int kChunk = kMaxDecodeSplits / kSlices;
};

template <typename T, int D>
__global__ void __launch_bounds__(DecodeMergeConfig<D>::kThreads) decode_merge_kernel(const __grid_constant__ DecodeParams p) {
  using Cfg = DecodeMergeConfig<D>;
  constexpr int kCols = Cfg::kCols, kChunk = Cfg::kChunk;
  constexpr float kNegInf = -__builtin_huge_valf();
  const int r = blockIdx.x, kv_head = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, c4 = tid % kCols, slice = tid / kCols;
  const int chunk = (p.num_splits + Cfg::kSlices - 1) / Cfg::kSlices;
  const int begin = slice * chunk;
  const int loaded = max(0, min(chunk, p.num_splits - begin));  // states of this slice in the launch
  const int64_t pair = int64_t(b) * p.num_kv_heads + kv_head;
  const float* lse_src = p.partial_lse + (pair * p.num_splits + begin) * p.group + r;
  const float4* o_src = reinterpret_cast<const float4*>(p.partial_o + ((pair * p.num_splits + begin) * p.group + r) * D) + c4;

  pdl_wait();  // the split kernel's states
  pdl_launch_dependents();
  const int q_start = p.qo_indptr[b], q_end = p.qo_indptr[b + 1], prefix = p.prefix_lens[b];
  float lse[kChunk];
  float4 v[kChunk];
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
    if (j < loaded) {
      lse[j] = __ldcg(lse_src + j * p.group);
      v[j] = __ldcg(o_src + j * p.group * kCols);
    }
  }
  if (q_end <= q_start) return;  // no new token: no output row
  const int splits = min(p.num_splits, (prefix + kBlockN) / kBlockN);  // active splits: tiles of prefix + 1 keys
  if (splits == 1) return;  // the split kernel wrote out and lse itself
  const int used = max(0, min(chunk, splits - begin));
  float m = kNegInf;
#pragma unroll
  for (int j = 0; j < kChunk; ++j)
    if (j < used) m = fmaxf(m, lse[j]);
  const float base = m == kNegInf ? 0.f : m;
  float l = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
    if (j < used) {
      const float w = ex2(lse[j] - base);  // 0 for a split that saw no key (lse -inf, O 0)
      l += w;
      acc.x += w * v[j].x, acc.y += w * v[j].y, acc.z += w * v[j].z, acc.w += w * v[j].w;
    }
  }
  __shared__ float4 s_acc[Cfg::kThreads];
  __shared__ float2 s_ml[Cfg::kThreads];
  s_acc[tid] = acc;
  s_ml[tid] = make_float2(m, l);
  __syncthreads();
  if (slice > 0) return;
  float mx = kNegInf;
#pragma unroll
  for (int k = 0; k < Cfg::kSlices; ++k) mx = fmaxf(mx, s_ml[k * kCols + c4].x);
  const float top = mx == kNegInf ? 0.f : mx;
  float sum = 0.f;
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int k = 0; k < Cfg::kSlices; ++k) {
    const float2 ml = s_ml[k * kCols + c4];
    const float4 a = s_acc[k * kCols + c4];
    const float w = ex2(ml.x - top);  // slice k's sums are relative to its own max
    sum += w * ml.y;
    o.x += w * a.x, o.y += w * a.y, o.z += w * a.z, o.w += w * a.w;
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  const int head = kv_head * p.group + r;
  T* out = static_cast<T*>(p.out) + int64_t(q_start) * p.out_stride_n + head * p.out_stride_h + c4 * 4;
  *reinterpret_cast<uint2*>(out) = make_uint2(pack2<T>(o.x * inv, o.y * inv), pack2<T>(o.z * inv, o.w * inv));
  if (c4 == 0 && p.lse != nullptr)
    p.lse[int64_t(q_start) * p.num_qo_heads + head] = natural_lse(mx, sum);
}

// Copy layouts of the split kernel (DecodeParams::wide_copies): two threads per tile row (one page id and row
// address per thread and tile: the shortest per-tile chain, for latency-bound grids) or a whole row per
// copy instruction of D / 8 threads (what the long, bandwidth-bound grids stream fastest).
constexpr int kNarrowRowThreads = 2;
template <int D> constexpr int kWideRowThreads = D / 8;

template <typename T, int D, int kRowThreads>
cudaError_t prepare_decode_kernel() {
  static bool done[kMaxDevices] = {};
  return once_per_device(done, [] {
    return cudaFuncSetAttribute(decode_attention_kernel<T, D, kRowThreads>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                DecodeConfig<T, D, kRowThreads>::kSmem);
  });
}

template <typename T, int D, int kRowThreads>
cudaError_t launch_decode_split(const DecodeParams& p, cudaStream_t stream) {
  using Cfg = DecodeConfig<T, D, kRowThreads>;
  if (const cudaError_t err = prepare_decode_kernel<T, D, kRowThreads>(); err != cudaSuccess) return err;
  const dim3 grid(p.num_splits, p.num_kv_heads, p.batch);
  return launch_pdl(decode_attention_kernel<T, D, kRowThreads>, grid, dim3(Cfg::kThreads), Cfg::kSmem, stream, p);
}

template <typename T, int D>
cudaError_t launch_decode(const DecodeParams& p, cudaStream_t stream) {
  const cudaError_t err = p.wide_copies ? launch_decode_split<T, D, kWideRowThreads<D>>(p, stream)
                                        : launch_decode_split<T, D, kNarrowRowThreads>(p, stream);
  if (err != cudaSuccess || p.num_splits == 1) return err;
  return launch_pdl(decode_merge_kernel<T, D>, dim3(p.group, p.num_kv_heads, p.batch),
                    dim3(DecodeMergeConfig<D>::kThreads), 0, stream, p);
}

// Both layouts have the same shared memory and launch bounds; the narrow one is queried.
template <typename T, int D>
int decode_ctas_per_sm() {
  constexpr int kRowThreads = kNarrowRowThreads;
  static const int cached = [] {
    int blocks = 0;
    if (prepare_decode_kernel<T, D, kRowThreads>() != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, decode_attention_kernel<T, D, kRowThreads>,
                                                      DecodeConfig<T, D, kRowThreads>::kThreads,
                                                      DecodeConfig<T, D, kRowThreads>::kSmem) != cudaSuccess) {
      cudaGetLastError();  // a failed query leaves no sticky error behind
      return 1;
    }
    return blocks > 0 ? blocks : 1;
  }();
  return cached;
}

}  // namespace ssdk::tree_attn

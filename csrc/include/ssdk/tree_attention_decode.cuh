// Decode path of tree attention (max_q_len == 1): one new query row per request, so a CTA owns all the
// q heads of one kv head (the GQA group, <= 16 rows of one mma.sync M tile) for one KV split.
// Included only by csrc/tree_attention_decode.cu (the merge counters below are that module's).
//
// Latency chain of a CTA (what the general kernel paid more of at small batch):
//   1. one round trip: request bounds (qo_indptr, prefix_lens) and the page ids of the CTA's first
//      kStages - 1 tiles together. Splits take tiles round-robin (split s: tiles s, s + S, s + 2S ...),
//      so a CTA knows where its tiles start without the request length: the first page ids are loaded
//      speculatively (bounded by the block_tables width) while the length is still in flight.
//   2. one round trip: q and the first K/V tiles (16-byte cp.async, 3-stage ring), then one page-id
//      load per tile issued an iteration ahead of its copies.
//   3. the merge: a single split writes out/lse directly. Otherwise every split writes its normalized
//      (O, lse) to an fp32 workspace, and the last split of a (request, kv head) to arrive — found with
//      a self-resetting counter (atomicInc wraps to 0) — merges them: no cluster, no second kernel.
//      Up to kMaxDecodeSplits = 64 states: several threads per (row, 4 columns) merge slices of the
//      splits, combined in slice order through shared memory (merge_split_states).
// The math is the general kernel's (tree_attention_kernel.cuh): 4 warps split each 64-token tile's
// columns, S = Q K^T and O += P V on mma.sync with fp32 accumulators, online softmax in the log2 domain.
#pragma once
#include "ssdk/tree_attention_kernel.cuh"

namespace ssdk::tree_attn {

// Merge counters, one per (request, kv head), zero at module load and left zero by every launch (the
// last split resets its counter). Launches of one device that use splits must not run concurrently
// (ordered on a stream, as graphs and PDL keep them); more than kMaxDecodeCounters (request, kv head)
// pairs run unsplit.
__device__ uint32_t g_decode_counters[kMaxDecodeCounters];

template <typename T, int D>
struct DecodeConfig {
  static constexpr int kThreads = 128;
  static constexpr int kWarps = 4;
  static constexpr int kWarpN = kBlockN / kWarps;  // 16 columns of a tile per warp
  static constexpr int kStages = 3;
  static constexpr int kChunks = D / 8;                      // 16-byte chunks per row
  static constexpr int kRowStep = kThreads / kChunks;        // tile rows one copy pass covers
  static constexpr int kRowsPerThread = kBlockN / kRowStep;  // rows (page ids) one thread copies per tile
  static constexpr int kTileElems = kBlockN * D;
  static constexpr int kSmemQ = 16 * D * int(sizeof(T));
  static constexpr int kSmemKV = kStages * 2 * kTileElems * int(sizeof(T));
  static constexpr int kOStride = D + 4;  // fp32 epilogue row stride
  static constexpr int kSmemEpi = kWarps * 16 * (kOStride + 2) * 4;
  static constexpr int kSmem = kSmemQ + (kSmemKV > kSmemEpi ? kSmemKV : kSmemEpi);
  // D = 64: 50 KB, 4 CTAs per SM (512 CTAs of B = 64 fit one wave); D = 128: 98 KB, 2 per SM.
  static constexpr int kMinBlocks = D == 64 ? 4 : 2;
};

// The last split of a (request, kv head) merges the `splits` partial states, O normalized in
// part_o [splits][group][D] and lse (log2 domain, -inf: no key) in part_lse [splits][group], and hands
// each (row r, columns 4 c4 .. 4 c4 + 3) to store(r, c4, out, lse). Threads take (item, slice): item =
// (row, 4 columns), slice k of K = kThreads / items (1 when items >= kThreads) merges the contiguous
// splits [k c, (k + 1) c), c = ceil(splits / K), kBatch (lse, O) loads in flight at a time, rescaling
// its (max, sum, O) once per batch; slices 1 .. K-1 then go through shared memory and slice 0 adds
// them in slice order. No thread holds more than kBatch states, and every sum's order follows from
// `splits` and the group alone, never from which split came last.
template <int D, int kThreads, typename Store>
__device__ __forceinline__ void merge_split_states(float* smem, const float* part_o, const float* part_lse, int splits,
                                                   int group, Store store) {
  constexpr int kCols = D / 4;               // float4 columns of a row
  constexpr int kBatch = D == 64 ? 12 : 32;  // states in flight per thread (register bound, no spill)
  constexpr float kNegInf = -__builtin_huge_valf();
  const int tid = threadIdx.x;
  const int items = group * kCols;
  const int slices = items >= kThreads ? 1 : kThreads / items;
  const int chunk = (splits + slices - 1) / slices;
  float4* s_acc = reinterpret_cast<float4*>(smem);          // [slices][items] (slices > 1: items * slices <= kThreads)
  float2* s_ml = reinterpret_cast<float2*>(s_acc + kThreads);  // [slices][items] (max, sum)

  float m = kNegInf, l = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int e = tid; e < items * slices; e += kThreads) {
    const int item = e % items, slice = e / items, r = item / kCols, c4 = item % kCols;
    const int begin = slice * chunk, end = min(splits, begin + chunk);
    const float* o_src = part_o + r * D + c4 * 4;
    const float* lse_src = part_lse + r;
    m = kNegInf, l = 0.f;
    acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s0 = begin; s0 < end; s0 += kBatch) {
      float lse[kBatch];
      float4 v[kBatch];
      const float* lse_ptr = lse_src + s0 * group;
      const float4* o_ptr = reinterpret_cast<const float4*>(o_src + s0 * group * D);
#pragma unroll
      for (int j = 0; j < kBatch; ++j, lse_ptr += group, o_ptr += group * kCols) {  // the batch in flight at once
        if (s0 + j < end) {
          lse[j] = __ldcg(lse_ptr);
          v[j] = __ldcg(o_ptr);
        }
      }
      float mx = m;
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        if (s0 + j < end) mx = fmaxf(mx, lse[j]);
      const float base = mx == kNegInf ? 0.f : mx;
      const float scale = ex2(m - base);  // 0 while nothing was seen (m = -inf)
      l *= scale;
      acc.x *= scale, acc.y *= scale, acc.z *= scale, acc.w *= scale;
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        if (s0 + j < end) {
          const float w = ex2(lse[j] - base);
          l += w;
          acc.x += w * v[j].x, acc.y += w * v[j].y, acc.z += w * v[j].z, acc.w += w * v[j].w;
        }
      }
      m = mx;
    }
    if (slices == 1) {
      const float inv = l > 0.f ? 1.f / l : 0.f;
      store(r, c4, make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv), l > 0.f ? m + log2f(l) : kNegInf);
    } else if (slice > 0) {
      s_acc[e] = acc;
      s_ml[e] = make_float2(m, l);
    }
  }
  if (slices == 1) return;
  __syncthreads();  // items * slices <= kThreads here: thread tid < items holds slice 0 of item tid
  if (tid < items) {
    float mx = m;
    for (int k = 1; k < slices; ++k) mx = fmaxf(mx, s_ml[k * items + tid].x);
    const float base = mx == kNegInf ? 0.f : mx;
    const float scale = ex2(m - base);
    l *= scale;
    acc.x *= scale, acc.y *= scale, acc.z *= scale, acc.w *= scale;
    for (int k = 1; k < slices; ++k) {
      const float2 ml = s_ml[k * items + tid];
      const float4 a = s_acc[k * items + tid];
      const float w = ex2(ml.x - base);
      l += w * ml.y;
      acc.x += w * a.x, acc.y += w * a.y, acc.z += w * a.z, acc.w += w * a.w;
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
    store(tid / kCols, tid % kCols, make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv),
          l > 0.f ? mx + log2f(l) : kNegInf);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(DecodeConfig<T, D>::kThreads, DecodeConfig<T, D>::kMinBlocks)
    decode_attention_kernel(const __grid_constant__ DecodeParams p) {
  using Cfg = DecodeConfig<T, D>;
  constexpr int kStages = Cfg::kStages, kChunks = Cfg::kChunks, kRowStep = Cfg::kRowStep;
  constexpr int kRowsPerThread = Cfg::kRowsPerThread;
  constexpr float kNegInf = -__builtin_huge_valf();

  const int split = blockIdx.x, kv_head = blockIdx.y, b = blockIdx.z;
  const int num_splits = gridDim.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int copy_chunk = tid % kChunks, copy_row = tid / kChunks;
  const int32_t* page_table = p.block_tables + b * p.block_table_stride;
  const int table_tokens = p.table_pages * p.page_size;  // positions block_tables can map
  auto page_of = [&](int pos) { return p.page_shift >= 0 ? pos >> p.page_shift : pos / p.page_size; };
  // Page ids of this split's local tile `tile` (global tile split + tile * num_splits), -1 past `end`.
  auto fetch_pages = [&](int tile, int end, int (&pages)[kRowsPerThread]) {
    const int pos0 = (split + tile * num_splits) * kBlockN + copy_row;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int pos = pos0 + i * kRowStep;
      pages[i] = pos < end ? __ldg(page_table + page_of(pos)) : -1;
    }
  };

  pdl_wait();  // q, the cache and the index tensors may be written by the previous kernel
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

  const T* k_head = static_cast<const T*>(p.k_cache) + kv_head * p.k_stride_head + copy_chunk * 8;
  const T* v_head = static_cast<const T*>(p.v_cache) + kv_head * p.v_stride_head + copy_chunk * 8;
  auto issue_tile = [&](int tile, int stage, const int (&tile_pages)[kRowsPerThread]) {
    const int pos0 = (split + tile * num_splits) * kBlockN + copy_row;
    T* dst_k = s_k + stage * Cfg::kTileElems;
    T* dst_v = s_v + stage * Cfg::kTileElems;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int pos = pos0 + i * kRowStep, r = copy_row + i * kRowStep;
      const bool ok = pos < kv_len;  // zero-fill past the request (masked below, never read)
      const int64_t page = ok ? tile_pages[i] : 0;
      const int64_t slot = ok ? pos - page_of(pos) * p.page_size : 0;
      cp_async16(dst_k + swz<D>(r, copy_chunk), k_head + page * p.k_stride_page + slot * p.k_stride_tok, ok);
      cp_async16(dst_v + swz<D>(r, copy_chunk), v_head + page * p.v_stride_page + slot * p.v_stride_tok, ok);
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
  pdl_launch_dependents();  // the next kernel may start its launch; it waits for our completion anyway

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

  const int pair = b * p.num_kv_heads + kv_head;
  const int num_items = p.group * (D / 4);
  auto out_ptr = [&](int r, int c4) {
    return static_cast<T*>(p.out) + int64_t(q_start) * p.out_stride_n + (kv_head * p.group + r) * p.out_stride_h +
           c4 * 4;
  };
  auto store_out = [&](int r, int c4, float4 acc, float inv, float lse_log2) {
    *reinterpret_cast<uint2*>(out_ptr(r, c4)) =
        make_uint2(pack2<T>(acc.x * inv, acc.y * inv), pack2<T>(acc.z * inv, acc.w * inv));
    if (c4 == 0 && p.lse != nullptr)
      p.lse[int64_t(q_start) * p.num_qo_heads + kv_head * p.group + r] = lse_log2 * 0.6931471805599453f;
  };
  // Partial state of (pair, split): O normalized, lse in the log2 domain (-inf: saw no key).
  float* part_o = p.partial_o + int64_t(pair) * num_splits * p.group * D;
  float* part_lse = p.partial_lse + int64_t(pair) * num_splits * p.group;
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
      store_out(r, c4, acc, inv, lse_log2);
    } else {
      __stcg(reinterpret_cast<float4*>(part_o + (split * p.group + r) * D + c4 * 4),
             make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv));
      if (c4 == 0) __stcg(part_lse + split * p.group + r, lse_log2);
    }
  }
  if (active_splits == 1) return;

  // Last split of the pair merges every split's state (the counter wraps back to 0 for the next call).
  // Thread 0 releases the CTA's partial stores (ordered before it by the barrier; the fence is
  // cumulative) and, if last, acquires the other splits' (the grid-sync pattern of cooperative groups,
  // with acq_rel fences instead of the sequentially consistent __threadfence).
  __shared__ bool s_last;
  __syncthreads();
  if (tid == 0) {
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
    s_last = atomicInc(&g_decode_counters[pair], active_splits - 1) == uint32_t(active_splits - 1);
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
  }
  __syncthreads();
  if (!s_last) return;
  merge_split_states<D, Cfg::kThreads>(reinterpret_cast<float*>(smem + Cfg::kSmemQ), part_o, part_lse, active_splits,
                                       p.group, [&](int r, int c4, float4 acc, float lse_log2) {
                                         store_out(r, c4, acc, 1.f, lse_log2);
                                       });
}

template <typename T, int D>
cudaError_t prepare_decode_kernel() {
  constexpr int kMaxDevices = 64;
  static bool ready[kMaxDevices] = {};
  int device = 0;
  if (const cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) return err;
  if (device < kMaxDevices && ready[device]) return cudaSuccess;
  const cudaError_t err = cudaFuncSetAttribute(decode_attention_kernel<T, D>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, DecodeConfig<T, D>::kSmem);
  if (err == cudaSuccess && device < kMaxDevices) ready[device] = true;
  return err;
}

template <typename T, int D>
cudaError_t launch_decode(const DecodeParams& p, cudaStream_t stream) {
  if (const cudaError_t err = prepare_decode_kernel<T, D>(); err != cudaSuccess) return err;
  return launch_pdl(decode_attention_kernel<T, D>, dim3(p.num_splits, p.num_kv_heads, p.batch),
                    dim3(DecodeConfig<T, D>::kThreads), DecodeConfig<T, D>::kSmem, stream, p);
}

template <typename T, int D>
int decode_ctas_per_sm() {
  static const int cached = [] {
    int blocks = 0;
    if (prepare_decode_kernel<T, D>() != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, decode_attention_kernel<T, D>,
                                                      DecodeConfig<T, D>::kThreads,
                                                      DecodeConfig<T, D>::kSmem) != cudaSuccess) {
      cudaGetLastError();  // a failed query leaves no sticky error behind
      return 1;
    }
    return blocks > 0 ? blocks : 1;
  }();
  return cached;
}

}  // namespace ssdk::tree_attn

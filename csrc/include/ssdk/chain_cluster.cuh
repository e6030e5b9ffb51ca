// verify_chain for batches (B >= 2) in one launch, from logits without top-k / top-p / Saguaro: one
// thread-block cluster of C CTAs per request (sm_90), CTA `rank` owning the vocabulary slice
// [rank * chunk, (rank + 1) * chunk) of every row of its request (K + 1 target rows, then K draft rows when
// the call has draft logits):
//   1. the CTA streams its slice of each row in statistics tiles (16384 entries of 16-bit logits, 8192 of
//      fp32: the tiles and fold of stats_kernel) through kClusterStages cp.async stages; each thread copies
//      and folds only its own slots, so the loop has no barrier. Between tiles, stochastic requests draw
//      their slice's race bounds (see verify.cuh) while the next tiles are in flight;
//   2. each row's partial over the slice -> partials[row * C + rank], a fence, the cluster barrier;
//   3. every CTA decides the request (decide_chain: the same partials merged in the same order, so the same
//      bits and decision in every CTA), then races over its slice of the final row (race_chunk: rows this
//      CTA read a few microseconds earlier, so the second read is mostly L2);
//   4. picks -> picks[b * C + rank], a fence, the cluster barrier; rank 0 reduces them and writes the
//      request's outputs.
// The cluster barrier is the only hand-off: no counters, atomics or spin-waits, so no zero_kernel, and the
// cluster's CTAs are co-scheduled by the hardware, so no residency assumption. Against stats_kernel +
// verify_kernel this drops two launches, the per-request ready count and every sample CTA's redundant
// decision; against chain_resident (B = 1) it holds no row in shared memory past its fold.
#pragma once
#include "ssdk/verify.cuh"

namespace ssdk::sampling {

constexpr int kClusterStages = 3;    // statistics tiles in flight per CTA (32 KB each)
constexpr int kClusterMaxRows = 64;  // rows per request: 2K + 1 (K + 1 without draft logits)

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads, 2) chain_cluster_kernel(VerifyArgs<T> a) {
  extern __shared__ uint4 cluster_smem[];  // kClusterStages tiles
  __shared__ Stat s_part[kClusterMaxRows][kThreads / 32];
  __shared__ Decision dec;
  __shared__ ChainToken s_tok[kCachedPositions];
  constexpr int kTile = StatTile<T, VEC>::kEntries;
  const int C = a.S, b = static_cast<int>(blockIdx.x) / C, rank = static_cast<int>(blockIdx.x) % C;
  const int R = a.map.rows_per_req, lo = rank * a.chunk, hi = min(a.vocab, lo + a.chunk);
  const int tiles = (hi - lo + kTile - 1) / kTile, items = R * tiles;  // item = row * tiles + tile
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  pdl_wait();  // the logits may come from the previous kernel of the stream
  pdl_launch_dependents();
  auto stage = [&](int item) {
    return AsyncTile<T, VEC>{reinterpret_cast<Vec<T, VEC>*>(cluster_smem) + (item % kClusterStages) * kTileVecs * kThreads};
  };
  auto tile_lo = [&](int item) { return lo + (item % tiles) * kTile; };
  auto issue = [&](int item) {  // commits one cp.async group, empty past the last item
    if (item < items) stage(item).load(a.map.row(b * R + item / tiles), tile_lo(item), min(hi, tile_lo(item) + kTile));
    else asm volatile("cp.async.commit_group;" ::: "memory");
  };
#pragma unroll
  for (int i = 0; i < kClusterStages; ++i) issue(i);
  for (int i = threadIdx.x; i <= a.map.K && i < kCachedPositions; i += kThreads) s_tok[i] = load_chain_token(a, b, i);
  const uint64_t offset = run_offset(a.offset, a.offset_tensor);
  float scale, inv_t;
  temperature_scales(a.temperature, b, scale, inv_t);
  // This slice's race bounds, a share per item: groups [g_lo, g_hi) (a slice ends on a group boundary).
  int8_t* bounds = a.race_bounds != nullptr && scale > 0.f ? a.race_bounds + static_cast<int64_t>(b) * a.bounds_stride : nullptr;
  const int g_lo = lo / 4, g_hi = min(a.bounds_stride, (lo + a.chunk) / 4), g_share = (g_hi - g_lo + items - 1) / items;

  Stat st = empty_stat();
  for (int i = 0; i < items; ++i) {
    AsyncTile<T, VEC>::template wait<kClusterStages - 1>();  // item i's group has landed
    const T* row = a.map.row(b * R + i / tiles);
    st = merge(st, stage(i).stats(row, tile_lo(i), min(hi, tile_lo(i) + kTile), scale), scale);
    issue(i + kClusterStages);
    if (bounds != nullptr) {
      const int g_end = min(g_hi, g_lo + (i + 1) * g_share);
      for (int g = g_lo + i * g_share + static_cast<int>(threadIdx.x); g < g_end; g += kThreads)
        bounds[g] = race_bound(a.seed, offset, b, g);
    }
    if (i % tiles == tiles - 1) {  // the row's last tile: its warp partials
      st = warp_merge(st, scale);
      if (lane == 0) s_part[i / tiles][warp] = st;
      st = empty_stat();
    }
  }
  __syncthreads();  // s_part, and the bounds race_chunk reads below (this CTA's own)
  if (threadIdx.x < R) {
    Stat part = s_part[threadIdx.x][0];
    for (int w = 1; w < kThreads / 32; ++w) part = merge(part, s_part[threadIdx.x][w], scale);
    a.partials[(static_cast<int64_t>(b) * R + threadIdx.x) * C + rank] = part;
    __threadfence();
  }
  cluster_sync();  // every partial of the request (release / acquire)

  decide_chain<T, kChain>(a, b, offset, s_tok, dec);
  const bool sample = dec.token < 0;  // (the same in every CTA of the cluster)
  if (sample) {
    const Pick pick = race_chunk<T, VEC>(a, dec, b, lo, hi, offset);
    if (threadIdx.x == 0) {
      a.picks[static_cast<int64_t>(b) * C + rank] = pick;
      __threadfence();
    }
  }
  cluster_sync();  // every pick of the request
  if (rank != 0 || warp != 0) return;
  int token = dec.token;
  if (sample) {
    const Pick best = warp_reduce_picks(a.picks + static_cast<int64_t>(b) * C, C);
    token = best.score > 0.f ? best.idx : best.fb_idx;
  }
  const int L = dec.accept_len, K = a.map.K;
  if (lane == 0) a.accept_len[b] = L;
  for (int i = lane; i < a.out_width; i += 32)
    a.out_tokens[static_cast<int64_t>(b) * a.out_width + i] =
        i < L ? load_id(a.ids, a.ids_int64, static_cast<int64_t>(b) * K + i) : i == L ? token : -1;
}

}  // namespace ssdk::sampling

// verify_chain for a few requests in one launch (stochastic with draft logits, no top-k / top-p / Saguaro):
// CTA c copies its vocabulary slice [c * chunk2, (c + 1) * chunk2) of every target and draft row into
// shared memory once, and everything after that reads the copy:
//   1. each row's partial statistics over the slice (a half warp per row) -> partials[row * C + c];
//   2. a grid barrier (a counter in the call's workspace, zeroed by zero_kernel; the grid is at most one
//      CTA per SM, so every CTA is resident), then every CTA merges every row's C partials in the same
//      order and decides every request (the acceptance tests of decide_chain, same draws);
//   3. the exponential race r_v / E_v over the slice of each stochastic request's final row (r = max(p -
//      q, 0), p / E as the fallback; every entry drawn, as final_pass does without race bounds) -> picks;
//      the last CTA reduces the picks and writes the outputs.
// Against stats_kernel + verify_kernel this drops a launch, one of the two global hand-offs, the final
// row's second read and the race bounds: the path small batches pay for in latency, not bandwidth.
#pragma once
#include "ssdk/verify.cuh"

namespace ssdk::sampling {

constexpr int kResidentMaxRows = 64;    // B * (2K + 1) rows (and B * (K + 1) chain tokens) at most
constexpr int kResidentMaxCtas = 256;   // C <= 16 * kResidentPartsPerLane
constexpr int kResidentPartsPerLane = 16;
constexpr int kHalfWarps = kThreads / 16;

// Merge of one row's C partials by a half warp (lanes 16h .. 16h + 15, every lane gets the result): the
// row max first, then each partial's sum rescaled once. Every CTA runs the same order on the same
// partials, so every CTA gets the same bits and the same decisions.
__device__ __forceinline__ Stat half_warp_merge_partials(const Stat* parts, int count, float scale) {
  const int sub = threadIdx.x & 15;
  Stat mine[kResidentPartsPerLane];
  float m = -INFINITY;
#pragma unroll
  for (int i = 0; i < kResidentPartsPerLane; ++i) {
    const int c = sub + 16 * i;
    mine[i] = c < count ? Stat{__ldcg(&parts[c].m), __ldcg(&parts[c].s), __ldcg(&parts[c].idx)} : empty_stat();
    m = fmaxf(m, mine[i].m);
  }
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float s = 0.f;
  int idx = INT_MAX;
#pragma unroll
  for (int i = 0; i < kResidentPartsPerLane; ++i) {
    if (mine[i].s != 0.f) s += mine[i].s * fast_exp2((mine[i].m - m) * scale);
    if (mine[i].m == m) idx = min(idx, mine[i].idx);
  }
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) {
    s += __shfl_xor_sync(0xffffffffu, s, o);  // commutative pairs: every lane gets the same bits
    idx = min(idx, __shfl_xor_sync(0xffffffffu, idx, o));
  }
  return {m, s, idx};
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads, 1) chain_resident_kernel(VerifyArgs<T> a) {
  extern __shared__ uint4 resident_smem[];
  const Vec<T, VEC>* slice = reinterpret_cast<const Vec<T, VEC>*>(resident_smem);
  __shared__ RowDist s_dist[kResidentMaxRows];
  __shared__ ChainToken s_tok[kResidentMaxRows];
  __shared__ int s_len[kResidentMaxRows];
  __shared__ int s_last;
  const int K = a.map.K, rpr = a.map.rows_per_req, R = a.num_rows, C = static_cast<int>(gridDim.x);
  const int c = static_cast<int>(blockIdx.x), lo = c * a.chunk2;
  const int nvec = (min(a.vocab, lo + a.chunk2) - lo) / VEC, stride = a.chunk2 / VEC;  // vectors of the slice, per row
  const int lane = threadIdx.x & 31, half = threadIdx.x >> 4, sub = threadIdx.x & 15;

  // Inputs only before the dependency wait (zero_kernel passed its own): the slices and the chain tokens.
  for (int i = threadIdx.x; i < R * nvec; i += kThreads) {
    const int r = i / nvec, j = i - r * nvec;
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(slice + r * stride + j));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(a.map.row(r) + lo + j * VEC) : "memory");
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
  for (int i = threadIdx.x; i < a.batch * (K + 1); i += kThreads) s_tok[i] = load_chain_token(a, i / (K + 1), i % (K + 1));
  if (threadIdx.x < a.batch) s_len[threadIdx.x] = K;
  const uint64_t offset = run_offset(a.offset, a.offset_tensor);
  pdl_wait();
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  __syncthreads();

  // 1. Partial statistics of every row over the slice, a half warp per row (loop uniform per warp).
  for (int base = 0; base < R; base += kHalfWarps) {
    const int r = base + half;
    float scale = 0.f, inv_t;
    Stat st = empty_stat();
    if (r < R) {
      temperature_scales(a.temperature, r / rpr, scale, inv_t);
      for (int j = sub; j < nvec; j += 16) {
        const Vec<T, VEC> d = slice[r * stride + j];
        float x[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) x[e] = to_float(d.data[e]);
        const int first = lo + j * VEC;
        accumulate_block(st, x, [&](int k) { return first + k; }, scale);
      }
    }
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) {
      const Stat other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o),
                       __shfl_xor_sync(0xffffffffu, st.idx, o)};
      st = merge(st, other, scale);
    }
    if (r < R && sub == 0) a.partials[static_cast<int64_t>(r) * C + c] = st;
  }

  // 2. Grid barrier, then every row's distribution and every request's decision.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    atomicAdd(a.ready, 1u);
    unsigned arrived;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(arrived) : "l"(a.ready) : "memory");
      if (arrived >= static_cast<unsigned>(C)) break;
      __nanosleep(32);
    }
    __threadfence();
  }
  __syncthreads();
  pdl_launch_dependents();  // every CTA is resident by now
  for (int base = 0; base < R; base += kHalfWarps) {
    const int r = min(base + half, R - 1);  // (lanes past R repeat the last row: the loop stays uniform)
    float scale, inv_t;
    temperature_scales(a.temperature, r / rpr, scale, inv_t);
    const Stat st = half_warp_merge_partials(a.partials + static_cast<int64_t>(r) * C, C, scale);
    if (base + half < R && sub == 0) s_dist[r] = {st.m, st.s, st.idx, 0u, 0xffffffffu, 1.f, scale, inv_t};
  }
  __syncthreads();
  for (int i = threadIdx.x; i < a.batch * K; i += kThreads) {  // acceptance tests, as decide_chain
    const int b = i / K, pos = i - b * K;
    const ChainToken tok = s_tok[b * (K + 1) + pos];
    const RowDist& pd = s_dist[b * rpr + pos];
    const bool in_vocab = tok.x >= 0 && tok.x < a.vocab;
    bool ok;
    if (chain_greedy(a, b)) {
      ok = tok.x == pd.argmax;
    } else {
      const float px = in_vocab ? row_prob(pd, tok.pl) : 0.f;
      const float qx = in_vocab ? row_prob(s_dist[b * rpr + K + 1 + pos], tok.qv) : 0.f;
      ok = uniform(a.seed, offset, b, kTagAccept, pos) * qx < px;
    }
    if (!ok) atomicMin(&s_len[b], pos);
  }
  __syncthreads();

  // 3. The race over this slice of each stochastic request's final row: one Philox group per thread and trip.
  for (int b = 0; b < a.batch; ++b) {
    if (chain_greedy(a, b)) continue;  // (uniform across the block)
    const int L = s_len[b];
    const RowDist& pd = s_dist[b * rpr + L];
    const RowDist& qd = s_dist[b * rpr + K + 1 + min(L, K - 1)];
    const bool residual = L < K;
    const T* prow = reinterpret_cast<const T*>(slice + (b * rpr + L) * stride);
    const T* qrow = reinterpret_cast<const T*>(slice + (b * rpr + K + 1 + min(L, K - 1)) * stride);
    const float p_inv = 1.f / pd.sum, q_inv = residual ? 1.f / qd.sum : 0.f;
    Pick pick{-INFINITY, INT_MAX, -INFINITY, INT_MAX};
    for (int g = threadIdx.x; g < nvec * (VEC / 4); g += kThreads) {
      const int v0 = lo + 4 * g;
      const uint4 w = philox_draws(a.seed, offset, b, kTagSample, static_cast<uint32_t>(v0) >> 2);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = row_weight(pd, to_float(prow[4 * g + e])) * p_inv;
        const float q = residual ? row_weight(qd, to_float(qrow[4 * g + e])) * q_inv : 0.f;
        const float weight = race_weight(word(w, e));
        offer(pick.score, pick.idx, fmaxf(p - q, 0.f) * weight, v0 + e);
        offer(pick.fb_score, pick.fb_idx, p * weight, v0 + e);
      }
    }
    pick = block_best(pick);
    if (threadIdx.x == 0) a.picks[static_cast<int64_t>(b) * C + c] = pick;
  }

  // The last CTA reduces every request's picks (a warp per request) and writes the outputs.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(a.final_count, 1u) == static_cast<unsigned>(C - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  for (int b = threadIdx.x >> 5; b < a.batch; b += kThreads / 32) {
    const int L = s_len[b];
    int token = s_dist[b * rpr + L].argmax;
    if (!chain_greedy(a, b)) {
      const Pick best = warp_reduce_picks(a.picks + static_cast<int64_t>(b) * C, C);
      token = best.score > 0.f ? best.idx : best.fb_idx;
    }
    if (lane == 0) a.accept_len[b] = L;
    for (int i = lane; i < a.out_width; i += 32) {
      const int tok = i < L ? s_tok[b * (K + 1) + i].x : i == L ? token : -1;
      a.out_tokens[static_cast<int64_t>(b) * a.out_width + i] = tok;
    }
  }
}

}  // namespace ssdk::sampling

// verify_chain for a single request in one launch (stochastic with draft logits, no top-k / top-p / Saguaro):
// CTA c copies its vocabulary slice [c * chunk2, (c + 1) * chunk2) of every target and draft row into
// shared memory once, and everything after that reads the copy:
//   0. before the dependency wait (inputs only): the slices in flight, the draft tokens, temperatures,
//      the acceptance draws and this thread's race weights 1 / E_v (they depend on (seed, offset, request,
//      v) only, not on the decision);
//   1. each row's partial statistics over the slice (a warp per row) -> partials[row * C + c], and the
//      target / draft logits of the draft tokens that fall in the slice -> token_logits;
//   2. a grid barrier (a counter in the call's workspace, zeroed by zero_kernel; the grid is at most one
//      CTA per SM, so every CTA is resident), then every CTA merges every row's C partials in the same
//      order and decides every request (the acceptance tests of decide_chain, same draws);
//   3. the exponential race r_v / E_v over the slice of each stochastic request's final row (r = max(p -
//      q, 0), p / E as the fallback, every entry drawn) -> picks; the last CTA reduces them and writes the
//      outputs.
// Against stats_kernel + verify_kernel this drops a launch, one of the two global hand-offs, the final
// row's second read, the dependent token loads and the race bounds: one request pays in latency, not bytes.
// The kernel is written for up to kResidentMaxBatch requests; the launcher enables it for B = 1.
// The grid barrier needs every CTA resident at once: the launcher sizes the grid to at most the device's SM
// count (one CTA per SM always fits), which a context confined to fewer SMs (green contexts) would break.
#pragma once
#include "ssdk/verify.cuh"

namespace ssdk::sampling {

constexpr int kResidentThreads = 512;
constexpr int kResidentWarps = kResidentThreads / 32;
constexpr int kResidentMaxBatch = 1;  // B = 2 ran 21.6 us here vs 19.0 on the two-launch path (H100)
constexpr int kResidentMaxRows = 64;                        // B * (2K + 1)
constexpr int kResidentMaxChunk = 2048;                     // slice entries per CTA
constexpr int kResidentEntries = kResidentMaxChunk / kResidentThreads;  // race entries per thread and request
constexpr int kResidentMaxCtas = 256;
constexpr int kResidentPartsPerLane = kResidentMaxCtas / 32;

// Merge of one row's C partials by a warp (every lane gets the result): the row max first, then each
// partial's sum rescaled once. Every CTA runs the same order on the same partials, so every CTA gets the
// same bits and the same decisions.
__device__ __forceinline__ Stat warp_merge_partials(const Stat* parts, int count, float scale) {
  const int lane = threadIdx.x & 31;
  Stat mine[kResidentPartsPerLane];
  float m = -INFINITY;
#pragma unroll
  for (int i = 0; i < kResidentPartsPerLane; ++i) {
    const int c = lane + 32 * i;
    mine[i] = c < count ? Stat{__ldcg(&parts[c].m), __ldcg(&parts[c].s), __ldcg(&parts[c].idx)} : empty_stat();
    m = fmaxf(m, mine[i].m);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float s = 0.f;
  int idx = INT_MAX;
#pragma unroll
  for (int i = 0; i < kResidentPartsPerLane; ++i) {
    if (mine[i].s != 0.f) s += mine[i].s * fast_exp2((mine[i].m - m) * scale);
    if (mine[i].m == m) idx = min(idx, mine[i].idx);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_xor_sync(0xffffffffu, s, o);  // commutative pairs: every lane gets the same bits
    idx = min(idx, __shfl_xor_sync(0xffffffffu, idx, o));
  }
  return {m, s, idx};
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kResidentThreads, 1) chain_resident_kernel(VerifyArgs<T> a) {
  extern __shared__ uint4 resident_smem[];
  const Vec<T, VEC>* slice = reinterpret_cast<const Vec<T, VEC>*>(resident_smem);
  __shared__ RowDist s_dist[kResidentMaxRows];
  __shared__ int s_ids[kResidentMaxRows];  // B * K draft tokens
  __shared__ float s_accept_u[kResidentMaxRows];
  __shared__ float s_scale[kResidentMaxBatch], s_inv_t[kResidentMaxBatch];
  __shared__ int s_len[kResidentMaxBatch];
  __shared__ int s_last;
  // Race weights 1 / E of entries lo + threadIdx.x + e * threads, per request: thread-private slots, each
  // drawn by one out-of-line Philox call (inlined copies were a third of the kernel's code, fetched cold).
  __shared__ float s_weight[kResidentMaxBatch * kResidentEntries][kResidentThreads];
  const int K = a.map.K, rpr = a.map.rows_per_req, R = a.num_rows, B = a.batch, C = static_cast<int>(gridDim.x);
  const int c = static_cast<int>(blockIdx.x), lo = c * a.chunk2;
  const int n = min(a.vocab, lo + a.chunk2) - lo, nvec = n / VEC, stride = a.chunk2 / VEC;  // slice entries, vectors
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const uint64_t offset = run_offset(a.offset, a.offset_tensor);

  // 0. Inputs only before the dependency wait (zero_kernel passed its own).
  for (int i = threadIdx.x; i < R * nvec; i += kResidentThreads) {
    const int r = i / nvec, j = i - r * nvec;
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(slice + r * stride + j));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(a.map.row(r) + lo + j * VEC) : "memory");
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
  if (threadIdx.x < B * K) {
    const int b = threadIdx.x / K, pos = threadIdx.x - b * K;
    s_ids[threadIdx.x] = load_id(a.ids, a.ids_int64, threadIdx.x);
    s_accept_u[threadIdx.x] = uniform(a.seed, offset, b, kTagAccept, pos);
  }
  if (threadIdx.x < B) {
    float scale, inv_t;
    temperature_scales(a.temperature, threadIdx.x, scale, inv_t);
    s_scale[threadIdx.x] = scale;
    s_inv_t[threadIdx.x] = inv_t;
    s_len[threadIdx.x] = K;
  }
  for (int b = 0; b < B; ++b) {
    if (chain_greedy(a, b)) continue;
    for (int e = 0; e < kResidentEntries && threadIdx.x + e * kResidentThreads < n; ++e)
      s_weight[b * kResidentEntries + e][threadIdx.x] =
          race_weight_at(a.seed, offset, b, lo + static_cast<int>(threadIdx.x) + e * kResidentThreads);
  }
  pdl_wait();
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  __syncthreads();

  // 1. Partial statistics over the slice, a warp per row; the draft tokens' logits from their owner CTA.
  for (int r = warp; r < R; r += kResidentWarps) {
    const float scale = s_scale[r / rpr];
    Stat st = empty_stat();
    for (int j = lane; j < nvec; j += 32) {
      const Vec<T, VEC> d = slice[r * stride + j];
      float x[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) x[k] = to_float(d.data[k]);
      const int first = lo + j * VEC;
      accumulate_block(st, x, [&](int k) { return first + k; }, scale);
    }
    st = warp_merge(st, scale);
    if (lane == 0) {
      a.partials[static_cast<int64_t>(r) * C + c] = st;
      __threadfence();  // before the barrier's count
    }
  }
  for (int i = threadIdx.x; i < B * K; i += kResidentThreads) {
    const int x = s_ids[i] - lo, b = i / K, pos = i - b * K;
    if (x < 0 || x >= n) continue;
    const T* target = reinterpret_cast<const T*>(slice + (b * rpr + pos) * stride);
    const T* draft = reinterpret_cast<const T*>(slice + (b * rpr + K + 1 + pos) * stride);
    a.token_logits[2 * i] = to_float(target[x]);
    a.token_logits[2 * i + 1] = to_float(draft[x]);
    __threadfence();
  }

  // 2. Grid barrier (writers fenced above), then every row's distribution and every request's decision.
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
  float pl = 0.f, qv = 0.f;  // thread i < B * K: draft token i's logits (in flight during the merges)
  if (threadIdx.x < B * K) {
    pl = __ldcg(a.token_logits + 2 * threadIdx.x);
    qv = __ldcg(a.token_logits + 2 * threadIdx.x + 1);
  }
  for (int r = warp; r < R; r += kResidentWarps) {
    const int b = r / rpr;
    const Stat st = warp_merge_partials(a.partials + static_cast<int64_t>(r) * C, C, s_scale[b]);
    if (lane == 0) s_dist[r] = {st.m, st.s, st.idx, 0u, 0xffffffffu, 1.f, s_scale[b], s_inv_t[b]};
  }
  __syncthreads();
  if (threadIdx.x < B * K) {  // acceptance tests, as decide_chain
    const int b = threadIdx.x / K, pos = threadIdx.x - b * K, x = s_ids[threadIdx.x];
    const RowDist& pd = s_dist[b * rpr + pos];
    const bool in_vocab = x >= 0 && x < a.vocab;
    bool ok;
    if (!(s_scale[b] > 0.f)) {
      ok = x == pd.argmax;
    } else {
      const float px = in_vocab ? row_prob(pd, pl) : 0.f;
      const float qx = in_vocab ? row_prob(s_dist[b * rpr + K + 1 + pos], qv) : 0.f;
      ok = s_accept_u[threadIdx.x] * qx < px;
    }
    if (!ok) atomicMin(&s_len[b], pos);
  }
  __syncthreads();

  // 3. The race over this slice of each stochastic request's final row (weights drawn in step 0).
  for (int b = 0; b < B; ++b) {
    if (!(s_scale[b] > 0.f)) continue;  // (uniform across the block)
    const int L = s_len[b];
    const RowDist& pd = s_dist[b * rpr + L];
    const RowDist& qd = s_dist[b * rpr + K + 1 + min(L, K - 1)];
    const bool residual = L < K;
    const T* prow = reinterpret_cast<const T*>(slice + (b * rpr + L) * stride);
    const T* qrow = reinterpret_cast<const T*>(slice + (b * rpr + K + 1 + min(L, K - 1)) * stride);
    const float ps = pd.scale, pm = pd.max * ps, p_inv = 1.f / pd.sum;
    const float qs = qd.scale, qm = qd.max * qs, q_inv = residual ? 1.f / qd.sum : 0.f;
    Pick pick{-INFINITY, INT_MAX, -INFINITY, INT_MAX};
#pragma unroll
    for (int e = 0; e < kResidentEntries; ++e) {
      const int i = threadIdx.x + e * kResidentThreads;
      if (i >= n) break;
      const float p = fast_exp2(fmaf(to_float(prow[i]), ps, -pm)) * p_inv;
      const float q = residual ? fast_exp2(fmaf(to_float(qrow[i]), qs, -qm)) * q_inv : 0.f;
      const float weight = s_weight[b * kResidentEntries + e][threadIdx.x];
      offer(pick.score, pick.idx, fmaxf(p - q, 0.f) * weight, lo + i);
      offer(pick.fb_score, pick.fb_idx, p * weight, lo + i);
    }
    pick = block_best<kResidentThreads>(pick);
    if (threadIdx.x == 0) a.picks[static_cast<int64_t>(b) * C + c] = pick;
  }

  // The last CTA reduces every request's picks (a warp per request) and writes the outputs.
  if (threadIdx.x == 0) {  // (thread 0 wrote this CTA's picks)
    __threadfence();
    s_last = atomicAdd(a.final_count, 1u) == static_cast<unsigned>(C - 1);
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  if (warp < B) {
    const int b = warp, L = s_len[b];
    int token = s_dist[b * rpr + L].argmax;
    if (s_scale[b] > 0.f) {
      const Pick best = warp_reduce_picks(a.picks + static_cast<int64_t>(b) * C, C);
      token = best.score > 0.f ? best.idx : best.fb_idx;
    }
    if (lane == 0) a.accept_len[b] = L;
    for (int i = lane; i < a.out_width; i += 32)
      a.out_tokens[static_cast<int64_t>(b) * a.out_width + i] = i < L ? s_ids[b * K + i] : i == L ? token : -1;
  }
}

}  // namespace ssdk::sampling

// Fused sampling and speculative verification from logits (semantics: ssdk/ops/verify.py, reference:
// ssdk/ref/verify.py). One launch per call on the hot paths:
//
//   stats work   (row, chunk): online max / argmax / sum of exp of one vocabulary chunk of one row
//                -> partials; then bumps the request's counter.
//   final work   (request, chunk): waits (spinning on the counter) until the request's statistics
//                are complete, decides acceptance (every final CTA of the request decides redundantly:
//                a few loads), then, for stochastic requests, runs one Gumbel/exponential-race pass
//                over its chunk of the final row (residual max(p - q, 0), or p minus the rejected
//                children) -> picks; the last CTA of the request reduces the picks and writes outputs.
//
// Below kFusedMinBatch requests (verify.cu) the statistics run as their own launch instead (stats_kernel,
// one CTA per (row, chunk)) and verify_kernel follows as a programmatic dependent with final work only:
// two launches cost fewer dependent round trips than ticket + counter + spin when the batch is small.
// Both paths compute the same partials and merge them in the same order (identical outputs).
//
// Work items are handed out by an atomic ticket, so a final CTA only waits for stats work that was
// handed out before it, to CTAs already running: no deadlock whatever the CTA scheduling order.
// The ticket and per-request counters are device globals reset by the kernel itself, so the launch is
// CUDA-graph replayable; two of these launches must not run concurrently on one device.
// With top-k / top-p / Saguaro, a filter kernel (one CTA per row, radix selects) precomputes each
// row's distribution first and the verify kernel runs final work only.
#pragma once
#include "ssdk/sampling.cuh"

namespace ssdk::sampling {

constexpr int kMaxRequests = 1 << 16;
constexpr int kMaxTreeNodes = 1024;

__device__ unsigned int g_ticket;
__device__ unsigned int g_done;
__device__ unsigned int g_stats_count[kMaxRequests];
__device__ unsigned int g_final_count[kMaxRequests];

enum Mode : int { kSample = 0, kChain = 1, kChainProbs = 2, kTree = 3 };

// Row layout shared by the filter and verify kernels. "Stats rows" are numbered per request: chain
// request b owns rows b*rows_per_req + j, j <= K a target row, j > K draft row j-K-1; otherwise stats
// row r is target row r (tree node r, or sample row r).
template <typename T>
struct RowMap {
  const T* target;
  int64_t target_stride;
  const T* draft;
  int64_t draft_stride;
  int rows_per_req;           // chain: K+1 (+K with draft logits); 0 otherwise
  int K;
  const int32_t* qo_indptr;   // tree: node -> request; nullptr: row r is request r
  int batch;

  __device__ __forceinline__ int request_of(int r) const {
    if (rows_per_req > 0) return r / rows_per_req;
    if (qo_indptr == nullptr) return r;
    int lo = 0, hi = batch;  // largest b with qo_indptr[b] <= r
    while (hi - lo > 1) {
      const int mid = (lo + hi) >> 1;
      if (qo_indptr[mid] <= r) lo = mid; else hi = mid;
    }
    return lo;
  }
  __device__ __forceinline__ bool is_draft(int r) const { return rows_per_req > 0 && r % rows_per_req > K; }
  __device__ __forceinline__ const T* row(int r) const {
    if (rows_per_req == 0) return target + r * target_stride;
    const int b = r / rows_per_req, j = r % rows_per_req;
    if (j <= K) return target + (static_cast<int64_t>(b) * (K + 1) + j) * target_stride;
    return draft + (static_cast<int64_t>(b) * K + (j - K - 1)) * draft_stride;
  }
};

__device__ __forceinline__ void temperature_scales(const float* temperature, int req, float& scale, float& inv_t) {
  const float t = temperature ? temperature[req] : 0.f;
  scale = t > 0.f ? kLog2e / t : 0.f;
  inv_t = t > 0.f ? 1.f / t : 0.f;
}

// ------------------------------------------------------------------ filter kernel
template <typename T>
struct FilterArgs {
  RowMap<T> map;
  int num_rows, vocab;
  bool vec_target, vec_draft;
  const float* temperature;
  const int32_t* top_k;
  const float* top_p;
  const float* sag_x;   // nullptr: no Saguaro rescaling
  int sag_f;
  bool sag_target;      // rescale target rows too (sampling / drafting), not only draft rows
  RowDist* dists;       // [num_rows]
};

__device__ __forceinline__ unsigned long long block_sum_u64(unsigned long long v) {
  __shared__ unsigned long long warp_sums[kThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  v = 0;
  for (int w = 0; w < kThreads / 32; ++w) v += warp_sums[w];
  return v;
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) filter_kernel(FilterArgs<T> a) {
  __shared__ unsigned long long hist[kRadixBins];
  pdl_wait();
  pdl_launch_dependents();
  const int r = blockIdx.x;
  const int req = a.map.request_of(r);
  const bool draft = a.map.is_draft(r);
  const T* row = a.map.row(r);
  const bool vec_ok = draft ? a.vec_draft : a.vec_target;
  const int V = a.vocab;
  float scale, inv_t;
  temperature_scales(a.temperature, req, scale, inv_t);
  const Stat st = row_stats<T, VEC>(row, 0, V, vec_ok, 0.f);
  RowDist d{st.m, 1.f, st.idx, 0u, 0xffffffffu, 1.f, scale, inv_t};
  if (scale > 0.f) {
    const int k = a.top_k ? a.top_k[req] : 0;
    if (k > 0 && k < V) d.keep_key = radix_select(row, V, static_cast<unsigned long long>(k),
                                                  [](uint32_t, float) { return 1u; }, hist);
    const float p = a.top_p ? a.top_p[req] : 1.f;
    if (p < 1.f) {
      const uint32_t keep = d.keep_key;
      const float m = d.max;
      auto mass = [=](uint32_t key, float x) { return key >= keep ? fixed_mass(exp2f((x - m) * scale)) : 0u; };
      unsigned long long total = 0;
      for_each<T, VEC>(row, 0, V, vec_ok, [&](int, float x) { total += mass(order_key(x), x); });
      total = block_sum_u64(total);
      unsigned long long target = static_cast<unsigned long long>(static_cast<double>(total) * fmaxf(p, 0.f));
      target = target == 0 ? 1 : target;
      d.keep_key = radix_select(row, V, target, mass, hist);
    }
    if (a.sag_x != nullptr && (draft || a.sag_target)) {
      d.sag_key = radix_select(row, V, static_cast<unsigned long long>(a.sag_f + 1),
                               [](uint32_t, float) { return 1u; }, hist);
      d.sag_x = a.sag_x[req];
    }
    float sum = 0.f;
    for_each<T, VEC>(row, 0, V, vec_ok, [&](int, float x) { sum += row_weight(d, x); });
    d.sum = block_sum_f(sum);
  }
  if (threadIdx.x == 0) a.dists[r] = d;
}

// ------------------------------------------------------------------ verify kernel
template <typename T>
struct VerifyArgs {
  RowMap<T> map;              // target / draft logits (FI mode: target = probabilities, T = float)
  const float* draft_probs;   // [B*K, V] rows, or nullptr
  int64_t draft_probs_stride;
  const void* ids;            // chain: [B, K] draft tokens; tree: [N] node tokens
  bool ids_int64;
  const int32_t* parents;     // tree
  const float* temperature;   // [B] or nullptr (all greedy)
  const RowDist* dists;       // filter path: [num_rows]; nullptr: merged from the statistics partials
  Stat* partials;             // [num_rows * S]
  Pick* picks;                // [B * S2]
  int32_t* out_tokens;        // [B, out_width]
  int32_t* accept_len;        // [B]
  int32_t* accept_nodes;      // tree: [B, out_width]
  int32_t* fi_accepted;       // chain_speculative_sampling counters (+=)
  int32_t* fi_emitted;
  int64_t* sampled;           // sample mode: [B]
  int out_width;
  int batch, vocab, num_rows;
  int S, chunk, S2, chunk2, lag;
  bool fused, vec_target, vec_draft;
  bool stats_pass;            // host: launch stats_kernel before an unfused verify_kernel
  uint64_t seed, offset;
  const int64_t* offset_tensor;
};

// Decision shared by the threads of a final CTA.
struct Decision {
  int accept_len;
  int final_row;     // target row of the final sample (global), -1: none (empty tree)
  int q_row;         // draft row for the residual (stats row with draft logits / draft-probs row), -1: none
  int token;         // decided final token (greedy), -1: sample
  int tree_node;     // tree: final node (local); its children are excluded when exclude is set
  int exclude;
  int fi_count;      // chain_speculative_sampling: tests passed, every position tested
  RowDist p, q;
};

struct Work {
  bool stats;
  int row, chunk, req;
};

template <typename T>
__device__ __forceinline__ Work decode_work(const VerifyArgs<T>& a, int t) {
  if (!a.fused) return {false, -1, t % a.S2, t / a.S2};
  const int rpr = a.map.rows_per_req;
  if (rpr == 0) {  // tree: every stats item first
    const int stats_items = a.num_rows * a.S;
    if (t < stats_items) return {true, t / a.S, t % a.S, -1};
    t -= stats_items;
    return {false, -1, t % a.S2, t / a.S2};
  }
  // chain: stats of requests [0, lag), then (stats of b, finals of b - lag) groups, then the last finals
  const int ns = rpr * a.S, lag = a.lag;
  if (t < lag * ns) return {true, t / a.S, t % a.S, t / ns};
  t -= lag * ns;
  const int group = ns + a.S2;
  if (t < (a.batch - lag) * group) {
    const int b = lag + t / group, j = t % group;
    if (j < ns) return {true, b * rpr + j / a.S, j % a.S, b};
    return {false, -1, j - ns, b - lag};
  }
  t -= (a.batch - lag) * group;
  return {false, -1, t % a.S2, a.batch - lag + t / a.S2};
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// The distribution of a stats row, merged from its S vocabulary partials by one warp (lanes load the
// partials in parallel, then a butterfly merge): call with the whole warp; every lane gets the result.
template <typename T>
__device__ __forceinline__ RowDist warp_dist_of(const VerifyArgs<T>& a, int stats_row, int req) {
  if (a.dists) return a.dists[stats_row];
  float scale, inv_t;
  temperature_scales(a.temperature, req, scale, inv_t);
  Stat st = empty_stat();
  const Stat* p = a.partials + static_cast<int64_t>(stats_row) * a.S;
  for (int c = threadIdx.x & 31; c < a.S; c += 32) {
    const Stat part{__ldcg(&p[c].m), __ldcg(&p[c].s), __ldcg(&p[c].idx)};
    st = merge(st, part, scale);
  }
  st = warp_merge(st, scale);
  return {st.m, st.s, st.idx, 0u, 0xffffffffu, 1.f, scale, inv_t};
}

// Best pick of a request's S2 chunk picks, by one warp (every lane gets the result).
__device__ __forceinline__ Pick warp_reduce_picks(const Pick* picks, int count) {
  Pick best{-INFINITY, INT_MAX, -INFINITY, INT_MAX};
  for (int c = threadIdx.x & 31; c < count; c += 32)
    best = better(best, Pick{__ldcg(&picks[c].score), __ldcg(&picks[c].idx), __ldcg(&picks[c].fb_score),
                             __ldcg(&picks[c].fb_idx)});
  return warp_best(best);
}

__device__ __forceinline__ int load_id(const void* ids, bool int64, int64_t i) {
  return int64 ? static_cast<int>(static_cast<const int64_t*>(ids)[i]) : static_cast<const int32_t*>(ids)[i];
}

// Chain decision (kChain: logits, kChainProbs: flashinfer-style probabilities). Logit chains take one
// position per warp, 0..K (K: the bonus row, no test): the draft token and its logits are loaded while the
// warp merges the position's target (and draft) statistics, and the distributions of the first
// kCachedPositions positions stay in shared memory, so the final row costs no further round trip.
constexpr int kCachedPositions = 32;

template <typename T, int MODE>
__device__ void decide_chain(const VerifyArgs<T>& a, int b, uint64_t offset, Decision& dec) {
  __shared__ int first_reject, passed;
  __shared__ RowDist s_pd[kCachedPositions], s_qd[kCachedPositions];
  const int K = a.map.K, V = a.vocab, rpr = a.map.rows_per_req;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, num_warps = blockDim.x >> 5;
  const float t = a.temperature ? a.temperature[b] : 0.f;
  const bool greedy = MODE == kChain && !(t > 0.f);
  const bool q_logits = MODE == kChain && !greedy && a.draft_probs == nullptr && a.map.draft != nullptr;
  if (threadIdx.x == 0) {
    first_reject = K;
    passed = 0;
  }
  __syncthreads();
  if constexpr (MODE == kChainProbs) {
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
      const int x = load_id(a.ids, a.ids_int64, static_cast<int64_t>(b) * K + i);
      const bool in_vocab = x >= 0 && x < V;
      const float px = in_vocab ? to_float(a.map.target[(static_cast<int64_t>(b) * (K + 1) + i) * a.map.target_stride + x]) : 0.f;
      const float qx = in_vocab ? a.draft_probs[(static_cast<int64_t>(b) * K + i) * a.draft_probs_stride + x] : 0.f;
      const bool ok = uniform(a.seed, offset, b, kTagAccept, i) * qx < px;
      if (!ok) atomicMin(&first_reject, i);
      if (ok) atomicAdd(&passed, 1);
    }
  } else {
    for (int i = warp; i <= K; i += num_warps) {
      // Token and its logits first (every lane, broadcast loads), so they overlap the partials' loads.
      const int x = i < K ? load_id(a.ids, a.ids_int64, static_cast<int64_t>(b) * K + i) : -1;
      const bool in_vocab = x >= 0 && x < V;
      float pl = 0.f, qv = 0.f;
      if (!greedy && in_vocab) {
        pl = to_float(a.map.row(b * rpr + i)[x]);
        if (a.draft_probs) qv = a.draft_probs[(static_cast<int64_t>(b) * K + i) * a.draft_probs_stride + x];
        else if (q_logits) qv = to_float(a.map.row(b * rpr + K + 1 + i)[x]);
      }
      const RowDist pd = warp_dist_of(a, b * rpr + i, b);
      RowDist qd{};
      if (q_logits && i < K) qd = warp_dist_of(a, b * rpr + K + 1 + i, b);
      if (lane == 0) {
        if (i < kCachedPositions) {
          s_pd[i] = pd;
          s_qd[i] = qd;
        }
        if (i < K) {
          bool ok;
          if (greedy) {
            ok = x == pd.argmax;
          } else {
            const float px = in_vocab ? row_prob(pd, pl) : 0.f;
            const float qx = !in_vocab ? 0.f : q_logits ? row_prob(qd, qv) : qv;
            ok = uniform(a.seed, offset, b, kTagAccept, i) * qx < px;
          }
          if (!ok) atomicMin(&first_reject, i);
          if (ok) atomicAdd(&passed, 1);
        }
      }
    }
  }
  __syncthreads();
  const int L = first_reject;
  if constexpr (MODE != kChainProbs) {
    if (L >= kCachedPositions) {  // long chains only: merge the final rows again
      if (warp == 0) {
        const RowDist p = warp_dist_of(a, b * rpr + L, b);
        if (lane == 0) dec.p = p;
      } else if (warp == 1 && L < K && q_logits) {
        const RowDist q = warp_dist_of(a, b * rpr + K + 1 + L, b);
        if (lane == 0) dec.q = q;
      }
    } else if (threadIdx.x == 0) {
      dec.p = s_pd[L];
      dec.q = s_qd[L];
    }
  }
  if (threadIdx.x == 0) {
    dec.accept_len = L;
    dec.fi_count = passed;
    dec.final_row = b * (K + 1) + L;
    dec.tree_node = -1;
    dec.exclude = 0;
    dec.token = -1;
    if constexpr (MODE == kChainProbs) {
      dec.q_row = L < K ? b * K + L : -1;
    } else {
      if (greedy) dec.token = dec.p.argmax;
      if (L < K && a.draft_probs) dec.q_row = b * K + L;
      else if (L < K && q_logits) dec.q_row = b * rpr + K + 1 + L;
      else dec.q_row = -1;
    }
  }
  __syncthreads();
}

// Tree decision with deterministic candidates (node arrays in shared memory, one thread walks).
template <typename T>
__device__ void decide_tree(const VerifyArgs<T>& a, int b, uint64_t offset, Decision& dec, int* s_parent,
                            int* s_first, int* s_next, float* s_val, int* s_path) {
  const int start = a.map.qo_indptr[b];
  const int n = min(a.map.qo_indptr[b + 1] - start, kMaxTreeNodes);
  const int depth_cap = a.out_width - 1;
  const float t = a.temperature ? a.temperature[b] : 0.f;
  const bool greedy = !(t > 0.f);
  for (int c = threadIdx.x; c < n; c += blockDim.x) {
    const int p = a.parents[start + c];
    s_parent[c] = p >= 0 && p < c ? p : -1;
    s_first[c] = INT_MAX;
  }
  __syncthreads();
  for (int c = threadIdx.x; c < n; c += blockDim.x) {
    const int p = s_parent[c];
    int next = -1;
    if (p >= 0) {
      atomicMin(&s_first[p], c);
      for (int c2 = c + 1; c2 < n; ++c2)
        if (s_parent[c2] == p) { next = c2; break; }
    }
    s_next[c] = next;
  }
  // Candidate probabilities under the parent's distribution, one warp per child.
  const int lane = threadIdx.x & 31;
  for (int c = threadIdx.x >> 5; c < n; c += blockDim.x >> 5) {
    const int p = s_parent[c];
    if (p < 0) continue;
    const RowDist pd = warp_dist_of(a, start + p, b);
    if (lane == 0) {
      const int tok = load_id(a.ids, a.ids_int64, start + c);
      float val = 0.f;
      if (tok >= 0 && tok < a.vocab) {
        val = greedy ? (tok == pd.argmax ? 1.f : 0.f) : row_prob(pd, to_float(a.map.row(start + p)[tok]));
      }
      s_val[c] = val;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    dec.fi_count = 0;
    dec.q_row = -1;
    dec.token = -1;
    if (n <= 0) {
      dec.accept_len = 0;
      dec.final_row = -1;
      dec.tree_node = -1;
      dec.exclude = 0;
    } else {
      int node = 0, depth = 0, draw = 0;
      bool exclude = false;
      s_path[0] = 0;
      while (depth < depth_cap && s_first[node] != INT_MAX) {
        float mass = 0.f;
        int found = -1;
        for (int c = s_first[node]; c != -1; c = s_next[c]) {
          bool ok;
          if (greedy) {
            ok = s_val[c] > 0.5f;
          } else {
            ok = uniform(a.seed, offset, b, kTagAccept, draw++) * (1.f - mass) < s_val[c];
            mass += s_val[c];
          }
          if (ok) { found = c; break; }
        }
        if (found < 0) { exclude = true; break; }
        s_path[++depth] = found;
        node = found;
      }
      dec.accept_len = depth;
      dec.tree_node = node;
      dec.exclude = exclude;
      dec.final_row = start + node;
    }
  }
  __syncthreads();
  if (threadIdx.x < 32 && dec.final_row >= 0) {
    const RowDist p = warp_dist_of(a, dec.final_row, b);
    if (lane == 0) {
      dec.p = p;
      if (greedy) dec.token = p.argmax;
    }
  }
  __syncthreads();
}

// One sampling pass over [lo, hi) of the final row: exponential race r_v / E_v (E = -log u) on the
// residual r = max(p - q, 0) (children excluded), with p / E as the fallback when r is all zero.
template <typename T, int VEC, int MODE>
__device__ Pick final_pass(const VerifyArgs<T>& a, const Decision& dec, int b, int lo, int hi, uint64_t offset,
                           const int* excl, int num_excl) {
  const T* prow = a.map.target + static_cast<int64_t>(dec.final_row) * a.map.target_stride;
  const float* qprobs = nullptr;
  const T* qlogits = nullptr;
  if (dec.q_row >= 0) {
    if (MODE == kChainProbs || a.draft_probs) qprobs = a.draft_probs + static_cast<int64_t>(dec.q_row) * a.draft_probs_stride;
    else qlogits = a.map.row(dec.q_row);
  }
  Pick pick{-INFINITY, INT_MAX, -INFINITY, INT_MAX};
  int cached_q = -1;
  uint4 draws = make_uint4(0, 0, 0, 0);
  auto consider = [&](int v, float p, float q) {
    for (int e = 0; e < num_excl; ++e)
      if (excl[e] == v) p = 0.f;
    const int qi = v >> 2;
    if (qi != cached_q) {
      draws = philox_draws(a.seed, offset, b, kTagSample, qi);
      cached_q = qi;
    }
    // Scores r / E as r * (1 / E): one reciprocal instead of two divisions (1-ulp differences only).
    const float inv_e = __frcp_rn(-logf(to_unit(word(draws, v & 3))));
    offer(pick.score, pick.idx, fmaxf(p - q, 0.f) * inv_e, v);
    offer(pick.fb_score, pick.fb_idx, p * inv_e, v);
  };
  // Probabilities as weight * (1 / sum) (the acceptance tests divide; the race tolerates 1-ulp changes).
  const float p_inv = 1.f / dec.p.sum, q_inv = 1.f / dec.q.sum;
  for_each<T, VEC>(prow, lo, hi, a.vec_target, [&](int v, float x) {
    float p;
    if constexpr (MODE == kChainProbs) p = x;
    else p = row_weight(dec.p, x) * p_inv;
    float q = 0.f;
    if (qprobs) q = qprobs[v];
    else if (qlogits) q = row_weight(dec.q, to_float(qlogits[v])) * q_inv;
    consider(v, p, q);
  });
  return block_best(pick);
}

// Sample mode: Gumbel-max over l / T + log w (argmax for T == 0).
template <typename T, int VEC>
__device__ Pick sample_pass(const VerifyArgs<T>& a, int b, int lo, int hi, uint64_t offset) {
  const T* row = a.map.target + static_cast<int64_t>(b) * a.map.target_stride;
  RowDist d;
  if (a.dists) {
    d = a.dists[b];
  } else {
    float scale, inv_t;
    temperature_scales(a.temperature, b, scale, inv_t);
    d = {0.f, 1.f, 0, 0u, 0xffffffffu, 1.f, scale, inv_t};
  }
  const bool greedy = !(d.inv_t > 0.f);
  const float log_x = logf(d.sag_x);
  Pick pick{-INFINITY, INT_MAX, -INFINITY, INT_MAX};
  int cached_q = -1;
  uint4 draws = make_uint4(0, 0, 0, 0);
  for_each<T, VEC>(row, lo, hi, a.vec_target, [&](int v, float x) {
    if (greedy) {
      offer(pick.score, pick.idx, x, v);
      return;
    }
    const uint32_t key = order_key(x);
    if (key < d.keep_key) return;
    const int qi = v >> 2;
    if (qi != cached_q) {
      draws = philox_draws(a.seed, offset, b, kTagSample, qi);
      cached_q = qi;
    }
    const float g = -logf(-logf(to_unit(word(draws, v & 3))));
    offer(pick.score, pick.idx, x * d.inv_t + (key >= d.sag_key ? log_x : 0.f) + g, v);
  });
  return block_best(pick);
}

// Statistics of one (row, vocabulary chunk) work item -> partials[row * S + chunk]; returns the request.
template <typename T, int VEC>
__device__ __forceinline__ int stats_item(const VerifyArgs<T>& a, int row, int chunk) {
  const int req = a.map.request_of(row);
  float scale, inv_t;
  temperature_scales(a.temperature, req, scale, inv_t);
  const int lo = chunk * a.chunk, hi = min(a.vocab, lo + a.chunk);
  const bool vec_ok = a.map.is_draft(row) ? a.vec_draft : a.vec_target;
  const Stat st = row_stats<T, VEC>(a.map.row(row), lo, hi, vec_ok, scale);
  if (threadIdx.x == 0) {
    Stat* out = a.partials + static_cast<int64_t>(row) * a.S + chunk;
    out->m = st.m;
    out->s = st.s;
    out->idx = st.idx;
  }
  return req;
}

// Unfused statistics (small batches, where the fused kernel's ticket / counter / spin round trips cost
// more than a second launch): one CTA per (row, chunk); verify_kernel follows as a programmatic dependent
// with fused = false and reads the same partials.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) stats_kernel(VerifyArgs<T> a) {
  pdl_wait();
  pdl_launch_dependents();
  stats_item<T, VEC>(a, static_cast<int>(blockIdx.x) / a.S, static_cast<int>(blockIdx.x) % a.S);
}

template <typename T, int VEC, int MODE>
__global__ void __launch_bounds__(kThreads, 3) verify_kernel(VerifyArgs<T> a) {
  __shared__ int s_ticket, s_last, s_num_excl;
  __shared__ Decision dec;
  pdl_wait();  // the previous launch may still own the ticket and the counters
  pdl_launch_dependents();
  if (a.fused) {
    if (threadIdx.x == 0) s_ticket = static_cast<int>(atomicAdd(&g_ticket, 1u));
    __syncthreads();
  }
  const Work w = decode_work(a, a.fused ? s_ticket : static_cast<int>(blockIdx.x));
  const uint64_t offset = a.offset + (a.offset_tensor ? static_cast<uint64_t>(*a.offset_tensor) : 0ull);

  if (w.stats) {
    const int req = stats_item<T, VEC>(a, w.row, w.chunk);
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(&g_stats_count[req], 1u);
    }
  } else {
    const int b = w.req;
    if (a.fused && threadIdx.x == 0) {
      unsigned needed = static_cast<unsigned>(a.S);
      needed *= a.map.rows_per_req > 0 ? a.map.rows_per_req : a.map.qo_indptr[b + 1] - a.map.qo_indptr[b];
      long long spins = 0;
      while (ld_acquire(&g_stats_count[b]) < needed) {
        __nanosleep(64);
        if (++spins > (1ll << 26)) __trap();  // never expected: fail loudly instead of hanging
      }
    }
    __syncthreads();
    const int lo = w.chunk * a.chunk2, hi = min(a.vocab, lo + a.chunk2);
    Pick pick = empty_pick();
    bool sample = true;
    if constexpr (MODE == kSample) {
      pick = sample_pass<T, VEC>(a, b, lo, hi, offset);
    } else {
      const int* path = nullptr;  // tree: accepted path (local nodes), in shared memory
      if constexpr (MODE == kTree) {
        __shared__ int s_parent[kMaxTreeNodes], s_first[kMaxTreeNodes], s_next[kMaxTreeNodes], s_path[kMaxTreeNodes];
        __shared__ float s_val[kMaxTreeNodes];
        decide_tree(a, b, offset, dec, s_parent, s_first, s_next, s_val, s_path);
        // Rejected children of the final node that fall in this chunk (s_next is free again).
        if (threadIdx.x == 0) s_num_excl = 0;
        __syncthreads();
        const int start = a.map.qo_indptr[b];
        const int n = min(a.map.qo_indptr[b + 1] - start, kMaxTreeNodes);
        if (dec.exclude) {
          for (int c = threadIdx.x; c < n; c += blockDim.x) {
            if (s_parent[c] != dec.tree_node) continue;
            const int tok = load_id(a.ids, a.ids_int64, start + c);
            if (tok >= lo && tok < hi) s_next[atomicAdd(&s_num_excl, 1)] = tok;
          }
        }
        __syncthreads();
        sample = dec.token < 0 && dec.final_row >= 0;
        if (sample) pick = final_pass<T, VEC, MODE>(a, dec, b, lo, hi, offset, s_next, s_num_excl);
        path = s_path;
      } else {
        decide_chain<T, MODE>(a, b, offset, dec);
        sample = dec.token < 0;
        if (sample) pick = final_pass<T, VEC, MODE>(a, dec, b, lo, hi, offset, nullptr, 0);
      }
      // Last CTA of the request: reduce picks, write outputs.
      if (threadIdx.x == 0) {
        if (sample) a.picks[static_cast<int64_t>(b) * a.S2 + w.chunk] = pick;
        __threadfence();
        s_last = atomicAdd(&g_final_count[b], 1u) == static_cast<unsigned>(a.S2 - 1);
      }
      __syncthreads();
      if (s_last) {
        __threadfence();
        __shared__ int s_token;
        Pick best{-INFINITY, INT_MAX, -INFINITY, INT_MAX};
        if (sample && threadIdx.x < 32) best = warp_reduce_picks(a.picks + static_cast<int64_t>(b) * a.S2, a.S2);
        if (threadIdx.x == 0) {
          int token = dec.token;
          if (sample) token = best.score > 0.f ? best.idx : best.fb_idx;
          s_token = token;
          g_final_count[b] = 0;
          if (a.fused) g_stats_count[b] = 0;
          a.accept_len[b] = dec.accept_len;
          if (MODE == kChainProbs) {
            a.fi_accepted[b] += dec.fi_count;
            a.fi_emitted[b] += dec.accept_len;
          }
        }
        __syncthreads();
        const int L = dec.accept_len;
        for (int i = threadIdx.x; i < a.out_width; i += blockDim.x) {
          int tok = -1;
          if constexpr (MODE == kTree) {
            const int start = a.map.qo_indptr[b];
            if (i < L) tok = load_id(a.ids, a.ids_int64, start + path[i + 1]);
            a.accept_nodes[static_cast<int64_t>(b) * a.out_width + i] = dec.final_row >= 0 && i <= L ? path[i] : -1;
          } else {
            if (i < L) tok = load_id(a.ids, a.ids_int64, static_cast<int64_t>(b) * a.map.K + i);
          }
          if (i == L) tok = s_token;
          a.out_tokens[static_cast<int64_t>(b) * a.out_width + i] = tok;
        }
      }
    }
    if constexpr (MODE == kSample) {
      if (threadIdx.x == 0) {
        a.picks[static_cast<int64_t>(b) * a.S2 + w.chunk] = pick;
        __threadfence();
        s_last = atomicAdd(&g_final_count[b], 1u) == static_cast<unsigned>(a.S2 - 1);
      }
      __syncthreads();
      if (s_last && threadIdx.x < 32) {
        __threadfence();
        const Pick best = warp_reduce_picks(a.picks + static_cast<int64_t>(b) * a.S2, a.S2);
        if (threadIdx.x == 0) {
          a.sampled[b] = best.idx;
          g_final_count[b] = 0;
        }
      }
    }
  }
  if (a.fused && threadIdx.x == 0) {
    if (atomicAdd(&g_done, 1u) == gridDim.x - 1) {
      g_ticket = 0;
      g_done = 0;
    }
  }
}

// ------------------------------------------------------------------ probs_from_logits / saguaro_rescale
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) write_probs_kernel(const T* logits, int64_t stride, const RowDist* dists,
                                                              float* out, int vocab, int chunk, bool vec_ok) {
  pdl_wait();
  pdl_launch_dependents();
  const int r = blockIdx.x;
  const RowDist d = dists[r];
  const int lo = blockIdx.y * chunk, hi = min(vocab, lo + chunk);
  float* orow = out + static_cast<int64_t>(r) * vocab;
  const bool greedy = !(d.scale > 0.f);
  for_each<T, VEC>(logits + r * stride, lo, hi, vec_ok, [&](int v, float x) {
    orow[v] = greedy ? (v == d.argmax ? 1.f : 0.f) : row_prob(d, x);
  });
}

__global__ void __launch_bounds__(kThreads) saguaro_rescale_kernel(const float* probs, const float* x, float* out,
                                                                  int vocab, int F) {
  __shared__ unsigned long long hist[kRadixBins];
  const int r = blockIdx.x;
  const float* row = probs + static_cast<int64_t>(r) * vocab;
  const uint32_t top =
      radix_select(row, vocab, static_cast<unsigned long long>(F + 1), [](uint32_t, float) { return 1u; }, hist);
  const float xr = x[r];
  float sum = 0.f;
  for (int v = threadIdx.x; v < vocab; v += blockDim.x) sum += order_key(row[v]) >= top ? row[v] * xr : row[v];
  sum = block_sum_f(sum);
  float* orow = out + static_cast<int64_t>(r) * vocab;
  for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
    const float p = row[v];
    orow[v] = (order_key(p) >= top ? p * xr : p) / sum;
  }
}

// sgl-kernel verify_tree_greedy: one thread per request.
__global__ void verify_tree_greedy_kernel(int32_t* predicts, int32_t* accept_index, int32_t* accept_token_num,
                                          const int64_t* candidates, const int64_t* retrive_index,
                                          const int64_t* retrive_next_token, const int64_t* retrive_next_sibling,
                                          const int64_t* target_predict, int batch, int num_spec, int num_draft) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  const int64_t base = static_cast<int64_t>(b) * num_draft;
  int64_t last = retrive_index[base];
  accept_index[static_cast<int64_t>(b) * num_spec] = static_cast<int32_t>(last);
  int num = 0;
  int64_t cur = 0;
  for (int j = 1; j < num_spec; ++j) {
    cur = retrive_next_token[base + cur];
    while (cur != -1) {
      const int64_t draft_index = retrive_index[base + cur];
      if (candidates[base + cur] == target_predict[last]) {
        predicts[last] = static_cast<int32_t>(target_predict[last]);
        ++num;
        accept_index[static_cast<int64_t>(b) * num_spec + num] = static_cast<int32_t>(draft_index);
        last = draft_index;
        break;
      }
      cur = retrive_next_sibling[base + cur];
    }
    if (cur == -1) break;
  }
  accept_token_num[b] = num;
  predicts[last] = static_cast<int32_t>(target_predict[last]);
}

}  // namespace ssdk::sampling

// Sampling and speculative verification from logits (semantics: ssdk/ops/verify.py, reference:
// ssdk/ref/verify.py). Each call starts with zero_kernel (zeroes the call's per-request counters), then:
//
//   stats_kernel: one CTA per (row, 16384-entry tile), its whole tile copied by cp.async before any math:
//                online max / argmax / sum of exp -> partials (fixed tiles: a row's merge order never
//                depends on the batch size). For stochastic requests it also writes the race bounds of the
//                final sample (below). Each CTA counts its item in ready[request].
//   verify_kernel (request, chunk): a programmatic dependent of stats_kernel that waits for its request's
//                count (not for the whole grid, so it overlaps the statistics' tail); decides acceptance
//                (every CTA of the request decides redundantly from the merged partials: a few loads),
//                then, for stochastic requests, runs the exponential race r_v / E_v over its chunk of the
//                final row (residual r = max(p - q, 0), or p minus the rejected children) -> picks; the
//                last CTA of the request (a counter in the call's own workspace) reduces the picks and
//                writes the outputs.
//
// Race bounds: the final sample's draws depend on (seed, offset, request, v) only, not on the row it
// samples, so the statistics pass (memory-bound, its ALUs mostly idle) draws them once per request and
// stores, per group of 4 entries (one Philox call), the smallest power of two >= max 1 / E. The sample
// pass draws only for entries with r_v * bound_v >= a score reached in its chunk (short chunks: the best
// of each thread's largest residual; long chunks: the thread's running best or the block's best after a
// first batch), so the picks are identical to drawing everywhere (with logits that are not flat, a few
// percent of the entries are drawn).
//
// Single-request stochastic verify_chain calls (draft logits, no filters) take one launch instead of the
// two above: chain_resident.cuh.
//
// With top-k / top-p / Saguaro, a filter kernel (one CTA per row, radix selects) precomputes each row's
// distribution instead of the statistics kernel (no race bounds: every entry is drawn), and verify_kernel
// waits for it as a whole (pdl_wait). No device-global state: concurrent calls are independent.
#pragma once
#include "ssdk/sampling.cuh"

namespace ssdk::sampling {

constexpr int kMaxRequests = 1 << 16;
constexpr int kMaxTreeNodes = 1024;
constexpr int kMaxPrunedChunk = 4096;  // sample chunks up to this size keep r_v in registers (race bounds)

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
    if (k > 0 && k < V) d.keep_key = radix_select<T, VEC>(row, V, vec_ok, static_cast<unsigned long long>(k),
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
      d.keep_key = radix_select<T, VEC>(row, V, vec_ok, target, mass, hist);
    }
    if (a.sag_x != nullptr && (draft || a.sag_target)) {
      d.sag_key = radix_select<T, VEC>(row, V, vec_ok, static_cast<unsigned long long>(a.sag_f + 1),
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
// Acceptance decision of one request, shared by the threads of a CTA.
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
  unsigned* final_count;      // [B] finished verify_kernel CTAs per request, zeroed by the call's zero_kernel
  unsigned* ready;            // [B] finished statistics items per request, zeroed by the call's zero_kernel
  float* token_logits;        // chain_resident: [B * K, 2] target and draft logit of each draft token
  int8_t* race_bounds;        // [B, bounds_stride] (see the top of this file), or nullptr: draw every entry
  int bounds_stride;          // ceil(vocab / 4)
  int32_t* out_tokens;        // [B, out_width]
  int32_t* accept_len;        // [B]
  int32_t* accept_nodes;      // tree: [B, out_width]
  int32_t* fi_accepted;       // chain_speculative_sampling counters (+=)
  int32_t* fi_emitted;
  int64_t* sampled;           // sample mode: [B]
  int out_width;
  int batch, vocab, num_rows;
  int S, chunk, S2, chunk2;   // statistics tiles per row and their size; final chunks per request and size
  bool vec_target, vec_draft;
  bool stats_pass;            // host: launch stats_kernel before verify_kernel
  uint64_t seed, offset;
  const int64_t* offset_tensor;
};

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

// Two rows' distributions at once (q_row < 0: qd untouched): both rows' partial loads are in flight
// together, and each row is merged exactly as warp_dist_of merges it.
template <typename T>
__device__ __forceinline__ void warp_dist_pair(const VerifyArgs<T>& a, int p_row, int q_row, int req, RowDist& pd,
                                               RowDist& qd) {
  if (a.dists) {
    pd = a.dists[p_row];
    if (q_row >= 0) qd = a.dists[q_row];
    return;
  }
  float scale, inv_t;
  temperature_scales(a.temperature, req, scale, inv_t);
  Stat ps = empty_stat(), qs = empty_stat();
  const Stat* pp = a.partials + static_cast<int64_t>(p_row) * a.S;
  const Stat* qp = a.partials + static_cast<int64_t>(q_row >= 0 ? q_row : p_row) * a.S;
  for (int c = threadIdx.x & 31; c < a.S; c += 32) {
    const Stat p_part{__ldcg(&pp[c].m), __ldcg(&pp[c].s), __ldcg(&pp[c].idx)};
    const Stat q_part{__ldcg(&qp[c].m), __ldcg(&qp[c].s), __ldcg(&qp[c].idx)};
    ps = merge(ps, p_part, scale);
    qs = merge(qs, q_part, scale);
  }
  ps = warp_merge(ps, scale);
  pd = {ps.m, ps.s, ps.idx, 0u, 0xffffffffu, 1.f, scale, inv_t};
  if (q_row >= 0) {
    qs = warp_merge(qs, scale);
    qd = {qs.m, qs.s, qs.idx, 0u, 0xffffffffu, 1.f, scale, inv_t};
  }
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
// position per warp, 0..K (K: the bonus row, no test). The draft tokens and their logits of the first
// kCachedPositions positions are inputs only: verify_kernel loads them before its dependency wait (see
// load_chain_token), and the distributions of those positions stay in shared memory, so the final row
// costs no further round trip.
constexpr int kCachedPositions = 32;

// Draft token i of a chain request (-1 for the bonus position K) and, for stochastic requests, its target
// logit and its draft logit / probability.
struct ChainToken {
  int x;
  float pl, qv;
};

template <typename T>
__device__ __forceinline__ bool chain_greedy(const VerifyArgs<T>& a, int b) {
  return !(a.temperature && a.temperature[b] > 0.f);
}

template <typename T>
__device__ __forceinline__ ChainToken load_chain_token(const VerifyArgs<T>& a, int b, int i) {
  const int K = a.map.K, rpr = a.map.rows_per_req;
  ChainToken tok{i < K ? load_id(a.ids, a.ids_int64, static_cast<int64_t>(b) * K + i) : -1, 0.f, 0.f};
  if (!chain_greedy(a, b) && tok.x >= 0 && tok.x < a.vocab) {
    tok.pl = to_float(a.map.row(b * rpr + i)[tok.x]);
    if (a.draft_probs) tok.qv = a.draft_probs[(static_cast<int64_t>(b) * K + i) * a.draft_probs_stride + tok.x];
    else if (a.map.draft) tok.qv = to_float(a.map.row(b * rpr + K + 1 + i)[tok.x]);
  }
  return tok;
}

template <typename T, int MODE>
__device__ void decide_chain(const VerifyArgs<T>& a, int b, uint64_t offset, const ChainToken* s_tok, Decision& dec) {
  __shared__ int first_reject, passed;
  __shared__ RowDist s_pd[kCachedPositions], s_qd[kCachedPositions];
  const int K = a.map.K, V = a.vocab, rpr = a.map.rows_per_req;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, num_warps = blockDim.x >> 5;
  const bool greedy = MODE == kChain && chain_greedy(a, b);
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
      const ChainToken tok = i < kCachedPositions ? s_tok[i] : load_chain_token(a, b, i);
      const int x = tok.x;
      const float pl = tok.pl, qv = tok.qv;
      const bool in_vocab = x >= 0 && x < V;
      RowDist pd, qd{};
      warp_dist_pair(a, b * rpr + i, q_logits && i < K ? b * rpr + K + 1 + i : -1, b, pd, qd);
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
  // f(v, p_v, q_v) over [lo, hi). Probabilities as weight * (1 / sum) (the acceptance tests divide; the
  // race tolerates 1-ulp changes).
  const float p_inv = 1.f / dec.p.sum, q_inv = 1.f / dec.q.sum;
  auto prob = [&](int v, float x) {  // rejected children zeroed
    float p;
    if constexpr (MODE == kChainProbs) p = x;
    else p = row_weight(dec.p, x) * p_inv;
    for (int e = 0; e < num_excl; ++e)
      if (excl[e] == v) p = 0.f;
    return p;
  };
  auto for_probs = [&](auto&& f) {
    if (qlogits) {
      for_each_pair<T, VEC>(prow, qlogits, lo, hi, a.vec_target && a.vec_draft,
                            [&](int v, float x, float y) { f(v, prob(v, x), row_weight(dec.q, y) * q_inv); });
    } else {
      for_each<T, VEC>(prow, lo, hi, a.vec_target, [&](int v, float x) { f(v, prob(v, x), qprobs ? qprobs[v] : 0.f); });
    }
  };
  auto race_weight_of = [&](int v) {
    return race_weight(word(philox_draws(a.seed, offset, b, kTagSample, static_cast<uint32_t>(v) >> 2), v & 3));
  };

  if (a.race_bounds != nullptr && hi - lo <= kMaxPrunedChunk && (hi - lo) % VEC == 0 && a.vec_target &&
      (qlogits == nullptr || a.vec_draft)) {
    // This thread's entries: vectors k at lo + (threadIdx.x + k * kThreads) * VEC, residuals in registers.
    // Each thread scores its largest residual exactly: the best of those scores is reached in this chunk,
    // so entries with r_v * 2^bound below it cannot be the chunk's pick and are never drawn.
    constexpr int kVecs = kMaxPrunedChunk / (kThreads * VEC), kGroups = VEC / 4;  // groups: Philox calls
    const int8_t* bounds = a.race_bounds + static_cast<int64_t>(b) * a.bounds_stride;
    float r[kVecs][VEC];
    int8_t bound_exp[kVecs][kGroups];
    float top_r = 0.f;
    int top_v = -1;
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int v = lo + (threadIdx.x + k * kThreads) * VEC;  // v < hi implies v + VEC <= hi
      Vec<T, VEC> pv, qv;
      if (v < hi) {
        pv.load(prow + v);
        if (qlogits) qv.load(qlogits + v);
      }
#pragma unroll
      for (int g = 0; g < kGroups; ++g) bound_exp[k][g] = v < hi ? __ldcg(bounds + (v >> 2) + g) : 0;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        r[k][j] = 0.f;
        if (v >= hi) continue;
        const float p = prob(v + j, to_float(pv.data[j]));
        const float q = qlogits ? row_weight(dec.q, to_float(qv.data[j])) * q_inv : qprobs ? qprobs[v + j] : 0.f;
        r[k][j] = fmaxf(p - q, 0.f);
        if (r[k][j] > top_r) {
          top_r = r[k][j];
          top_v = v + j;
        }
      }
    }
    const float threshold = block_max_f(top_v >= 0 ? top_r * race_weight_of(top_v) : 0.f);
    if (threshold > 0.f) {  // else (no residual mass in reach) every entry is drawn, with the fallback below
      Pick pick{-INFINITY, INT_MAX, -INFINITY, INT_MAX};  // no fallback: this request's best score is > 0
#pragma unroll
      for (int k = 0; k < kVecs; ++k) {
        const int v = lo + (threadIdx.x + k * kThreads) * VEC;
#pragma unroll
        for (int g = 0; g < kGroups; ++g) {
          const float bound = pow2_of(bound_exp[k][g]);
          bool any = false;
#pragma unroll
          for (int e = 0; e < 4; ++e) any |= r[k][4 * g + e] * bound >= threshold;
          if (!any) continue;  // (entries past hi have r = 0)
          const uint4 draws = philox_draws(a.seed, offset, b, kTagSample, static_cast<uint32_t>(v >> 2) + g);
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (r[k][4 * g + e] * bound >= threshold)
              offer(pick.score, pick.idx, r[k][4 * g + e] * race_weight(word(draws, e)), v + 4 * g + e);
        }
      }
      return block_best(pick);
    }
  }
  Pick pick{-INFINITY, INT_MAX, -INFINITY, INT_MAX};
  int cached_q = -1;
  uint4 draws = make_uint4(0, 0, 0, 0);
  for_probs([&](int v, float p, float q) {
    const int qi = v >> 2;
    if (qi != cached_q) {
      draws = philox_draws(a.seed, offset, b, kTagSample, qi);
      cached_q = qi;
    }
    const float w = race_weight(word(draws, v & 3));
    offer(pick.score, pick.idx, fmaxf(p - q, 0.f) * w, v);
    offer(pick.fb_score, pick.fb_idx, p * w, v);
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

__device__ __forceinline__ uint64_t run_offset(uint64_t offset, const int64_t* offset_tensor) {
  return offset + (offset_tensor ? static_cast<uint64_t>(*offset_tensor) : 0ull);
}

// Zeroes a call's counters (its workspace may still be in use by the previous kernel of the stream, hence
// the wait first). The call's next kernel starts once this one has passed its wait, so that kernel may read
// the call's inputs (and write its own workspace, but not the counters) before its own wait.
__global__ void __launch_bounds__(kThreads) zero_kernel(unsigned* words, int n) {
  pdl_wait();
  pdl_launch_dependents();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) words[i] = 0u;
}

// Race weight of entry v of request b's final sample. Out of line: only a few entries per thread are drawn,
// and an inlined Philox at every candidate site would crowd the registers of the streaming loop.
__device__ __noinline__ float race_weight_at(uint64_t seed, uint64_t offset, int b, int v) {
  return race_weight(word(philox_draws(seed, offset, b, kTagSample, static_cast<uint32_t>(v) >> 2), v & 3));
}

// The four draws of Philox group q (entries 4q .. 4q+3) of request b's final sample. Out of line: only a few
// groups per CTA are drawn, and an inlined Philox at every candidate site would crowd the streaming loop.
__device__ __noinline__ uint4 sample_draws(uint64_t seed, uint64_t offset, int b, int q) {
  return philox_draws(seed, offset, b, kTagSample, static_cast<uint32_t>(q));
}

// verify_kernel's chain sample pass over a long chunk [lo, hi) of the final row (final_pass keeps short
// chunks' residuals in registers), for calls without top-k / top-p / Saguaro (the only ones that take
// long chunks): weights are plain exponentials, one FMA + one ex2.approx each as in the statistics' sums.
// The race r_v / E_v with r = max(p - q, 0): each thread first scores the largest residual of its first
// batch exactly; the block's best of those is a score reached in this chunk, so an entry with
// r_v * bound_v below max(that, the thread's best so far) cannot be the chunk's pick and is never drawn
// (the test runs per Philox group of 4 entries on the group's largest residual; only a handful of groups
// per CTA pass it). A chunk without residual mass instead runs the fallback race p_v / E_v over every
// entry (see final_pass). Rows are 16-byte aligned; draft probabilities (fp32) are read one entry at a time.
template <typename T, int VEC>
__device__ Pick race_chunk(const VerifyArgs<T>& a, const Decision& dec, int b, int lo, int hi, uint64_t offset) {
  constexpr int kGroups = VEC / 4, kBatch = 2, kStride = kBatch * kThreads * VEC;  // kBatch vectors per thread
  const T* prow = a.map.target + static_cast<int64_t>(dec.final_row) * a.map.target_stride;
  const T* qlogits = dec.q_row >= 0 && !a.draft_probs ? a.map.row(dec.q_row) : nullptr;
  const float* qprobs = dec.q_row >= 0 && a.draft_probs
                            ? a.draft_probs + static_cast<int64_t>(dec.q_row) * a.draft_probs_stride : nullptr;
  const int8_t* bounds = a.race_bounds + static_cast<int64_t>(b) * a.bounds_stride;
  const float ps = dec.p.scale, pm = dec.p.max * dec.p.scale, p_inv = 1.f / dec.p.sum;
  const float qs = dec.q.scale, qm = dec.q.max * dec.q.scale, q_inv = qlogits ? 1.f / dec.q.sum : 0.f;
  auto prob = [&](float x) { return fast_exp2(fmaf(x, ps, -pm)) * p_inv; };
  auto residual = [&](int v, float x, float y) {
    const float q = qlogits ? fast_exp2(fmaf(y, qs, -qm)) * q_inv : qprobs ? __ldg(qprobs + v) : 0.f;
    return fmaxf(prob(x) - q, 0.f);
  };
  const int vhi = lo + (hi - lo) / VEC * VEC;
  float r[kBatch][VEC];
  int8_t e[kBatch][kGroups];
  auto load_batch = [&](int base) {  // this thread's kBatch vectors at base: residuals (0 past vhi), bounds
    Vec<T, VEC> pv[kBatch], qv[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int v = base + u * kThreads * VEC;
#pragma unroll
      for (int g = 0; g < kGroups; ++g) e[u][g] = v < vhi ? __ldcg(bounds + (v >> 2) + g) : 0;
      if (v >= vhi) continue;
      pv[u].load(prow + v);
      if (qlogits) qv[u].load(qlogits + v);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int v = base + u * kThreads * VEC;
#pragma unroll
      for (int j = 0; j < VEC; ++j)
        r[u][j] = v < vhi ? residual(v + j, to_float(pv[u].data[j]), qlogits ? to_float(qv[u].data[j]) : 0.f) : 0.f;
    }
  };
  Pick pick{0.f, INT_MAX, -INFINITY, INT_MAX};  // score 0: no residual mass seen
  float reached = 0.f;                          // a score reached in this chunk
  auto draw_batch = [&](int base) {
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int v = base + u * kThreads * VEC;
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        const float bound = pow2_of(e[u][g]);
        const float top = fmaxf(fmaxf(r[u][4 * g], r[u][4 * g + 1]), fmaxf(r[u][4 * g + 2], r[u][4 * g + 3]));
        if (!(top > 0.f && top * bound >= fmaxf(pick.score, reached))) continue;  // (0 past vhi)
        const uint4 w = sample_draws(a.seed, offset, b, (v >> 2) + g);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float rk = r[u][4 * g + k];
          if (rk > 0.f && rk * bound >= fmaxf(pick.score, reached))
            offer(pick.score, pick.idx, rk * race_weight(word(w, k)), v + 4 * g + k);
        }
      }
    }
  };
  const int first = lo + threadIdx.x * VEC;
  load_batch(first);
  float top_r = 0.f;
  int top_v = -1;
#pragma unroll
  for (int u = 0; u < kBatch; ++u)
#pragma unroll
    for (int j = 0; j < VEC; ++j)
      if (r[u][j] > top_r) {
        top_r = r[u][j];
        top_v = first + u * kThreads * VEC + j;
      }
  reached = block_max_f(top_v >= 0 ? top_r * race_weight_at(a.seed, offset, b, top_v) : 0.f);
  draw_batch(first);
  for (int base = first + kStride; base < vhi; base += kStride) {
    load_batch(base);
    draw_batch(base);
  }
  for (int v = vhi + threadIdx.x; v < hi; v += kThreads) {
    const float rv = residual(v, to_float(prow[v]), qlogits ? to_float(qlogits[v]) : 0.f);
    if (rv > 0.f && rv * pow2_of(__ldcg(bounds + (v >> 2))) >= fmaxf(pick.score, reached))
      offer(pick.score, pick.idx, rv * race_weight_at(a.seed, offset, b, v), v);
  }
  pick = block_best(pick);
  if (pick.score > 0.f) return pick;
  for (int v = lo + threadIdx.x; v < hi; v += kThreads)
    offer(pick.fb_score, pick.fb_idx, prob(to_float(prow[v])) * race_weight_at(a.seed, offset, b, v), v);
  return block_best(pick);
}

// Race bound of Philox group g (entries 4g .. 4g+3) of request req's final sample: the exponent e of the
// smallest 2^e >= max 1 / E over the group. 1 / E grows with the word (to_unit and -log are monotone; logf is
// within 1 ulp of it, hence the 2^-20 margin): one logarithm per group, at the group's largest word.
__device__ __forceinline__ int8_t race_bound(uint64_t seed, uint64_t offset, int req, int g) {
  const uint4 w = philox_draws(seed, offset, req, kTagSample, static_cast<uint32_t>(g));
  const uint32_t top = max(max(w.x >> 9, w.y >> 9), max(w.z >> 9, w.w >> 9)) << 9;
  return pow2_ceil_exponent(race_weight(top) * (1.f + 0x1p-20f));
}

// Statistics of one (row, tile) item per CTA -> partials[row * S + tile]; for stochastic requests also the
// race bounds of the item's share of its tile's Philox groups (the request's rows split them). A plain,
// non-persistent grid in request-major order: each CTA starts the cp.async copy of its whole tile (32 KB)
// before anything else, so all of its loads are in flight from its first instructions and hold no
// registers; with few registers, kStatsCtasPerSm CTAs share an SM and their folds overlap each other's
// loads. A CTA counts its item in ready[request] last (after a fence); verify_kernel's CTAs of that request
// wait for the count instead of for this whole grid, so they overlap its tail. The counters are zeroed by
// the call's zero_kernel: this grid waits for it (pdl_wait) before it lets verify_kernel launch and before
// it counts; its tile's loads (inputs only) are issued before that wait (zero_kernel passed its own).
constexpr int kStatsCtasPerSm = 6;

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads, kStatsCtasPerSm) stats_kernel(VerifyArgs<T> a) {
  extern __shared__ uint4 stats_smem[];  // one tile
  const AsyncTile<T, VEC> tile{reinterpret_cast<Vec<T, VEC>*>(stats_smem)};
  const int row = static_cast<int>(blockIdx.x) / a.S, chunk = static_cast<int>(blockIdx.x) % a.S;
  const int lo = chunk * a.chunk, hi = min(a.vocab, lo + a.chunk);
  const T* values = a.map.row(row);
  const bool vec_ok = a.map.is_draft(row) ? a.vec_draft : a.vec_target;
  if (vec_ok) tile.load(values, lo, hi);
  pdl_wait();
  pdl_launch_dependents();  // after the wait: verify_kernel may rely on the zeroed counters
  const int req = a.map.request_of(row);
  float scale, inv_t;
  temperature_scales(a.temperature, req, scale, inv_t);
  Stat st;
  if (vec_ok) {
    AsyncTile<T, VEC>::template wait<0>();
    st = tile.stats(values, lo, hi, scale);
  } else {
    st = empty_stat();
    for (int s = lo + threadIdx.x; s < hi; s += kThreads) accumulate(st, to_float(values[s]), s, scale);
  }
  st = block_merge(st, scale);
  if (threadIdx.x == 0) a.partials[static_cast<int64_t>(row) * a.S + chunk] = st;
  if (a.race_bounds != nullptr && scale > 0.f) {
    const uint64_t offset = run_offset(a.offset, a.offset_tensor);
    const int rpr = a.map.rows_per_req;
    const int first = rpr > 0 ? req * rpr : a.map.qo_indptr[req];
    const int rows = rpr > 0 ? rpr : a.map.qo_indptr[req + 1] - first;
    const int g_hi = min(a.bounds_stride, (lo + a.chunk) / 4);
    int8_t* bounds = a.race_bounds + static_cast<int64_t>(req) * a.bounds_stride;
    for (int g = lo / 4 + (row - first) * kThreads + threadIdx.x; g < g_hi; g += rows * kThreads)
      bounds[g] = race_bound(a.seed, offset, req, g);
  }
  __threadfence();  // this thread's partial / bounds before the count
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(&a.ready[req], 1u);
}

// verify_kernel's wait for its request's statistics: all of them counted in ready[b] (thread 0 polls, the
// block follows; the statistics are then read through L2 with __ldcg).
template <typename T>
__device__ __forceinline__ void wait_for_statistics(const VerifyArgs<T>& a, int b) {
  if (threadIdx.x == 0) {
    const int rows = a.map.rows_per_req > 0 ? a.map.rows_per_req : a.map.qo_indptr[b + 1] - a.map.qo_indptr[b];
    const unsigned target = static_cast<unsigned>(rows) * static_cast<unsigned>(a.S);
    unsigned done;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(done) : "l"(a.ready + b) : "memory");
      if (done >= target) break;
      __nanosleep(100);
    }
    __threadfence();
  }
  __syncthreads();
}

template <typename T, int VEC, int MODE>
__global__ void __launch_bounds__(kThreads, 3) verify_kernel(VerifyArgs<T> a) {
  __shared__ int s_last, s_num_excl;
  __shared__ Decision dec;
  __shared__ ChainToken s_tok[kCachedPositions];
  const int b = static_cast<int>(blockIdx.x) / a.S2, chunk = static_cast<int>(blockIdx.x) % a.S2;
  if constexpr (MODE == kChain) {
    // Inputs only, before the dependency wait: verify_chain always launches its statistics (or filter)
    // kernel first, and this grid starts only once every CTA of that one has passed its own wait.
    for (int i = threadIdx.x; i <= a.map.K && i < kCachedPositions; i += blockDim.x) s_tok[i] = load_chain_token(a, b, i);
  }
  if (a.stats_pass) wait_for_statistics(a, b);  // (launched once every statistics CTA passed its wait)
  else pdl_wait();
  pdl_launch_dependents();
  const uint64_t offset = run_offset(a.offset, a.offset_tensor);
  const int lo = chunk * a.chunk2, hi = min(a.vocab, lo + a.chunk2);
  Pick pick = empty_pick();
  bool sample = true;
  if constexpr (MODE == kSample) {
    pick = sample_pass<T, VEC>(a, b, lo, hi, offset);
    if (threadIdx.x == 0) {
      a.picks[static_cast<int64_t>(b) * a.S2 + chunk] = pick;
      __threadfence();
      s_last = atomicAdd(&a.final_count[b], 1u) == static_cast<unsigned>(a.S2 - 1);
    }
    __syncthreads();
    if (s_last && threadIdx.x < 32) {
      __threadfence();
      const Pick best = warp_reduce_picks(a.picks + static_cast<int64_t>(b) * a.S2, a.S2);
      if (threadIdx.x == 0) a.sampled[b] = best.idx;
    }
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
      decide_chain<T, MODE>(a, b, offset, s_tok, dec);
      sample = dec.token < 0;
      if (sample) {
        // Long chunks (verify_chain's one-wave split) stream; short ones keep their residuals in registers.
        if (MODE == kChain && hi - lo > kMaxPrunedChunk && a.race_bounds != nullptr && a.vec_target &&
            (a.map.draft == nullptr || a.vec_draft))
          pick = race_chunk<T, VEC>(a, dec, b, lo, hi, offset);
        else pick = final_pass<T, VEC, MODE>(a, dec, b, lo, hi, offset, nullptr, 0);
      }
    }
    // Last CTA of the request: reduce picks, write outputs.
    if (threadIdx.x == 0) {
      if (sample) a.picks[static_cast<int64_t>(b) * a.S2 + chunk] = pick;
      __threadfence();
      s_last = atomicAdd(&a.final_count[b], 1u) == static_cast<unsigned>(a.S2 - 1);
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    __shared__ int s_token;
    Pick best{-INFINITY, INT_MAX, -INFINITY, INT_MAX};
    if (sample && threadIdx.x < 32) best = warp_reduce_picks(a.picks + static_cast<int64_t>(b) * a.S2, a.S2);
    if (threadIdx.x == 0) {
      int token = dec.token;
      if (sample) token = best.score > 0.f ? best.idx : best.fb_idx;
      s_token = token;
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
  const uint32_t top = radix_select<float, 4>(row, vocab, is_aligned(row, 16),
                                              static_cast<unsigned long long>(F + 1),
                                              [](uint32_t, float) { return 1u; }, hist);
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

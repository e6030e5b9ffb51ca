// Launchers for sampling and speculative verification (device code: include/ssdk/verify.cuh,
// include/ssdk/chain_resident.cuh, include/ssdk/sampling.cuh). Logits fp32/fp16/bf16 with rows strided
// (last dim contiguous); probabilities fp32; token ids int32/int64; outputs int32 (sample_tokens: int64).
// Any arch >= sm_70.
// Semantics and reference: ssdk/ops/verify.py, ssdk/ref/verify.py (Philox streams bit-identical).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "ops.h"
#include "ssdk/chain_resident.cuh"
#include "ssdk/verify.cuh"
#include "torch_utils.h"

namespace ssdk {
namespace {

using sampling::FilterArgs;
using sampling::RowDist;
using sampling::RowMap;
using sampling::VerifyArgs;
using OptTensor = std::optional<at::Tensor>;

int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

// Vocabulary chunk of one statistics item: one tile (eight 16-byte loads per thread: 16384 entries of a
// 16-bit row, 8192 of fp32), fixed per dtype, so a row's partials (and their merge order) never depend on
// the batch size or on the kernel that computes them.
template <typename T>
constexpr int kStatsChunk = sampling::StatTile<T, 16 / sizeof(T)>::kEntries;


// Split a row of `vocab` into `parts` chunks that are multiples of 8 elements (16-byte aligned).
void split(int vocab, int want, int& parts, int& chunk) {
  want = std::max(1, std::min({want, 64, ceil_div(vocab, 2048)}));
  chunk = ceil_div(ceil_div(vocab, want), 8) * 8;
  parts = ceil_div(vocab, chunk);
}

template <typename T>
bool rows_vectorizable(const T* ptr, int64_t stride) {
  constexpr int kVec = 16 / sizeof(T);
  return ptr != nullptr && is_aligned(ptr, 16) && stride % kVec == 0;
}

void check_vec(const at::Tensor& t, const char* name, int64_t len, at::ScalarType dtype, const at::Tensor& ref) {
  check_same_device(t, ref, name, "logits");
  check_dtype(t, dtype, name);
  check_contiguous(t, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == len, "ssdk: ", name, " must have shape [", len, "], got ", shape_str(t));
}

void check_opt_vec(const OptTensor& t, const char* name, int64_t len, at::ScalarType dtype, const at::Tensor& ref) {
  if (t.has_value()) check_vec(*t, name, len, dtype, ref);
}

template <typename T>
const T* ptr_or_null(const OptTensor& t) {
  return t.has_value() ? reinterpret_cast<const T*>(t->data_ptr()) : nullptr;
}

const int64_t* offset_ptr(const OptTensor& t, const at::Tensor& ref) {
  if (!t.has_value()) return nullptr;
  check_vec(*t, "offset_tensor", 1, at::kLong, ref);
  return t->data_ptr<int64_t>();
}

void check_ids(const at::Tensor& ids, const char* name, at::IntArrayRef shape, const at::Tensor& ref) {
  check_same_device(ids, ref, name, "logits");
  check_dtype_in(ids, {at::kInt, at::kLong}, name);
  check_contiguous(ids, name);
  TORCH_CHECK(ids.sizes() == shape, "ssdk: ", name, " must have shape ", shape, ", got ", shape_str(ids));
}

void check_out(const at::Tensor& t, const char* name, at::IntArrayRef shape, at::ScalarType dtype, const at::Tensor& ref) {
  check_same_device(t, ref, name, "logits");
  check_dtype(t, dtype, name);
  check_contiguous(t, name);
  TORCH_CHECK(t.sizes() == shape, "ssdk: ", name, " must have shape ", shape, ", got ", shape_str(t));
}

template <typename F>
void dispatch_logits(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat: f(float{}); break;
    case at::kHalf: f(__half{}); break;
    case at::kBFloat16: f(__nv_bfloat16{}); break;
    default: TORCH_CHECK(false, "ssdk: logits must be fp32/fp16/bf16, got ", dtype);
  }
}

// Workspace from the caching allocator (capture-safe): partials, picks, row distributions, race bounds,
// per-request counters (final_count then ready, zeroed by the call's zero_kernel), loose floats.
struct Workspace {
  at::Tensor buffer;
  sampling::Stat* partials = nullptr;
  sampling::Pick* picks = nullptr;
  RowDist* dists = nullptr;
  int8_t* race_bounds = nullptr;
  unsigned* final_count = nullptr;
  unsigned* ready = nullptr;
  float* floats = nullptr;
};

Workspace make_workspace(const at::Tensor& ref, int64_t num_partials, int64_t num_picks, int64_t num_dists,
                         int64_t num_bounds = 0, int64_t num_counts = 0, int64_t num_floats = 0) {
  auto align = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  const int64_t sizes[] = {align(num_partials * static_cast<int64_t>(sizeof(sampling::Stat))),
                           align(num_picks * static_cast<int64_t>(sizeof(sampling::Pick))),
                           align(num_dists * static_cast<int64_t>(sizeof(RowDist))), align(num_bounds),
                           align(num_counts * static_cast<int64_t>(sizeof(unsigned))),
                           align(num_floats * static_cast<int64_t>(sizeof(float)))};
  int64_t total = 0;
  for (const int64_t size : sizes) total += size;
  Workspace ws;
  ws.buffer = at::empty({std::max<int64_t>(total, 256)}, ref.options().dtype(at::kByte));
  uint8_t* p = ws.buffer.data_ptr<uint8_t>();
  ws.partials = reinterpret_cast<sampling::Stat*>(p);
  p += sizes[0];
  ws.picks = reinterpret_cast<sampling::Pick*>(p);
  p += sizes[1];
  ws.dists = reinterpret_cast<RowDist*>(p);
  p += sizes[2];
  ws.race_bounds = num_bounds > 0 ? reinterpret_cast<int8_t*>(p) : nullptr;
  p += sizes[3];
  ws.final_count = reinterpret_cast<unsigned*>(p);
  ws.ready = ws.final_count + num_counts / 2;
  p += sizes[4];
  ws.floats = num_floats > 0 ? reinterpret_cast<float*>(p) : nullptr;
  return ws;
}

struct Filters {
  const float* temperature = nullptr;
  const int32_t* top_k = nullptr;
  const float* top_p = nullptr;
  const float* sag_x = nullptr;
  int sag_f = 0;
  bool sag_target = false;
  bool any() const { return top_k || top_p || sag_x; }
};

// top_k / top_p / saguaro_x: optional per-request vectors; saguaro_f: the rescaled top-(F+1) count.
void check_filter_args(const OptTensor& top_k, const OptTensor& top_p, const OptTensor& saguaro_x, int64_t saguaro_f,
                       int64_t batch, int64_t vocab, const at::Tensor& ref) {
  check_opt_vec(top_k, "top_k", batch, at::kInt, ref);
  check_opt_vec(top_p, "top_p", batch, at::kFloat, ref);
  check_opt_vec(saguaro_x, "saguaro_x", batch, at::kFloat, ref);
  TORCH_CHECK(saguaro_f >= 0 && saguaro_f < vocab, "ssdk: saguaro_f must be in [0, vocab), got ", saguaro_f);
}

Filters make_filters(const float* temperature, const OptTensor& top_k, const OptTensor& top_p,
                     const OptTensor& saguaro_x, int64_t saguaro_f, bool sag_target) {
  Filters f;
  f.temperature = temperature;
  f.top_k = ptr_or_null<int32_t>(top_k);
  f.top_p = ptr_or_null<float>(top_p);
  f.sag_x = ptr_or_null<float>(saguaro_x);
  f.sag_f = static_cast<int>(saguaro_f);
  f.sag_target = sag_target;
  return f;
}

// The fields every verification / sampling launch sets the same way.
template <typename T>
void set_batch_and_rng(VerifyArgs<T>& a, int64_t batch, int64_t vocab, int64_t seed, int64_t offset,
                       const OptTensor& offset_tensor, const at::Tensor& ref) {
  a.batch = static_cast<int>(batch);
  a.vocab = static_cast<int>(vocab);
  a.seed = static_cast<uint64_t>(seed);
  a.offset = static_cast<uint64_t>(offset);
  a.offset_tensor = offset_ptr(offset_tensor, ref);
}

template <typename T>
void launch_filter(const RowMap<T>& map, int num_rows, int vocab, const Filters& f, RowDist* dists,
                   cudaStream_t stream) {
  if (num_rows == 0) return;
  FilterArgs<T> fa{};
  fa.map = map;
  fa.num_rows = num_rows;
  fa.vocab = vocab;
  fa.vec_target = rows_vectorizable(map.target, map.target_stride);
  fa.vec_draft = rows_vectorizable(map.draft, map.draft_stride);
  fa.temperature = f.temperature;
  fa.top_k = f.top_k;
  fa.top_p = f.top_p;
  fa.sag_x = f.sag_x;
  fa.sag_f = f.sag_f;
  fa.sag_target = f.sag_target;
  fa.dists = dists;
  check_cuda_call(launch_pdl(sampling::filter_kernel<T, 16 / sizeof(T)>, dim3(num_rows), dim3(sampling::kThreads), 0,
                             stream, fa),
                  "filter kernel launch");
}

// stats_kernel: one 32 KB tile of dynamic shared memory per CTA; asks for the max-shared carveout once per
// device (function attributes are per device; without a preference the driver may pick a carveout that
// fits fewer CTAs than the registers allow).
constexpr size_t kStatsSmem = sampling::kTileVecs * sampling::kThreads * 16;

template <typename T>
void prepare_stats_kernel() {
  static bool done[kMaxDevices] = {};
  check_cuda_call(once_per_device(done, [] {
                    return cudaFuncSetAttribute(sampling::stats_kernel<T, 16 / sizeof(T)>,
                                                cudaFuncAttributePreferredSharedMemoryCarveout,
                                                cudaSharedmemCarveoutMaxShared);
                  }),
                  "stats_kernel carveout");
}

template <typename T, int MODE>
void launch_verify(VerifyArgs<T>& a, cudaStream_t stream) {
  if (a.batch == 0) return;
  const int64_t grid = static_cast<int64_t>(a.batch) * a.S2;
  TORCH_CHECK(grid < (int64_t{1} << 31), "ssdk: problem too large (", grid, " work items)");
  if (a.stats_pass) {
    const int64_t items = static_cast<int64_t>(a.num_rows) * a.S;
    TORCH_CHECK(items < (int64_t{1} << 30), "ssdk: problem too large (", items, " statistics items)");
    prepare_stats_kernel<T>();
    check_cuda_call(launch_pdl(sampling::stats_kernel<T, 16 / sizeof(T)>, dim3(static_cast<unsigned>(items)),
                               dim3(sampling::kThreads), kStatsSmem, stream, a),
                    "stats kernel launch");
  }
  check_cuda_call(launch_pdl(sampling::verify_kernel<T, 16 / sizeof(T), MODE>, dim3(static_cast<unsigned>(grid)),
                             dim3(sampling::kThreads), 0, stream, a),
                  "verify kernel launch");
}

// Common setup: sizes, statistics split, final split, workspace, counters, filter pre-pass.
// long_chunks: verify_chain with race bounds and aligned rows (its final pass streams chunks of any size).
template <typename T>
void prepare(VerifyArgs<T>& a, const Filters& f, bool stochastic, bool long_chunks, const at::Tensor& ref,
             Workspace& ws, int sms, cudaStream_t stream) {
  TORCH_CHECK(a.batch <= sampling::kMaxRequests, "ssdk: at most ", sampling::kMaxRequests, " requests, got ", a.batch);
  if (a.batch == 0) return;
  const bool filtered = f.any() && stochastic;
  // Row statistics from logits: their own launch (one CTA per tile), verify_kernel follows as a
  // programmatic dependent and waits per request. Stochastic ones also draw the race bounds.
  a.stats_pass = !filtered && a.num_rows > 0;
  a.chunk = kStatsChunk<T>;
  a.S = ceil_div(a.vocab, a.chunk);
  a.vec_target = rows_vectorizable(a.map.target, a.map.target_stride);
  a.vec_draft = rows_vectorizable(a.map.draft, a.map.draft_stride);
  long_chunks = long_chunks && stochastic && a.stats_pass && a.vec_target && (a.map.draft == nullptr || a.vec_draft);
  if (long_chunks) {
    // One wave of verify_kernel CTAs (3 per SM) over the batch: each decides once and streams its chunk;
    // small batches (B <= 12 at V = 128K) keep chunks <= kMaxPrunedChunk (register-resident residuals).
    split(a.vocab, std::max(1, 3 * sms / std::max(a.batch, 1)), a.S2, a.chunk2);
  } else if (stochastic) {
    // Final-sample chunks: at least 2 CTAs per SM over the batch, and at most ~4096 entries each (the
    // residuals of a chunk fit the race's register buffer; the last request's tail stays short).
    split(a.vocab, std::max(ceil_div(2 * sms, std::max(a.batch, 1)), ceil_div(a.vocab, 4096)), a.S2, a.chunk2);
  } else {
    split(a.vocab, 1, a.S2, a.chunk2);
  }
  const bool bounded = a.stats_pass && stochastic;
  a.bounds_stride = ceil_div(a.vocab, 4);
  ws = make_workspace(ref, a.stats_pass ? static_cast<int64_t>(a.num_rows) * a.S : 0,
                      static_cast<int64_t>(a.batch) * a.S2, filtered ? a.num_rows : 0,
                      bounded ? static_cast<int64_t>(a.batch) * a.bounds_stride : 0, 2 * static_cast<int64_t>(a.batch));
  a.partials = ws.partials;
  a.picks = ws.picks;
  a.race_bounds = ws.race_bounds;
  a.final_count = ws.final_count;
  a.ready = ws.ready;
  a.dists = nullptr;
  // The call's first kernel: zeroes final_count and ready (adjacent), for the kernels behind it.
  check_cuda_call(launch_pdl(sampling::zero_kernel, dim3(ceil_div(2 * a.batch, sampling::kThreads)),
                             dim3(sampling::kThreads), 0, stream, a.final_count, 2 * a.batch),
                  "zero kernel launch");
  if (filtered) {
    launch_filter<T>(a.map, a.num_rows, a.vocab, f, ws.dists, stream);
    a.dists = ws.dists;
  }
}

// verify_chain's one-launch path for a single request (include/ssdk/chain_resident.cuh): stochastic calls
// with draft logits and no filters whose rows' slices fit in shared memory. B = 1 only: at B = 2 (K = 6,
// V = 128K bf16, H100) it took 21.6 us against 19.0 on the two-launch path.
// Returns false, having launched nothing, when the call does not qualify.
constexpr size_t kResidentSmem = 64 * 1024;

template <typename T>
bool launch_chain_resident(VerifyArgs<T>& a, const at::Tensor& ref, Workspace& ws, int sms, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const int want = std::max(1, std::min({sms, sampling::kResidentMaxCtas, a.vocab / 256}));  // slices >= 256
  const int chunk = ceil_div(ceil_div(a.vocab, want), kVec) * kVec;
  const int ctas = ceil_div(a.vocab, chunk);
  const size_t smem = static_cast<size_t>(a.num_rows) * chunk * sizeof(T);
  if (a.batch == 0 || a.batch > sampling::kResidentMaxBatch || a.num_rows > sampling::kResidentMaxRows ||
      chunk > sampling::kResidentMaxChunk || a.vocab % kVec != 0 || smem > kResidentSmem ||
      !rows_vectorizable(a.map.target, a.map.target_stride) || !rows_vectorizable(a.map.draft, a.map.draft_stride))
    return false;
  static bool done[kMaxDevices] = {};
  check_cuda_call(once_per_device(done, [] {
                    return cudaFuncSetAttribute(sampling::chain_resident_kernel<T, kVec>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(kResidentSmem));
                  }),
                  "chain_resident_kernel shared memory");
  a.S = a.S2 = ctas;
  a.chunk = a.chunk2 = chunk;
  const int64_t tokens = static_cast<int64_t>(a.batch) * a.map.K;
  ws = make_workspace(ref, static_cast<int64_t>(a.num_rows) * ctas, static_cast<int64_t>(a.batch) * ctas, 0, 0,
                      2 * static_cast<int64_t>(a.batch), 2 * tokens);
  a.partials = ws.partials;
  a.picks = ws.picks;
  a.final_count = ws.final_count;
  a.ready = ws.ready;
  a.token_logits = ws.floats;
  check_cuda_call(launch_pdl(sampling::zero_kernel, dim3(ceil_div(2 * a.batch, sampling::kThreads)),
                             dim3(sampling::kThreads), 0, stream, a.final_count, 2 * a.batch),
                  "zero kernel launch");
  check_cuda_call(launch_pdl(sampling::chain_resident_kernel<T, kVec>, dim3(static_cast<unsigned>(ctas)),
                             dim3(sampling::kResidentThreads), smem, stream, a),
                  "chain_resident kernel launch");
  return true;
}

}  // namespace

void sample_tokens(at::Tensor& out, const at::Tensor& logits, const at::Tensor& temperature, const OptTensor& top_k,
                   const OptTensor& top_p, const OptTensor& saguaro_x, int64_t saguaro_f, int64_t seed, int64_t offset,
                   const OptTensor& offset_tensor) {
  check_cuda(logits, "logits");
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) >= 1, "ssdk: logits must have shape [B, V], got ", shape_str(logits));
  const int64_t batch = logits.size(0), vocab = logits.size(1);
  TORCH_CHECK(vocab < (int64_t{1} << 30), "ssdk: vocabulary too large");
  check_vec(temperature, "temperature", batch, at::kFloat, logits);
  check_filter_args(top_k, top_p, saguaro_x, saguaro_f, batch, vocab, logits);
  check_out(out, "out", {batch}, at::kLong, logits);
  const c10::cuda::CUDAGuard guard(logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int sms = sm_count(logits.get_device());
  dispatch_logits(logits.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    VerifyArgs<T> a{};
    a.map = {reinterpret_cast<const T*>(logits.data_ptr()), row_stride(logits, "logits"), nullptr, 0, 0, 0, nullptr,
             static_cast<int>(batch)};
    a.temperature = temperature.data_ptr<float>();
    a.sampled = out.data_ptr<int64_t>();
    set_batch_and_rng(a, batch, vocab, seed, offset, offset_tensor, logits);
    const Filters f = make_filters(a.temperature, top_k, top_p, saguaro_x, saguaro_f, /*sag_target=*/true);
    Workspace ws;
    a.num_rows = f.any() ? static_cast<int>(batch) : 0;  // without filters sampling needs no statistics
    prepare(a, f, true, false, logits, ws, sms, stream);
    launch_verify<T, sampling::kSample>(a, stream);
  });
}

void probs_from_logits(at::Tensor& out, const at::Tensor& logits, const at::Tensor& temperature, const OptTensor& top_k,
                       const OptTensor& top_p, const OptTensor& saguaro_x, int64_t saguaro_f) {
  check_cuda(logits, "logits");
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) >= 1, "ssdk: logits must have shape [B, V], got ", shape_str(logits));
  const int64_t batch = logits.size(0), vocab = logits.size(1);
  check_vec(temperature, "temperature", batch, at::kFloat, logits);
  check_filter_args(top_k, top_p, saguaro_x, saguaro_f, batch, vocab, logits);
  check_out(out, "out", {batch, vocab}, at::kFloat, logits);
  if (batch == 0) return;
  const c10::cuda::CUDAGuard guard(logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_logits(logits.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const RowMap<T> map{reinterpret_cast<const T*>(logits.data_ptr()), row_stride(logits, "logits"), nullptr, 0, 0, 0,
                        nullptr, static_cast<int>(batch)};
    const Filters f =
        make_filters(temperature.data_ptr<float>(), top_k, top_p, saguaro_x, saguaro_f, /*sag_target=*/true);
    Workspace ws = make_workspace(logits, 0, 0, batch);
    launch_filter<T>(map, static_cast<int>(batch), static_cast<int>(vocab), f, ws.dists, stream);
    int parts, chunk;
    split(static_cast<int>(vocab), ceil_div(4 * sm_count(logits.get_device()), batch), parts, chunk);
    check_cuda_call(launch_pdl(sampling::write_probs_kernel<T, 16 / sizeof(T)>,
                               dim3(static_cast<unsigned>(batch), static_cast<unsigned>(parts)),
                               dim3(sampling::kThreads), 0, stream, map.target, map.target_stride,
                               static_cast<const RowDist*>(ws.dists), out.data_ptr<float>(), static_cast<int>(vocab),
                               chunk, rows_vectorizable(map.target, map.target_stride)),
                    "write_probs kernel launch");
  });
}

void saguaro_rescale(at::Tensor& out, const at::Tensor& probs, const at::Tensor& x, int64_t F) {
  check_cuda(probs, "probs");
  check_dtype(probs, at::kFloat, "probs");
  check_contiguous(probs, "probs");
  TORCH_CHECK(probs.dim() == 2 && probs.size(1) >= 1, "ssdk: probs must have shape [B, V], got ", shape_str(probs));
  const int64_t batch = probs.size(0), vocab = probs.size(1);
  check_same_device(x, probs, "x", "probs");
  check_dtype(x, at::kFloat, "x");
  TORCH_CHECK(x.dim() == 1 && x.size(0) == batch && x.is_contiguous(), "ssdk: x must be a contiguous [", batch,
              "] tensor, got ", shape_str(x));
  TORCH_CHECK(F >= 0 && F < vocab, "ssdk: F must be in [0, vocab), got ", F);
  check_same_device(out, probs, "out", "probs");
  check_dtype(out, at::kFloat, "out");
  check_contiguous(out, "out");
  TORCH_CHECK(out.sizes() == probs.sizes(), "ssdk: out must have the shape of probs, got ", shape_str(out));
  if (batch == 0) return;
  const c10::cuda::CUDAGuard guard(probs.device());
  sampling::saguaro_rescale_kernel<<<batch, sampling::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      probs.data_ptr<float>(), x.data_ptr<float>(), out.data_ptr<float>(), static_cast<int>(vocab), static_cast<int>(F));
  check_cuda_call(cudaGetLastError(), "saguaro_rescale kernel launch");
}

void chain_speculative_sampling(at::Tensor& output_token_ids, at::Tensor& accepted_num, at::Tensor& emitted_num,
                                const at::Tensor& draft_probs, const at::Tensor& draft_token_ids,
                                const at::Tensor& target_probs, int64_t seed, int64_t offset,
                                const OptTensor& offset_tensor) {
  check_cuda(target_probs, "target_probs");
  check_dtype(target_probs, at::kFloat, "target_probs");
  TORCH_CHECK(target_probs.dim() == 3 && target_probs.size(1) >= 1, "ssdk: target_probs must have shape [B, K+1, V], got ",
              shape_str(target_probs));
  const int64_t batch = target_probs.size(0), k = target_probs.size(1) - 1, vocab = target_probs.size(2);
  check_same_device(draft_probs, target_probs, "draft_probs", "target_probs");
  check_dtype(draft_probs, at::kFloat, "draft_probs");
  TORCH_CHECK(draft_probs.sizes() == at::IntArrayRef({batch, k, vocab}), "ssdk: draft_probs must have shape [", batch,
              ", ", k, ", ", vocab, "], got ", shape_str(draft_probs));
  check_ids(draft_token_ids, "draft_token_ids", {batch, k}, target_probs);
  check_out(output_token_ids, "output_token_ids", {batch, k + 1}, at::kInt, target_probs);
  check_vec(accepted_num, "accepted_num", batch, at::kInt, target_probs);
  check_vec(emitted_num, "emitted_num", batch, at::kInt, target_probs);
  const c10::cuda::CUDAGuard guard(target_probs.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int sms = sm_count(target_probs.get_device());
  VerifyArgs<float> a{};
  a.map = {target_probs.data_ptr<float>(), row_stride(target_probs, "target_probs"), nullptr, 0,
           static_cast<int>(k + 1), static_cast<int>(k), nullptr, static_cast<int>(batch)};
  a.draft_probs = draft_probs.data_ptr<float>();
  a.draft_probs_stride = row_stride(draft_probs, "draft_probs");
  a.ids = draft_token_ids.data_ptr();
  a.ids_int64 = draft_token_ids.scalar_type() == at::kLong;
  a.out_tokens = output_token_ids.data_ptr<int32_t>();
  a.accept_len = nullptr;
  a.fi_accepted = accepted_num.data_ptr<int32_t>();
  a.fi_emitted = emitted_num.data_ptr<int32_t>();
  a.out_width = static_cast<int>(k + 1);
  a.num_rows = 0;
  set_batch_and_rng(a, batch, vocab, seed, offset, offset_tensor, target_probs);
  // accept_len is an output of the shared path: park it in the workspace.
  Workspace ws;
  prepare(a, Filters{}, true, false, target_probs, ws, sms, stream);
  at::Tensor scratch_len = at::empty({batch}, target_probs.options().dtype(at::kInt));
  a.accept_len = scratch_len.data_ptr<int32_t>();
  launch_verify<float, sampling::kChainProbs>(a, stream);
}

void verify_chain(at::Tensor& out_tokens, at::Tensor& accept_len, const at::Tensor& target_logits,
                  const at::Tensor& draft_token_ids, const OptTensor& draft_logits, const OptTensor& draft_probs,
                  const OptTensor& temperature, const OptTensor& top_k, const OptTensor& top_p,
                  const OptTensor& saguaro_x, int64_t saguaro_f, int64_t seed, int64_t offset,
                  const OptTensor& offset_tensor) {
  check_cuda(target_logits, "target_logits");
  TORCH_CHECK(target_logits.dim() == 3 && target_logits.size(1) >= 1 && target_logits.size(2) >= 1,
              "ssdk: target_logits must have shape [B, K+1, V], got ", shape_str(target_logits));
  const int64_t batch = target_logits.size(0), k = target_logits.size(1) - 1, vocab = target_logits.size(2);
  check_ids(draft_token_ids, "draft_token_ids", {batch, k}, target_logits);
  check_opt_vec(temperature, "temperature", batch, at::kFloat, target_logits);
  check_filter_args(top_k, top_p, saguaro_x, saguaro_f, batch, vocab, target_logits);
  TORCH_CHECK(!(draft_logits.has_value() && draft_probs.has_value()), "ssdk: pass draft_logits or draft_probs, not both");
  if (draft_logits.has_value()) {
    check_same_device(*draft_logits, target_logits, "draft_logits", "target_logits");
    check_dtype(*draft_logits, target_logits.scalar_type(), "draft_logits");
    TORCH_CHECK(draft_logits->sizes() == at::IntArrayRef({batch, k, vocab}), "ssdk: draft_logits must have shape [",
                batch, ", ", k, ", ", vocab, "], got ", shape_str(*draft_logits));
  }
  if (draft_probs.has_value()) {
    check_same_device(*draft_probs, target_logits, "draft_probs", "target_logits");
    check_dtype(*draft_probs, at::kFloat, "draft_probs");
    TORCH_CHECK(draft_probs->sizes() == at::IntArrayRef({batch, k, vocab}), "ssdk: draft_probs must have shape [",
                batch, ", ", k, ", ", vocab, "], got ", shape_str(*draft_probs));
  }
  TORCH_CHECK(!temperature.has_value() || k == 0 || draft_logits.has_value() || draft_probs.has_value(),
              "ssdk: stochastic verification (temperature given) needs draft_logits or draft_probs");
  check_out(out_tokens, "out_tokens", {batch, k + 1}, at::kInt, target_logits);
  check_out(accept_len, "accept_len", {batch}, at::kInt, target_logits);
  const c10::cuda::CUDAGuard guard(target_logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int sms = sm_count(target_logits.get_device());
  dispatch_logits(target_logits.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    VerifyArgs<T> a{};
    // Greedy verification (temperature None) never reads the draft.
    const bool with_draft_logits = draft_logits.has_value() && k > 0 && temperature.has_value();
    const int rpr = static_cast<int>(k + 1 + (with_draft_logits ? k : 0));
    a.map = {reinterpret_cast<const T*>(target_logits.data_ptr()), row_stride(target_logits, "target_logits"),
             with_draft_logits ? reinterpret_cast<const T*>(draft_logits->data_ptr()) : nullptr,
             with_draft_logits ? row_stride(*draft_logits, "draft_logits") : 0, rpr, static_cast<int>(k), nullptr,
             static_cast<int>(batch)};
    if (draft_probs.has_value()) {
      a.draft_probs = draft_probs->data_ptr<float>();
      a.draft_probs_stride = row_stride(*draft_probs, "draft_probs");
    }
    a.ids = draft_token_ids.data_ptr();
    a.ids_int64 = draft_token_ids.scalar_type() == at::kLong;
    a.temperature = ptr_or_null<float>(temperature);
    a.out_tokens = out_tokens.data_ptr<int32_t>();
    a.accept_len = accept_len.data_ptr<int32_t>();
    a.out_width = static_cast<int>(k + 1);
    a.num_rows = static_cast<int>(batch) * rpr;
    set_batch_and_rng(a, batch, vocab, seed, offset, offset_tensor, target_logits);
    // Saguaro rescaling applies to the draft rows, which only the stochastic path reads.
    const Filters f = make_filters(a.temperature, top_k, top_p, with_draft_logits ? saguaro_x : OptTensor{}, saguaro_f,
                                   /*sag_target=*/false);
    Workspace ws;
    if (with_draft_logits && !f.any() && launch_chain_resident<T>(a, target_logits, ws, sms, stream)) return;
    prepare(a, f, temperature.has_value(), /*long_chunks=*/true, target_logits, ws, sms, stream);
    launch_verify<T, sampling::kChain>(a, stream);
  });
}

void verify_tree(at::Tensor& accept_len, at::Tensor& accept_nodes, at::Tensor& out_tokens, const at::Tensor& target_logits,
                 const at::Tensor& tokens, const at::Tensor& parents, const at::Tensor& qo_indptr,
                 const OptTensor& temperature, const OptTensor& top_k, const OptTensor& top_p, int64_t seed,
                 int64_t offset, const OptTensor& offset_tensor) {
  check_cuda(target_logits, "target_logits");
  TORCH_CHECK(target_logits.dim() == 2 && target_logits.size(1) >= 1, "ssdk: target_logits must have shape [N, V], got ",
              shape_str(target_logits));
  const int64_t n_total = target_logits.size(0), vocab = target_logits.size(1);
  check_ids(tokens, "tokens", {n_total}, target_logits);
  check_vec(parents, "parents", n_total, at::kInt, target_logits);
  TORCH_CHECK(qo_indptr.dim() == 1 && qo_indptr.size(0) >= 1, "ssdk: qo_indptr must have shape [B+1], got ",
              shape_str(qo_indptr));
  const int64_t batch = qo_indptr.size(0) - 1;
  check_vec(qo_indptr, "qo_indptr", batch + 1, at::kInt, target_logits);
  check_opt_vec(temperature, "temperature", batch, at::kFloat, target_logits);
  check_opt_vec(top_k, "top_k", batch, at::kInt, target_logits);
  check_opt_vec(top_p, "top_p", batch, at::kFloat, target_logits);
  check_vec(accept_len, "accept_len", batch, at::kInt, target_logits);
  TORCH_CHECK(accept_nodes.dim() == 2 && accept_nodes.size(0) == batch && accept_nodes.size(1) >= 1,
              "ssdk: accept_nodes must have shape [", batch, ", D+1], got ", shape_str(accept_nodes));
  const int64_t width = accept_nodes.size(1);
  TORCH_CHECK(width <= sampling::kMaxTreeNodes, "ssdk: max_depth must be < ", sampling::kMaxTreeNodes);
  check_out(accept_nodes, "accept_nodes", {batch, width}, at::kInt, target_logits);
  check_out(out_tokens, "out_tokens", {batch, width}, at::kInt, target_logits);
  const c10::cuda::CUDAGuard guard(target_logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int sms = sm_count(target_logits.get_device());
  dispatch_logits(target_logits.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    VerifyArgs<T> a{};
    a.map = {reinterpret_cast<const T*>(target_logits.data_ptr()), row_stride(target_logits, "target_logits"), nullptr,
             0, 0, 0, qo_indptr.data_ptr<int32_t>(), static_cast<int>(batch)};
    a.ids = tokens.data_ptr();
    a.ids_int64 = tokens.scalar_type() == at::kLong;
    a.parents = parents.data_ptr<int32_t>();
    a.temperature = ptr_or_null<float>(temperature);
    a.out_tokens = out_tokens.data_ptr<int32_t>();
    a.accept_len = accept_len.data_ptr<int32_t>();
    a.accept_nodes = accept_nodes.data_ptr<int32_t>();
    a.out_width = static_cast<int>(width);
    a.num_rows = static_cast<int>(n_total);
    set_batch_and_rng(a, batch, vocab, seed, offset, offset_tensor, target_logits);
    const Filters f = make_filters(a.temperature, top_k, top_p, OptTensor{}, 0, /*sag_target=*/false);
    Workspace ws;
    prepare(a, f, temperature.has_value(), false, target_logits, ws, sms, stream);
    launch_verify<T, sampling::kTree>(a, stream);
  });
}

void verify_tree_greedy(at::Tensor& predicts, at::Tensor& accept_index, at::Tensor& accept_token_num,
                        const at::Tensor& candidates, const at::Tensor& retrive_index,
                        const at::Tensor& retrive_next_token, const at::Tensor& retrive_next_sibling,
                        const at::Tensor& target_predict) {
  check_cuda(candidates, "candidates");
  TORCH_CHECK(candidates.dim() == 2, "ssdk: candidates must have shape [B, num_draft], got ", shape_str(candidates));
  const int64_t batch = candidates.size(0), num_draft = candidates.size(1);
  for (auto [t, name] : {std::pair<const at::Tensor&, const char*>{candidates, "candidates"},
                         {retrive_index, "retrive_index"}, {retrive_next_token, "retrive_next_token"},
                         {retrive_next_sibling, "retrive_next_sibling"}, {target_predict, "target_predict"}}) {
    check_out(t, name, {batch, num_draft}, at::kLong, candidates);
  }
  check_out(predicts, "predicts", {batch * num_draft}, at::kInt, candidates);
  TORCH_CHECK(accept_index.dim() == 2 && accept_index.size(0) == batch && accept_index.size(1) >= 1,
              "ssdk: accept_index must have shape [", batch, ", num_spec_step], got ", shape_str(accept_index));
  check_out(accept_index, "accept_index", accept_index.sizes(), at::kInt, candidates);
  check_out(accept_token_num, "accept_token_num", {batch}, at::kInt, candidates);
  if (batch == 0) return;
  const c10::cuda::CUDAGuard guard(candidates.device());
  sampling::verify_tree_greedy_kernel<<<ceil_div(batch, 128), 128, 0, c10::cuda::getCurrentCUDAStream()>>>(
      predicts.data_ptr<int32_t>(), accept_index.data_ptr<int32_t>(), accept_token_num.data_ptr<int32_t>(),
      candidates.data_ptr<int64_t>(), retrive_index.data_ptr<int64_t>(), retrive_next_token.data_ptr<int64_t>(),
      retrive_next_sibling.data_ptr<int64_t>(), target_predict.data_ptr<int64_t>(), static_cast<int>(batch),
      static_cast<int>(accept_index.size(1)), static_cast<int>(num_draft));
  check_cuda_call(cudaGetLastError(), "verify_tree_greedy kernel launch");
}

TORCH_LIBRARY_IMPL(ssdk, CUDA, m) {
  m.impl("sample_tokens", &sample_tokens);
  m.impl("probs_from_logits", &probs_from_logits);
  m.impl("saguaro_rescale", &saguaro_rescale);
  m.impl("chain_speculative_sampling", &chain_speculative_sampling);
  m.impl("verify_chain", &verify_chain);
  m.impl("verify_tree", &verify_tree);
  m.impl("verify_tree_greedy", &verify_tree_greedy);
}

}  // namespace ssdk

// Launch-configuration sweep for the skinny linear kernel (include/ssdk/linear.cuh): rows per warp R and
// chunks in flight U for each padded row count MT, on the Llama-3.1-8B / Qwen3-8B decode shapes, bf16.
// Timing from tune_timing.cuh (CUDA graph of back-to-back PDL launches, median over replays), but
// with cold weights: each launch reads the next of enough weight copies to exceed 2x the L2, as the
// engine does (every decode step streams all weights from HBM). Picks the rule in gemv::launch_rows.
//   bash bench_kernels/tune_linear.sh   (GPU machine)
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "ssdk/linear.cuh"
#include "tune_timing.cuh"

using bf16 = __nv_bfloat16;
constexpr size_t kColdBytes = size_t{128} << 20;

struct Problem {
  const char* name;
  int n, k;
  std::vector<bf16*> weights;  // cold copies
  bf16 *x, *out;
  int num_sms;
  float copy_gbps;
};

template <int MT, int R, int U>
void sweep_one(Problem& p, int m) {
  ssdk::gemv::LinearArgs<bf16> a{p.out, p.x, p.weights[0], nullptr, p.n, p.k, p.k, m, p.n, p.k, p.num_sms};
  const int copies = static_cast<int>(p.weights.size());
  const int launches = std::max(20, copies);
  const float us = time_us(launches, [&](cudaStream_t s, int i) {
    a.weight = p.weights[i % copies];
    return ssdk::gemv::launch_config<bf16, MT, R, U, 8>(a, s);
  });
  const double gbps = 2.0 * p.n * p.k / (us * 1e-6) / 1e9;
  std::printf("%-10s M=%d N=%-6d K=%-6d MT=%d R=%d U=%d  %9.2f us  %6.0f GB/s  %5.1f%%\n", p.name, m, p.n, p.k, MT,
              R, U, us, gbps, 100 * gbps / p.copy_gbps);
}

template <int MT>
void sweep_rows(Problem& p, int m) {
  sweep_one<MT, 1, 8>(p, m);
  sweep_one<MT, 2, 4>(p, m);
  sweep_one<MT, 2, 8>(p, m);
  sweep_one<MT, 4, 2>(p, m);
  sweep_one<MT, 4, 4>(p, m);
}

float copy_bandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a, *b;
  CHECK(cudaMalloc(&a, bytes));
  CHECK(cudaMalloc(&b, bytes));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  std::vector<float> ms(10);
  for (auto& t : ms) {
    CHECK(cudaEventRecord(start));
    CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    CHECK(cudaEventElapsedTime(&t, start, stop));
  }
  std::sort(ms.begin(), ms.end());
  CHECK(cudaFree(a));
  CHECK(cudaFree(b));
  return 2.0 * bytes / (ms[5] * 1e-3) / 1e9;
}

int main() {
  int num_sms = 0;
  CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, 0));
  const float copy_gbps = copy_bandwidth();
  std::printf("# skinny linear sweep, %d SMs, copy bandwidth %.0f GB/s, cold weights\n", num_sms, copy_gbps);
  const struct { const char* name; int n, k; } shapes[] = {
      {"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336},
      {"lm_head", 128256, 4096}, {"q3_down", 4096, 12288}};
  for (const auto& s : shapes) {
    Problem p{s.name, s.n, s.k, {}, nullptr, nullptr, num_sms, copy_gbps};
    const size_t w_bytes = size_t{2} * s.n * s.k;
    const int copies = static_cast<int>(std::max<size_t>(1, (kColdBytes + w_bytes - 1) / w_bytes));
    for (int i = 0; i < copies; ++i) {
      bf16* w;
      CHECK(cudaMalloc(&w, w_bytes));
      fill_kernel<<<1024, 256>>>(w, w_bytes / 2, 0.02f);
      p.weights.push_back(w);
    }
    CHECK(cudaMalloc(&p.x, size_t{2} * 8 * s.k));
    CHECK(cudaMalloc(&p.out, size_t{2} * 8 * s.n));
    fill_kernel<<<64, 256>>>(p.x, size_t{8} * s.k, 1.f);
    CHECK(cudaDeviceSynchronize());
    sweep_rows<1>(p, 1);
    sweep_rows<2>(p, 2);
    sweep_rows<4>(p, 4);
    sweep_rows<8>(p, 8);
    for (bf16* w : p.weights) CHECK(cudaFree(w));
    CHECK(cudaFree(p.x));
    CHECK(cudaFree(p.out));
  }
  return 0;
}

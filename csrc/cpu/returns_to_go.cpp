// CPU kernel of ssorl::returns_to_go: discounted return-to-go per episode.
// Accumulates backwards in float64 and stores float32, the same arithmetic as
// every other backend, so results agree exactly.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

#include "checks.h"

namespace ssorl {

void returns_to_go_cpu(const at::Tensor& rewards, const at::Tensor& step_start,
                       const at::Tensor& lengths, double gamma, at::Tensor& out) {
  constexpr const char* kOp = "returns_to_go";
  const auto cpu = c10::DeviceType::CPU;
  check_tensor(rewards, kOp, "rewards", at::kFloat, 1, cpu);
  check_tensor(step_start, kOp, "step_start", at::kLong, 1, cpu);
  check_tensor(lengths, kOp, "lengths", at::kLong, 1, cpu);
  check_tensor(out, kOp, "out", at::kFloat, 1, cpu);
  const int64_t N = rewards.size(0);
  const int64_t E = step_start.size(0);
  check_size(lengths, kOp, "lengths", 0, E, "one length per episode");
  check_size(out, kOp, "out", 0, N, "one per step, like rewards");
  const float* r = rewards.data_ptr<float>();
  const int64_t* ss = step_start.data_ptr<int64_t>();
  const int64_t* len = lengths.data_ptr<int64_t>();
  float* y = out.data_ptr<float>();
  for (int64_t e = 0; e < E; ++e) {
    TORCH_CHECK_INDEX(ss[e] >= 0 && len[e] >= 1 && ss[e] + len[e] <= N, "ssorl.", kOp,
                      ": episode ", e, " spans global steps [", ss[e], ", ", ss[e] + len[e],
                      ") but rewards has ", N,
                      " steps. Pass the episode table of these rewards (lengths >= 1).");
  }
  at::parallel_for(0, E, 1, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      double acc = 0.0;
      for (int64_t g = ss[e] + len[e] - 1; g >= ss[e]; --g) {
        acc = static_cast<double>(r[g]) + gamma * acc;
        y[g] = static_cast<float>(acc);
      }
    }
  });
}

TORCH_LIBRARY_IMPL(ssorl, CPU, m) { m.impl("returns_to_go", &returns_to_go_cpu); }

}  // namespace ssorl

// CPU kernel of ssorl::returns_to_go: discounted return-to-go per episode.
// Accumulates backwards in float64 and stores float32, the same arithmetic as
// every other backend, so results agree exactly.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

#include "../op_args.h"

namespace ssorl {

void returns_to_go_cpu(const at::Tensor& rewards, const at::Tensor& step_start,
                       const at::Tensor& lengths, double gamma, at::Tensor& out) {
  const ReturnsToGoSizes sz =
      check_returns_to_go_args(rewards, step_start, lengths, out, c10::DeviceType::CPU);
  // Plain locals, not structured bindings: C++17 lambdas cannot capture those.
  const int64_t N = sz.N, E = sz.E;
  const float* r = rewards.data_ptr<float>();
  const int64_t* ss = step_start.data_ptr<int64_t>();
  const int64_t* len = lengths.data_ptr<int64_t>();
  float* y = out.data_ptr<float>();
  check_returns_to_go_episodes(ss, len, E, N);
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

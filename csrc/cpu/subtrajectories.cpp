// CPU kernel of ssorl::subtrajectories: left-padded context windows for
// Decision-Transformer-style models, normalised in the same pass, from float32 or
// uint8 observation rows (one loop, instantiated per dtype).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../op_args.h"
#include "kernel_utils.h"

namespace ssorl {
namespace {

constexpr const char* kOp = "subtrajectories";
// Samples ahead whose rows are prefetched (see idm_windows.cpp); each sample
// reads about 30 cache lines, so a few samples ahead keep the memory system busy.
constexpr int64_t kPrefetchAhead = 4;

inline void prefetch_range(const void* begin, int64_t bytes) {
  const char* p = static_cast<const char*>(begin);
  for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(p + i);
  if (bytes > 0) __builtin_prefetch(p + bytes - 1);
}

// Raises for the first sample whose start is not inside its episode; run only
// when the kernel found one (see idm_windows.cpp).
void check_samples(int64_t R, int64_t N, int64_t E, const int64_t* step_start,
                   const int64_t* lengths, const int64_t* episode_index, const int64_t* start,
                   int64_t B) {
  for (int64_t b = 0; b < B; ++b) {
    const int64_t e = episode_index[b];
    check_sample_episode(kOp, b, e, E);
    const int64_t s = step_start[e];
    const int64_t T = lengths[e];
    const int64_t t0 = start[b];
    TORCH_CHECK_INDEX(t0 >= 0 && t0 < T, "ssorl.", kOp, ": sample ", b, " has start ", t0,
                      ", outside its episode ", e, " (local steps [0, ", T,
                      ")). Pass a local step index of that episode.");
    TORCH_CHECK_INDEX(s >= 0 && s + T <= N && s + T + e <= R, "ssorl.", kOp, ": sample ", b,
                      " (episode ", e, ") spans global steps [", s, ", ", s + T,
                      ") but the step arrays have ", N, " rows and observations ", R,
                      ". The episode table does not match the arrays.");
  }
}

}  // namespace

void subtrajectories_cpu(const at::Tensor& observations, const at::Tensor& actions,
                         const at::Tensor& returns_to_go, const at::Tensor& step_start,
                         const at::Tensor& lengths, const at::Tensor& episode_index,
                         const at::Tensor& start, const at::Tensor& mean, const at::Tensor& std,
                         int64_t context, at::Tensor& states_out, at::Tensor& actions_out,
                         at::Tensor& rtg_out, at::Tensor& timesteps_out, at::Tensor& mask_out) {
  const SubtrajectoriesSizes sz = check_subtrajectories_args(
      observations, actions, returns_to_go, step_start, lengths, episode_index, start, mean, std,
      context, states_out, actions_out, rtg_out, timesteps_out, mask_out, c10::DeviceType::CPU);
  // Plain locals, not structured bindings: C++17 lambdas cannot capture those.
  const int64_t R = sz.R, D = sz.D, N = sz.N, A = sz.A, E = sz.E, B = sz.B, K = sz.K;

  const float* Act = actions.data_ptr<float>();
  const float* G = returns_to_go.data_ptr<float>();
  const int64_t* ss = step_start.data_ptr<int64_t>();
  const int64_t* len = lengths.data_ptr<int64_t>();
  const int64_t* ei = episode_index.data_ptr<int64_t>();
  const int64_t* st = start.data_ptr<int64_t>();
  const float* mu = mean.data_ptr<float>();
  const float* sd = std.data_ptr<float>();
  float* S = states_out.data_ptr<float>();
  float* AO = actions_out.data_ptr<float>();
  float* RO = rtg_out.data_ptr<float>();
  int64_t* TO = timesteps_out.data_ptr<int64_t>();
  bool* M = mask_out.data_ptr<bool>();
  const std::vector<float> mu_k = tile(mu, D, K), sd_k = tile(sd, D, K);
  std::atomic<int64_t> first_bad{B};

  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, K * (D + A + 4)));
  SSORL_DISPATCH_OBSERVATIONS(observations.scalar_type(), kOp, [&] {
    const scalar_t* X = observations.data_ptr<scalar_t>();
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t a = b + kPrefetchAhead;
        if (a < b1 && ei[a] >= 0 && ei[a] < E) {
          // Prefetch never faults, so an unchecked start here is harmless.
          const int64_t n = std::min(K, len[ei[a]] - st[a]);
          const int64_t g = ss[ei[a]] + st[a];
          prefetch_range(X + (g + ei[a]) * D, n * D * sizeof(scalar_t));
          prefetch_range(Act + g * A, n * A * sizeof(float));
          prefetch_range(G + g, n * sizeof(float));
        }
        const int64_t e = ei[b];
        const int64_t t0 = st[b];
        if (e < 0 || e >= E || t0 < 0 || t0 >= len[e] || ss[e] < 0 || ss[e] + len[e] > N ||
            ss[e] + len[e] + e > R) {
          record_bad_sample(first_bad, b);
          continue;
        }
        const int64_t L = std::min(K, len[e] - t0);  // real steps, placed last
        const int64_t pad = K - L;
        const int64_t g0 = ss[e] + t0;  // global step of the first real step
        float* s_b = S + b * K * D;
        float* a_b = AO + b * K * A;
        std::memset(s_b, 0, sizeof(float) * pad * D);
        std::memset(a_b, 0, sizeof(float) * pad * A);
        std::memset(RO + b * K, 0, sizeof(float) * pad);
        std::memset(TO + b * K, 0, sizeof(int64_t) * pad);
        std::memset(M + b * K, 0, sizeof(bool) * pad);
        normalise(X + (g0 + e) * D, mu_k.data(), sd_k.data(), s_b + pad * D, L * D);
        std::memcpy(a_b + pad * A, Act + g0 * A, sizeof(float) * L * A);
        std::memcpy(RO + b * K + pad, G + g0, sizeof(float) * L);
        int64_t* ts = TO + b * K + pad;
        bool* m = M + b * K + pad;
        for (int64_t i = 0; i < L; ++i) {
          ts[i] = t0 + i;
          m[i] = true;
        }
      }
    });
  });
  if (first_bad.load() < B) {
    check_samples(R, N, E, ss, len, ei, st, B);
  }
}

TORCH_LIBRARY_IMPL(ssorl, CPU, m) { m.impl("subtrajectories", &subtrajectories_cpu); }

}  // namespace ssorl

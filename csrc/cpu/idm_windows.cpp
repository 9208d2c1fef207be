// CPU kernel of ssorl::idm_windows: gather + normalise IDM windows in one pass, from
// float32 or uint8 observation rows (one loop, instantiated per dtype).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../op_args.h"
#include "kernel_utils.h"

namespace ssorl {
namespace {

constexpr const char* kOp = "idm_windows";
// Samples ahead whose rows are prefetched: random rows of a corpus far larger than
// the caches are DRAM-latency bound, so keep several misses in flight.
constexpr int64_t kPrefetchAhead = 32;

// Raises for the first sample whose window is not inside its episode; run only
// when the kernel found one (the kernel skips such samples, never reads for them).
void check_samples(int64_t R, int64_t E, const int64_t* step_start, const int64_t* lengths,
                   const int64_t* episode_index, const int64_t* step_index, int64_t B) {
  for (int64_t b = 0; b < B; ++b) {
    const int64_t e = episode_index[b];
    check_sample_episode(kOp, b, e, E);
    const int64_t s = step_start[e];
    const int64_t T = lengths[e];
    const int64_t g = step_index[b];
    TORCH_CHECK_INDEX(g >= s && g < s + T, "ssorl.", kOp, ": sample ", b, " has step_index ", g,
                      ", outside its episode ", e, " (global steps [", s, ", ", s + T,
                      ")). Pass the global step of a step of that episode.");
    TORCH_CHECK_INDEX(s >= 0 && g + e + 1 < R, "ssorl.", kOp, ": sample ", b, " (episode ", e,
                      ", step ", g, ") needs observation rows [", s + e, ", ", g + e + 2,
                      ") but observations has ", R,
                      " rows. The episode table does not match the observations (N + E rows).");
  }
}

}  // namespace

void idm_windows_cpu(const at::Tensor& observations, const at::Tensor& step_start,
                     const at::Tensor& lengths, const at::Tensor& episode_index,
                     const at::Tensor& step_index, const at::Tensor& mean, const at::Tensor& std,
                     int64_t k, at::Tensor& out, at::Tensor& valid) {
  const IdmWindowsSizes sz =
      check_idm_windows_args(observations, step_start, lengths, episode_index, step_index, mean,
                             std, k, out, valid, c10::DeviceType::CPU);
  // Plain locals, not structured bindings: C++17 lambdas cannot capture those.
  const int64_t R = sz.R, D = sz.D, E = sz.E, B = sz.B, W = sz.W;

  const int64_t* ss = step_start.data_ptr<int64_t>();
  const int64_t* len = lengths.data_ptr<int64_t>();
  const int64_t* ei = episode_index.data_ptr<int64_t>();
  const int64_t* si = step_index.data_ptr<int64_t>();
  const float* mu = mean.data_ptr<float>();
  const float* sd = std.data_ptr<float>();
  float* Y = out.data_ptr<float>();
  bool* V = valid.data_ptr<bool>();
  const std::vector<float> mu_w = tile(mu, D, W), sd_w = tile(sd, D, W);
  std::atomic<int64_t> first_bad{B};

  // About 32 KiB of output per task: enough work to amortise scheduling.
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, W * D));
  SSORL_DISPATCH_OBSERVATIONS(observations.scalar_type(), kOp, [&] {
    const scalar_t* X = observations.data_ptr<scalar_t>();
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t a = b + kPrefetchAhead;
        if (a < b1 && ei[a] >= 0 && ei[a] < E) {
          // Prefetch never faults, so an unchecked step here is harmless.
          const int64_t lo = std::max(si[a] + ei[a] - k, ss[ei[a]] + ei[a]);
          const char* p = reinterpret_cast<const char*>(X + lo * D);
          const char* end = reinterpret_cast<const char*>(X + (si[a] + ei[a] + 2) * D);
          for (; p < end; p += 64) __builtin_prefetch(p);
          __builtin_prefetch(end - 1);
        }
        const int64_t e = ei[b];
        const int64_t g = si[b];
        if (e < 0 || e >= E || ss[e] < 0 || g < ss[e] || g >= ss[e] + len[e] || g + e + 1 >= R) {
          record_bad_sample(first_bad, b);
          continue;
        }
        const int64_t first_row = ss[e] + e;  // observation row of the episode's s_0
        const int64_t row_t = g + e;          // observation row of s_t
        float* y = Y + b * W * D;
        bool* v = V + b * W;
        if (row_t - k >= first_row) {
          // The common case: the whole window lies in the episode, W consecutive rows.
          normalise(X + (row_t - k) * D, mu_w.data(), sd_w.data(), y, W * D);
          std::fill(v, v + W, true);
          continue;
        }
        for (int64_t w = 0; w < W; ++w) {
          // w = 0 .. k are s_{t-k} .. s_t; w = k + 1 is s_{t+1}.
          int64_t row = row_t - k + w;
          const bool inside = row >= first_row;
          row = inside ? row : first_row;
          v[w] = inside;
          normalise(X + row * D, mu, sd, y + w * D, D);
        }
      }
    });
  });
  if (first_bad.load() < B) {
    check_samples(R, E, ss, len, ei, si, B);
  }
}

TORCH_LIBRARY_IMPL(ssorl, CPU, m) { m.impl("idm_windows", &idm_windows_cpu); }

}  // namespace ssorl

// CUDA registrations of the ssorl ops: checks arguments, calls the raw-pointer
// launchers of kernels.cu on the current stream, and turns a bad index found on
// the device into the same IndexError the CPU kernels raise. Compiled only when
// the build switch asks for CUDA (see ssorl_data/kernels/backend.py).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "../cpu/checks.h"
#include "kernels.cuh"

namespace ssorl {
namespace {

at::Tensor no_bad_sample(const at::Tensor& like) {
  return at::full({1}, std::numeric_limits<int64_t>::max(), like.options().dtype(at::kLong));
}

int64_t bad_sample_of(const at::Tensor& flag) { return flag.item<int64_t>(); }

}  // namespace

void idm_windows_cuda(const at::Tensor& observations, const at::Tensor& step_start,
                      const at::Tensor& lengths, const at::Tensor& episode_index,
                      const at::Tensor& step_index, const at::Tensor& mean, const at::Tensor& std,
                      int64_t k, at::Tensor& out, at::Tensor& valid) {
  constexpr const char* kOp = "idm_windows";
  const auto dev = c10::DeviceType::CUDA;
  check_tensor(observations, kOp, "observations", at::kFloat, 2, dev);
  check_tensor(step_start, kOp, "step_start", at::kLong, 1, dev);
  check_tensor(lengths, kOp, "lengths", at::kLong, 1, dev);
  check_tensor(episode_index, kOp, "episode_index", at::kLong, 1, dev);
  check_tensor(step_index, kOp, "step_index", at::kLong, 1, dev);
  check_tensor(mean, kOp, "mean", at::kFloat, 1, dev);
  check_tensor(std, kOp, "std", at::kFloat, 1, dev);
  check_tensor(out, kOp, "out", at::kFloat, 3, dev);
  check_tensor(valid, kOp, "valid", at::kBool, 2, dev);
  TORCH_CHECK_VALUE(k >= 0, "ssorl.", kOp, ": expected k >= 0 past states. Got ", k, " instead.");
  const int64_t D = observations.size(1), E = step_start.size(0), B = episode_index.size(0);
  check_size(lengths, kOp, "lengths", 0, E, "one length per episode");
  check_size(step_index, kOp, "step_index", 0, B, "one step per sample");
  check_size(mean, kOp, "mean", 0, D, "observation dim");
  check_size(std, kOp, "std", 0, D, "observation dim");
  check_size(out, kOp, "out", 0, B, "batch");
  check_size(out, kOp, "out", 1, k + 2, "k + 2 window rows");
  check_size(out, kOp, "out", 2, D, "observation dim");
  check_size(valid, kOp, "valid", 0, B, "batch");
  check_size(valid, kOp, "valid", 1, k + 2, "k + 2 window rows");
  const c10::cuda::CUDAGuard guard(observations.device());
  at::Tensor bad = no_bad_sample(observations);
  C10_CUDA_CHECK(cuda::idm_windows_launch(
      observations.data_ptr<float>(), observations.size(0), D, step_start.data_ptr<int64_t>(),
      lengths.data_ptr<int64_t>(), E, episode_index.data_ptr<int64_t>(),
      step_index.data_ptr<int64_t>(), B, mean.data_ptr<float>(), std.data_ptr<float>(), k,
      out.data_ptr<float>(), valid.data_ptr<bool>(),
      reinterpret_cast<long long*>(bad.data_ptr<int64_t>()), c10::cuda::getCurrentCUDAStream()));
  const int64_t b = bad_sample_of(bad);
  TORCH_CHECK_INDEX(b == std::numeric_limits<int64_t>::max(), "ssorl.", kOp, ": sample ", b,
                    " has episode_index ", episode_index[b].item<int64_t>(), " and step_index ",
                    step_index[b].item<int64_t>(),
                    ", which is not a step inside that episode of this episode table.");
}

void subtrajectories_cuda(const at::Tensor& observations, const at::Tensor& actions,
                          const at::Tensor& returns_to_go, const at::Tensor& step_start,
                          const at::Tensor& lengths, const at::Tensor& episode_index,
                          const at::Tensor& start, const at::Tensor& mean, const at::Tensor& std,
                          int64_t context, at::Tensor& states_out, at::Tensor& actions_out,
                          at::Tensor& rtg_out, at::Tensor& timesteps_out, at::Tensor& mask_out) {
  constexpr const char* kOp = "subtrajectories";
  const auto dev = c10::DeviceType::CUDA;
  check_tensor(observations, kOp, "observations", at::kFloat, 2, dev);
  check_tensor(actions, kOp, "actions", at::kFloat, 2, dev);
  check_tensor(returns_to_go, kOp, "returns_to_go", at::kFloat, 1, dev);
  check_tensor(step_start, kOp, "step_start", at::kLong, 1, dev);
  check_tensor(lengths, kOp, "lengths", at::kLong, 1, dev);
  check_tensor(episode_index, kOp, "episode_index", at::kLong, 1, dev);
  check_tensor(start, kOp, "start", at::kLong, 1, dev);
  check_tensor(mean, kOp, "mean", at::kFloat, 1, dev);
  check_tensor(std, kOp, "std", at::kFloat, 1, dev);
  check_tensor(states_out, kOp, "states_out", at::kFloat, 3, dev);
  check_tensor(actions_out, kOp, "actions_out", at::kFloat, 3, dev);
  check_tensor(rtg_out, kOp, "rtg_out", at::kFloat, 2, dev);
  check_tensor(timesteps_out, kOp, "timesteps_out", at::kLong, 2, dev);
  check_tensor(mask_out, kOp, "mask_out", at::kBool, 2, dev);
  TORCH_CHECK_VALUE(context >= 1, "ssorl.", kOp, ": expected context >= 1 steps. Got ", context,
                    " instead.");
  const int64_t D = observations.size(1), N = actions.size(0), A = actions.size(1);
  const int64_t E = step_start.size(0), B = episode_index.size(0), K = context;
  check_size(returns_to_go, kOp, "returns_to_go", 0, N, "one per step, like actions");
  check_size(lengths, kOp, "lengths", 0, E, "one length per episode");
  check_size(start, kOp, "start", 0, B, "one start per sample");
  check_size(mean, kOp, "mean", 0, D, "observation dim");
  check_size(std, kOp, "std", 0, D, "observation dim");
  check_size(states_out, kOp, "states_out", 0, B, "batch");
  check_size(states_out, kOp, "states_out", 1, K, "context");
  check_size(states_out, kOp, "states_out", 2, D, "observation dim");
  check_size(actions_out, kOp, "actions_out", 0, B, "batch");
  check_size(actions_out, kOp, "actions_out", 1, K, "context");
  check_size(actions_out, kOp, "actions_out", 2, A, "action dim");
  for (const auto* t : {&rtg_out, &timesteps_out, &mask_out}) {
    check_size(*t, kOp, "rtg_out/timesteps_out/mask_out", 0, B, "batch");
    check_size(*t, kOp, "rtg_out/timesteps_out/mask_out", 1, K, "context");
  }
  const c10::cuda::CUDAGuard guard(observations.device());
  at::Tensor bad = no_bad_sample(observations);
  C10_CUDA_CHECK(cuda::subtrajectories_launch(
      observations.data_ptr<float>(), observations.size(0), D, actions.data_ptr<float>(), N, A,
      returns_to_go.data_ptr<float>(), step_start.data_ptr<int64_t>(),
      lengths.data_ptr<int64_t>(), E, episode_index.data_ptr<int64_t>(),
      start.data_ptr<int64_t>(), B, mean.data_ptr<float>(), std.data_ptr<float>(), K,
      states_out.data_ptr<float>(), actions_out.data_ptr<float>(), rtg_out.data_ptr<float>(),
      timesteps_out.data_ptr<int64_t>(), mask_out.data_ptr<bool>(),
      reinterpret_cast<long long*>(bad.data_ptr<int64_t>()), c10::cuda::getCurrentCUDAStream()));
  const int64_t b = bad_sample_of(bad);
  TORCH_CHECK_INDEX(b == std::numeric_limits<int64_t>::max(), "ssorl.", kOp, ": sample ", b,
                    " has episode_index ", episode_index[b].item<int64_t>(), " and start ",
                    start[b].item<int64_t>(),
                    ", which is not a local step inside that episode of this episode table.");
}

void returns_to_go_cuda(const at::Tensor& rewards, const at::Tensor& step_start,
                        const at::Tensor& lengths, double gamma, at::Tensor& out) {
  constexpr const char* kOp = "returns_to_go";
  const auto dev = c10::DeviceType::CUDA;
  check_tensor(rewards, kOp, "rewards", at::kFloat, 1, dev);
  check_tensor(step_start, kOp, "step_start", at::kLong, 1, dev);
  check_tensor(lengths, kOp, "lengths", at::kLong, 1, dev);
  check_tensor(out, kOp, "out", at::kFloat, 1, dev);
  const int64_t N = rewards.size(0), E = step_start.size(0);
  check_size(lengths, kOp, "lengths", 0, E, "one length per episode");
  check_size(out, kOp, "out", 0, N, "one per step, like rewards");
  // The episode table is small: check it on the host before any device read.
  const at::Tensor ss = step_start.cpu(), len = lengths.cpu();
  const int64_t* s = ss.data_ptr<int64_t>();
  const int64_t* l = len.data_ptr<int64_t>();
  for (int64_t e = 0; e < E; ++e) {
    TORCH_CHECK_INDEX(s[e] >= 0 && l[e] >= 1 && s[e] + l[e] <= N, "ssorl.", kOp, ": episode ", e,
                      " spans global steps [", s[e], ", ", s[e] + l[e], ") but rewards has ", N,
                      " steps. Pass the episode table of these rewards (lengths >= 1).");
  }
  const c10::cuda::CUDAGuard guard(rewards.device());
  C10_CUDA_CHECK(cuda::returns_to_go_launch(rewards.data_ptr<float>(),
                                            step_start.data_ptr<int64_t>(),
                                            lengths.data_ptr<int64_t>(), E, gamma,
                                            out.data_ptr<float>(),
                                            c10::cuda::getCurrentCUDAStream()));
}

TORCH_LIBRARY_IMPL(ssorl, CUDA, m) {
  m.impl("idm_windows", &idm_windows_cuda);
  m.impl("subtrajectories", &subtrajectories_cuda);
  m.impl("returns_to_go", &returns_to_go_cuda);
}

}  // namespace ssorl

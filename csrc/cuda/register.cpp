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

#include "../op_args.h"
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
  const IdmWindowsSizes sz =
      check_idm_windows_args(observations, step_start, lengths, episode_index, step_index, mean,
                             std, k, out, valid, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(observations.device());
  at::Tensor bad = no_bad_sample(observations);
  SSORL_DISPATCH_OBSERVATIONS(observations.scalar_type(), kOp, [&] {
    C10_CUDA_CHECK(cuda::idm_windows_launch<scalar_t>(
        observations.data_ptr<scalar_t>(), sz.R, sz.D, step_start.data_ptr<int64_t>(),
        lengths.data_ptr<int64_t>(), sz.E, episode_index.data_ptr<int64_t>(),
        step_index.data_ptr<int64_t>(), sz.B, mean.data_ptr<float>(), std.data_ptr<float>(), k,
        out.data_ptr<float>(), valid.data_ptr<bool>(),
        reinterpret_cast<long long*>(bad.data_ptr<int64_t>()),
        c10::cuda::getCurrentCUDAStream()));
  });
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
  const SubtrajectoriesSizes sz = check_subtrajectories_args(
      observations, actions, returns_to_go, step_start, lengths, episode_index, start, mean, std,
      context, states_out, actions_out, rtg_out, timesteps_out, mask_out, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(observations.device());
  at::Tensor bad = no_bad_sample(observations);
  SSORL_DISPATCH_OBSERVATIONS(observations.scalar_type(), kOp, [&] {
    C10_CUDA_CHECK(cuda::subtrajectories_launch<scalar_t>(
        observations.data_ptr<scalar_t>(), sz.R, sz.D, actions.data_ptr<float>(), sz.N, sz.A,
        returns_to_go.data_ptr<float>(), step_start.data_ptr<int64_t>(),
        lengths.data_ptr<int64_t>(), sz.E, episode_index.data_ptr<int64_t>(),
        start.data_ptr<int64_t>(), sz.B, mean.data_ptr<float>(), std.data_ptr<float>(), sz.K,
        states_out.data_ptr<float>(), actions_out.data_ptr<float>(), rtg_out.data_ptr<float>(),
        timesteps_out.data_ptr<int64_t>(), mask_out.data_ptr<bool>(),
        reinterpret_cast<long long*>(bad.data_ptr<int64_t>()),
        c10::cuda::getCurrentCUDAStream()));
  });
  const int64_t b = bad_sample_of(bad);
  TORCH_CHECK_INDEX(b == std::numeric_limits<int64_t>::max(), "ssorl.", kOp, ": sample ", b,
                    " has episode_index ", episode_index[b].item<int64_t>(), " and start ",
                    start[b].item<int64_t>(),
                    ", which is not a local step inside that episode of this episode table.");
}

void returns_to_go_cuda(const at::Tensor& rewards, const at::Tensor& step_start,
                        const at::Tensor& lengths, double gamma, at::Tensor& out) {
  const ReturnsToGoSizes sz =
      check_returns_to_go_args(rewards, step_start, lengths, out, c10::DeviceType::CUDA);
  // The episode table is small: check it on the host before any device read.
  const at::Tensor ss = step_start.cpu(), len = lengths.cpu();
  check_returns_to_go_episodes(ss.data_ptr<int64_t>(), len.data_ptr<int64_t>(), sz.E, sz.N);
  const c10::cuda::CUDAGuard guard(rewards.device());
  C10_CUDA_CHECK(cuda::returns_to_go_launch(rewards.data_ptr<float>(),
                                            step_start.data_ptr<int64_t>(),
                                            lengths.data_ptr<int64_t>(), sz.E, gamma,
                                            out.data_ptr<float>(),
                                            c10::cuda::getCurrentCUDAStream()));
}

TORCH_LIBRARY_IMPL(ssorl, CUDA, m) {
  m.impl("idm_windows", &idm_windows_cuda);
  m.impl("subtrajectories", &subtrajectories_cuda);
  m.impl("returns_to_go", &returns_to_go_cuda);
}

}  // namespace ssorl

// Argument checks of the ssorl ops, one function per op, shared by the CPU
// kernels (csrc/cpu/*.cpp) and the CUDA registration (csrc/cuda/register.cpp),
// so both backends accept the same calls and raise the same messages. Every
// failure names the op, the argument, what was expected and what was got, so
// the caller can fix the call. Host code only: kernels.cu never includes it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cstdint>

namespace ssorl {

// Runs the lambda __VA_ARGS__ with `scalar_t` bound to the observations' element
// type: float (float32 rows) or uint8_t (uint8 rows, e.g. image frames). One loop
// in the source, one instantiation per dtype; check_observations has refused others.
#define SSORL_DISPATCH_OBSERVATIONS(TYPE, NAME, ...)          \
  AT_DISPATCH_SWITCH(TYPE, NAME,                              \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kByte, __VA_ARGS__))

inline void check_placement(const at::Tensor& t, const char* op, const char* name,
                            c10::DeviceType device) {
  TORCH_CHECK_VALUE(t.device().type() == device, "ssorl.", op, ": expected ", name, " on ",
                    device, ". Got ", t.device(), " instead; move all arguments to one device.");
  TORCH_CHECK_VALUE(t.is_contiguous(), "ssorl.", op, ": expected ", name,
                    " to be contiguous. Got strides ", t.strides(),
                    " instead; call .contiguous() first.");
}

inline void check_tensor(const at::Tensor& t, const char* op, const char* name,
                         at::ScalarType dtype, int64_t dim, c10::DeviceType device) {
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, "ssorl.", op, ": expected ", name, " of dtype ",
                    dtype, ". Got ", t.scalar_type(), " instead.");
  TORCH_CHECK_VALUE(t.dim() == dim, "ssorl.", op, ": expected ", name, " with ", dim,
                    " dimensions. Got shape ", t.sizes(), " instead.");
  check_placement(t, op, name, device);
}

// Observations [R, *obs_shape], float32 or uint8. The kernels read them as R rows of
// D = prod(obs_shape) values (a contiguous tensor is that already), so N-d frames need
// no copy. Returns D.
inline int64_t check_observations(const at::Tensor& t, const char* op, c10::DeviceType device) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kByte, "ssorl.", op,
                    ": expected observations of dtype Float or Byte. Got ", t.scalar_type(),
                    " instead.");
  TORCH_CHECK_VALUE(t.dim() >= 2, "ssorl.", op,
                    ": expected observations with at least 2 dimensions. Got shape ", t.sizes(),
                    " instead.");
  check_placement(t, op, "observations", device);
  const auto shape = t.sizes();
  return c10::multiply_integers(shape.begin() + 1, shape.end());
}

inline void check_size(const at::Tensor& t, const char* op, const char* name, int64_t dim,
                       int64_t expected, const char* what) {
  TORCH_CHECK_VALUE(t.size(dim) == expected, "ssorl.", op, ": expected ", name, ".shape[", dim,
                    "] == ", expected, " (", what, "). Got shape ", t.sizes(), " instead.");
}

// Sizes of a checked ssorl::idm_windows call.
struct IdmWindowsSizes {
  int64_t R;  // observation rows (N + E: each episode has one final observation more)
  int64_t D;  // observation dim: the product of the observation shape
  int64_t E;  // episodes
  int64_t B;  // samples
  int64_t W;  // window rows, k + 2
};

// Dtypes, dims, device, contiguity and sizes of every ssorl::idm_windows argument.
// Sample indices are data, checked by the kernels where they read them.
inline IdmWindowsSizes check_idm_windows_args(
    const at::Tensor& observations, const at::Tensor& step_start, const at::Tensor& lengths,
    const at::Tensor& episode_index, const at::Tensor& step_index, const at::Tensor& mean,
    const at::Tensor& std, int64_t k, const at::Tensor& out, const at::Tensor& valid,
    c10::DeviceType device) {
  constexpr const char* kOp = "idm_windows";
  const int64_t D = check_observations(observations, kOp, device);
  check_tensor(step_start, kOp, "step_start", at::kLong, 1, device);
  check_tensor(lengths, kOp, "lengths", at::kLong, 1, device);
  check_tensor(episode_index, kOp, "episode_index", at::kLong, 1, device);
  check_tensor(step_index, kOp, "step_index", at::kLong, 1, device);
  check_tensor(mean, kOp, "mean", at::kFloat, 1, device);
  check_tensor(std, kOp, "std", at::kFloat, 1, device);
  check_tensor(out, kOp, "out", at::kFloat, 3, device);
  check_tensor(valid, kOp, "valid", at::kBool, 2, device);
  TORCH_CHECK_VALUE(k >= 0, "ssorl.", kOp, ": expected k >= 0 past states. Got ", k, " instead.");
  const IdmWindowsSizes n{observations.size(0), D, step_start.size(0), episode_index.size(0),
                          k + 2};
  check_size(lengths, kOp, "lengths", 0, n.E, "one length per episode");
  check_size(step_index, kOp, "step_index", 0, n.B, "one step per sample");
  check_size(mean, kOp, "mean", 0, n.D, "observation dim");
  check_size(std, kOp, "std", 0, n.D, "observation dim");
  check_size(out, kOp, "out", 0, n.B, "batch");
  check_size(out, kOp, "out", 1, n.W, "k + 2 window rows");
  check_size(out, kOp, "out", 2, n.D, "observation dim");
  check_size(valid, kOp, "valid", 0, n.B, "batch");
  check_size(valid, kOp, "valid", 1, n.W, "k + 2 window rows");
  return n;
}

// Sizes of a checked ssorl::subtrajectories call.
struct SubtrajectoriesSizes {
  int64_t R;  // observation rows (N + E)
  int64_t D;  // observation dim: the product of the observation shape
  int64_t N;  // steps (rows of actions and returns_to_go)
  int64_t A;  // action dim
  int64_t E;  // episodes
  int64_t B;  // samples
  int64_t K;  // context
};

// Dtypes, dims, device, contiguity and sizes of every ssorl::subtrajectories
// argument. Sample indices are data, checked by the kernels where they read them.
inline SubtrajectoriesSizes check_subtrajectories_args(
    const at::Tensor& observations, const at::Tensor& actions, const at::Tensor& returns_to_go,
    const at::Tensor& step_start, const at::Tensor& lengths, const at::Tensor& episode_index,
    const at::Tensor& start, const at::Tensor& mean, const at::Tensor& std, int64_t context,
    const at::Tensor& states_out, const at::Tensor& actions_out, const at::Tensor& rtg_out,
    const at::Tensor& timesteps_out, const at::Tensor& mask_out, c10::DeviceType device) {
  constexpr const char* kOp = "subtrajectories";
  const int64_t D = check_observations(observations, kOp, device);
  check_tensor(actions, kOp, "actions", at::kFloat, 2, device);
  check_tensor(returns_to_go, kOp, "returns_to_go", at::kFloat, 1, device);
  check_tensor(step_start, kOp, "step_start", at::kLong, 1, device);
  check_tensor(lengths, kOp, "lengths", at::kLong, 1, device);
  check_tensor(episode_index, kOp, "episode_index", at::kLong, 1, device);
  check_tensor(start, kOp, "start", at::kLong, 1, device);
  check_tensor(mean, kOp, "mean", at::kFloat, 1, device);
  check_tensor(std, kOp, "std", at::kFloat, 1, device);
  check_tensor(states_out, kOp, "states_out", at::kFloat, 3, device);
  check_tensor(actions_out, kOp, "actions_out", at::kFloat, 3, device);
  check_tensor(rtg_out, kOp, "rtg_out", at::kFloat, 2, device);
  check_tensor(timesteps_out, kOp, "timesteps_out", at::kLong, 2, device);
  check_tensor(mask_out, kOp, "mask_out", at::kBool, 2, device);
  TORCH_CHECK_VALUE(context >= 1, "ssorl.", kOp, ": expected context >= 1 steps. Got ", context,
                    " instead.");
  const SubtrajectoriesSizes n{observations.size(0), D, actions.size(0), actions.size(1),
                               step_start.size(0),  episode_index.size(0), context};
  check_size(returns_to_go, kOp, "returns_to_go", 0, n.N, "one per step, like actions");
  check_size(lengths, kOp, "lengths", 0, n.E, "one length per episode");
  check_size(start, kOp, "start", 0, n.B, "one start per sample");
  check_size(mean, kOp, "mean", 0, n.D, "observation dim");
  check_size(std, kOp, "std", 0, n.D, "observation dim");
  check_size(states_out, kOp, "states_out", 0, n.B, "batch");
  check_size(states_out, kOp, "states_out", 1, n.K, "context");
  check_size(states_out, kOp, "states_out", 2, n.D, "observation dim");
  check_size(actions_out, kOp, "actions_out", 0, n.B, "batch");
  check_size(actions_out, kOp, "actions_out", 1, n.K, "context");
  check_size(actions_out, kOp, "actions_out", 2, n.A, "action dim");
  for (const auto* t : {&rtg_out, &timesteps_out, &mask_out}) {
    check_size(*t, kOp, "rtg_out/timesteps_out/mask_out", 0, n.B, "batch");
    check_size(*t, kOp, "rtg_out/timesteps_out/mask_out", 1, n.K, "context");
  }
  return n;
}

// Sizes of a checked ssorl::returns_to_go call.
struct ReturnsToGoSizes {
  int64_t N;  // steps
  int64_t E;  // episodes
};

// Dtypes, dims, device, contiguity and sizes of every ssorl::returns_to_go
// argument; the episode table's values are checked by check_returns_to_go_episodes.
inline ReturnsToGoSizes check_returns_to_go_args(const at::Tensor& rewards,
                                                 const at::Tensor& step_start,
                                                 const at::Tensor& lengths, const at::Tensor& out,
                                                 c10::DeviceType device) {
  constexpr const char* kOp = "returns_to_go";
  check_tensor(rewards, kOp, "rewards", at::kFloat, 1, device);
  check_tensor(step_start, kOp, "step_start", at::kLong, 1, device);
  check_tensor(lengths, kOp, "lengths", at::kLong, 1, device);
  check_tensor(out, kOp, "out", at::kFloat, 1, device);
  const ReturnsToGoSizes n{rewards.size(0), step_start.size(0)};
  check_size(lengths, kOp, "lengths", 0, n.E, "one length per episode");
  check_size(out, kOp, "out", 0, n.N, "one per step, like rewards");
  return n;
}

// Raises for the first episode of the table (host pointers, E entries each) that
// is empty or not inside the N steps of rewards. The table is small, so every
// backend checks it on the host before its kernel reads anything.
inline void check_returns_to_go_episodes(const int64_t* step_start, const int64_t* lengths,
                                         int64_t E, int64_t N) {
  constexpr const char* kOp = "returns_to_go";
  for (int64_t e = 0; e < E; ++e) {
    const int64_t s = step_start[e];
    const int64_t T = lengths[e];
    TORCH_CHECK_INDEX(s >= 0 && T >= 1 && s + T <= N, "ssorl.", kOp, ": episode ", e,
                      " spans global steps [", s, ", ", s + T, ") but rewards has ", N,
                      " steps. Pass the episode table of these rewards (lengths >= 1).");
  }
}

}  // namespace ssorl

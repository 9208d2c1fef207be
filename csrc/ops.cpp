// Schemas of every ssorl custom op, in one place. Backends register kernels in
// csrc/cpu/*.cpp (CPU key) and csrc/cuda/register.cpp (CUDA key).
//
// Every op fills caller-owned buffers (`Tensor(x!)`) and returns nothing, so a
// training loop can reuse its batch buffers without allocating.
#include <torch/library.h>

TORCH_LIBRARY(ssorl, m) {
  // IDM windows: out[b] = normalised observations s_{t-k} .. s_t, s_{t+1} of
  // the episode of sample b; past rows before the episode start repeat the
  // first observation and are marked False in `valid`.
  m.def(
      "idm_windows(Tensor observations, Tensor step_start, Tensor lengths, "
      "Tensor episode_index, Tensor step_index, Tensor mean, Tensor std, int k, "
      "Tensor(a!) out, Tensor(b!) valid) -> ()");
  // Left-padded sub-trajectories of `context` steps for sequence models.
  m.def(
      "subtrajectories(Tensor observations, Tensor actions, Tensor returns_to_go, "
      "Tensor step_start, Tensor lengths, Tensor episode_index, Tensor start, "
      "Tensor mean, Tensor std, int context, Tensor(a!) states_out, "
      "Tensor(b!) actions_out, Tensor(c!) rtg_out, Tensor(d!) timesteps_out, "
      "Tensor(e!) mask_out) -> ()");
  // Discounted returns-to-go within each episode, accumulated in float64.
  m.def(
      "returns_to_go(Tensor rewards, Tensor step_start, Tensor lengths, float gamma, "
      "Tensor(a!) out) -> ()");
}

// Launchers of the CUDA kernels, on raw pointers only, so kernels.cu compiles
// with plain nvcc (no torch headers). register.cpp wraps them as ssorl ops.
//
// Each launcher that takes indices also takes `bad_sample`, a device int64
// that must hold INT64_MAX on entry; it receives the smallest sample index
// whose indices are invalid. Invalid samples are skipped, never read.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ssorl {
namespace cuda {

// Observation rows are float32 or uint8 (T = float or uint8_t): kernels.cu instantiates
// both, register.cpp picks one by the observations' dtype.
template <typename T>
cudaError_t idm_windows_launch(const T* observations, int64_t R, int64_t D,
                               const int64_t* step_start, const int64_t* lengths, int64_t E,
                               const int64_t* episode_index, const int64_t* step_index, int64_t B,
                               const float* mean, const float* std, int64_t k, float* out,
                               bool* valid, long long* bad_sample, cudaStream_t stream);

template <typename T>
cudaError_t subtrajectories_launch(const T* observations, int64_t R, int64_t D,
                                   const float* actions, int64_t N, int64_t A,
                                   const float* returns_to_go, const int64_t* step_start,
                                   const int64_t* lengths, int64_t E,
                                   const int64_t* episode_index, const int64_t* start, int64_t B,
                                   const float* mean, const float* std, int64_t K,
                                   float* states_out, float* actions_out, float* rtg_out,
                                   int64_t* timesteps_out, bool* mask_out, long long* bad_sample,
                                   cudaStream_t stream);

// Episodes must already be checked (the table is small; register.cpp checks it on the host).
cudaError_t returns_to_go_launch(const float* rewards, const int64_t* step_start,
                                 const int64_t* lengths, int64_t E, double gamma, float* out,
                                 cudaStream_t stream);

}  // namespace cuda
}  // namespace ssorl

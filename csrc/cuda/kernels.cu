// CUDA kernels of the ssorl ops. Arithmetic uses explicit round-to-nearest
// intrinsics so nvcc cannot fuse it into FMAs: results match the CPU backends bit for bit.
// The window kernels are templates over the observation dtype (ObsT = float or uint8_t).
#include <cstdint>

#include "kernels.cuh"

namespace ssorl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// The value as float32 (exact for uint8), then subtract and divide, rounded as on the CPU.
template <typename ObsT>
__device__ __forceinline__ float normalise(ObsT x, float m, float s) {
  return __fdiv_rn(__fsub_rn(static_cast<float>(x), m), s);
}

__device__ __forceinline__ bool idm_sample_ok(int64_t b, int64_t R, int64_t E,
                                              const int64_t* step_start, const int64_t* lengths,
                                              const int64_t* episode_index,
                                              const int64_t* step_index) {
  const int64_t e = episode_index[b];
  if (e < 0 || e >= E) return false;
  const int64_t s = step_start[e];
  const int64_t g = step_index[b];
  return s >= 0 && g >= s && g < s + lengths[e] && g + e + 1 < R;
}

template <typename ObsT>
__global__ void idm_windows_kernel(const ObsT* __restrict__ X, int64_t R, int64_t D,
                                   const int64_t* __restrict__ step_start,
                                   const int64_t* __restrict__ lengths, int64_t E,
                                   const int64_t* __restrict__ episode_index,
                                   const int64_t* __restrict__ step_index, int64_t B,
                                   const float* __restrict__ mean, const float* __restrict__ std,
                                   int64_t k, float* __restrict__ out, bool* __restrict__ valid,
                                   long long* bad_sample) {
  const int64_t W = k + 2;
  const int64_t total = B * W * D;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t d = i % D;
    const int64_t w = (i / D) % W;
    const int64_t b = i / (D * W);
    if (!idm_sample_ok(b, R, E, step_start, lengths, episode_index, step_index)) {
      if (d == 0 && w == 0) atomicMin(bad_sample, (long long)b);
      continue;
    }
    const int64_t e = episode_index[b];
    const int64_t first_row = step_start[e] + e;
    int64_t row = step_index[b] + e - k + w;
    const bool inside = row >= first_row;
    row = inside ? row : first_row;
    out[i] = normalise(X[row * D + d], mean[d], std[d]);
    if (d == 0) valid[b * W + w] = inside;
  }
}

template <typename ObsT>
__global__ void subtrajectories_kernel(
    const ObsT* __restrict__ X, int64_t R, int64_t D, const float* __restrict__ Act, int64_t N,
    int64_t A, const float* __restrict__ G, const int64_t* __restrict__ step_start,
    const int64_t* __restrict__ lengths, int64_t E, const int64_t* __restrict__ episode_index,
    const int64_t* __restrict__ start, int64_t B, const float* __restrict__ mean,
    const float* __restrict__ std, int64_t K, float* __restrict__ S, float* __restrict__ AO,
    float* __restrict__ RO, int64_t* __restrict__ TO, bool* __restrict__ M,
    long long* bad_sample) {
  // One thread per (sample, context position); it writes that row of every output.
  const int64_t total = B * K;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / K;
    const int64_t p = i % K;
    const int64_t e = episode_index[b];
    bool ok = e >= 0 && e < E;
    int64_t s = 0, T = 0, t0 = 0;
    if (ok) {
      s = step_start[e];
      T = lengths[e];
      t0 = start[b];
      ok = t0 >= 0 && t0 < T && s >= 0 && s + T <= N && s + T + e <= R;
    }
    if (!ok) {
      if (p == 0) atomicMin(bad_sample, (long long)b);
      continue;
    }
    const int64_t L = min(K, T - t0);
    const int64_t pad = K - L;
    if (p < pad) {
      for (int64_t d = 0; d < D; ++d) S[i * D + d] = 0.0f;
      for (int64_t a = 0; a < A; ++a) AO[i * A + a] = 0.0f;
      RO[i] = 0.0f;
      TO[i] = 0;
      M[i] = false;
    } else {
      const int64_t t = t0 + p - pad;
      const int64_t g = s + t;
      for (int64_t d = 0; d < D; ++d) S[i * D + d] = normalise(X[(g + e) * D + d], mean[d], std[d]);
      for (int64_t a = 0; a < A; ++a) AO[i * A + a] = Act[g * A + a];
      RO[i] = G[g];
      TO[i] = t;
      M[i] = true;
    }
  }
}

__global__ void returns_to_go_kernel(const float* __restrict__ r,
                                     const int64_t* __restrict__ step_start,
                                     const int64_t* __restrict__ lengths, int64_t E, double gamma,
                                     float* __restrict__ out) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < E;
       e += (int64_t)gridDim.x * blockDim.x) {
    double acc = 0.0;
    for (int64_t g = step_start[e] + lengths[e] - 1; g >= step_start[e]; --g) {
      acc = __dadd_rn((double)r[g], __dmul_rn(gamma, acc));
      out[g] = (float)acc;
    }
  }
}

unsigned int blocks_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return (unsigned int)(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

template <typename ObsT>
cudaError_t idm_windows_launch(const ObsT* observations, int64_t R, int64_t D,
                               const int64_t* step_start, const int64_t* lengths, int64_t E,
                               const int64_t* episode_index, const int64_t* step_index, int64_t B,
                               const float* mean, const float* std, int64_t k, float* out,
                               bool* valid, long long* bad_sample, cudaStream_t stream) {
  const int64_t total = B * (k + 2) * D;
  if (total == 0) return cudaSuccess;
  idm_windows_kernel<ObsT><<<blocks_for(total), kThreads, 0, stream>>>(
      observations, R, D, step_start, lengths, E, episode_index, step_index, B, mean, std, k, out,
      valid, bad_sample);
  return cudaGetLastError();
}

template <typename ObsT>
cudaError_t subtrajectories_launch(const ObsT* observations, int64_t R, int64_t D,
                                   const float* actions, int64_t N, int64_t A,
                                   const float* returns_to_go, const int64_t* step_start,
                                   const int64_t* lengths, int64_t E,
                                   const int64_t* episode_index, const int64_t* start, int64_t B,
                                   const float* mean, const float* std, int64_t K,
                                   float* states_out, float* actions_out, float* rtg_out,
                                   int64_t* timesteps_out, bool* mask_out, long long* bad_sample,
                                   cudaStream_t stream) {
  const int64_t total = B * K;
  if (total == 0) return cudaSuccess;
  subtrajectories_kernel<ObsT><<<blocks_for(total), kThreads, 0, stream>>>(
      observations, R, D, actions, N, A, returns_to_go, step_start, lengths, E, episode_index,
      start, B, mean, std, K, states_out, actions_out, rtg_out, timesteps_out, mask_out,
      bad_sample);
  return cudaGetLastError();
}

cudaError_t returns_to_go_launch(const float* rewards, const int64_t* step_start,
                                 const int64_t* lengths, int64_t E, double gamma, float* out,
                                 cudaStream_t stream) {
  if (E == 0) return cudaSuccess;
  returns_to_go_kernel<<<blocks_for(E), kThreads, 0, stream>>>(rewards, step_start, lengths, E,
                                                               gamma, out);
  return cudaGetLastError();
}

// The observation dtypes register.cpp dispatches to: float32 and uint8 rows.
#define SSORL_INSTANTIATE_LAUNCHERS(T)                                                          \
  template cudaError_t idm_windows_launch<T>(const T*, int64_t, int64_t, const int64_t*,        \
                                             const int64_t*, int64_t, const int64_t*,           \
                                             const int64_t*, int64_t, const float*, const float*, \
                                             int64_t, float*, bool*, long long*, cudaStream_t);  \
  template cudaError_t subtrajectories_launch<T>(                                               \
      const T*, int64_t, int64_t, const float*, int64_t, int64_t, const float*, const int64_t*, \
      const int64_t*, int64_t, const int64_t*, const int64_t*, int64_t, const float*,            \
      const float*, int64_t, float*, float*, float*, int64_t*, bool*, long long*, cudaStream_t);
SSORL_INSTANTIATE_LAUNCHERS(float)
SSORL_INSTANTIATE_LAUNCHERS(uint8_t)
#undef SSORL_INSTANTIATE_LAUNCHERS

}  // namespace cuda
}  // namespace ssorl

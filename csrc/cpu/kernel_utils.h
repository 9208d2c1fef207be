// Helpers shared by the CPU kernels: tiled normalisation, recording and
// checking bad samples. Argument checks shared with the CUDA registration are in ../op_args.h.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace ssorl {

// `stats` [D] repeated `rows` times, so `rows` consecutive observation rows are
// normalised by one flat loop the compiler vectorises (D = 17 is not a multiple
// of the vector width). The arithmetic per element is unchanged.
inline std::vector<float> tile(const float* stats, int64_t D, int64_t rows) {
  std::vector<float> tiled(static_cast<size_t>(D * rows));
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(stats, stats + D, tiled.begin() + r * D);
  }
  return tiled;
}

// y[j] = (float(x[j]) - mu[j]) / sd[j]: the value as float32 (exact for uint8), then a
// float32 subtract and a divide, as in every backend. For float rows the cast is a no-op.
template <typename T>
inline void normalise(const T* __restrict x, const float* __restrict mu,
                      const float* __restrict sd, float* __restrict y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    y[j] = (static_cast<float>(x[j]) - mu[j]) / sd[j];
  }
}

// Raises unless sample b's episode index e is one of the E episodes of the table;
// the first check of every op's check_samples.
inline void check_sample_episode(const char* op, int64_t b, int64_t e, int64_t E) {
  TORCH_CHECK_INDEX(e >= 0 && e < E, "ssorl.", op, ": sample ", b, " has episode_index ", e,
                    ", outside [0, ", E, "). Pass episode indices of this episode table.");
}

// Lowers `first` to `b` if smaller: kernels validate each sample where they read
// it (one pass over memory) and, if any was bad, rerun the serial check that
// raises for the lowest bad sample.
inline void record_bad_sample(std::atomic<int64_t>& first, int64_t b) {
  int64_t current = first.load(std::memory_order_relaxed);
  while (b < current && !first.compare_exchange_weak(current, b, std::memory_order_relaxed)) {
  }
}

}  // namespace ssorl

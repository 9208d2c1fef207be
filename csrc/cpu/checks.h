// Input checks shared by the CPU kernels. Every failure names the op, the
// argument, what was expected and what was got, so the caller can fix the call.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <vector>

namespace ssorl {

inline void check_tensor(const at::Tensor& t, const char* op, const char* name,
                         at::ScalarType dtype, int64_t dim, c10::DeviceType device) {
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, "ssorl.", op, ": expected ", name, " of dtype ",
                    dtype, ". Got ", t.scalar_type(), " instead.");
  TORCH_CHECK_VALUE(t.dim() == dim, "ssorl.", op, ": expected ", name, " with ", dim,
                    " dimensions. Got shape ", t.sizes(), " instead.");
  TORCH_CHECK_VALUE(t.device().type() == device, "ssorl.", op, ": expected ", name, " on ",
                    device, ". Got ", t.device(), " instead; move all arguments to one device.");
  TORCH_CHECK_VALUE(t.is_contiguous(), "ssorl.", op, ": expected ", name,
                    " to be contiguous. Got strides ", t.strides(),
                    " instead; call .contiguous() first.");
}

inline void check_size(const at::Tensor& t, const char* op, const char* name, int64_t dim,
                       int64_t expected, const char* what) {
  TORCH_CHECK_VALUE(t.size(dim) == expected, "ssorl.", op, ": expected ", name, ".shape[", dim,
                    "] == ", expected, " (", what, "). Got shape ", t.sizes(), " instead.");
}

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

// y[j] = (x[j] - mu[j]) / sd[j]: float32 subtract then divide, as in every backend.
inline void normalise(const float* __restrict x, const float* __restrict mu,
                      const float* __restrict sd, float* __restrict y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    y[j] = (x[j] - mu[j]) / sd[j];
  }
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

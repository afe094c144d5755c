// Inverted dropout: keep[i] is 0 or 1/(1-p), drawn from a counter-based stream (splitmix64 of
// seed + i), so a step's mask depends only on its seed, not on thread count or call order.
#pragma once
#include "common.h"

namespace gm {

inline double dropout_uniform(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

template <typename T>
void dropout_forward(T* out, T* keep, const T* inp, i64 n, double p, std::uint64_t seed) {
  const T scale = p < 1 ? T(1.0 / (1.0 - p)) : T(0);
#pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; i++) {
    keep[i] = dropout_uniform(seed, (std::uint64_t)i) >= p ? scale : T(0);
    out[i] = inp[i] * keep[i];
  }
}

template <typename T>
void dropout_backward(T* dinp, const T* dout, const T* keep, i64 n) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; i++) dinp[i] += dout[i] * keep[i];
}

}  // namespace gm

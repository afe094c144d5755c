// Sum of squares of a flat gradient buffer in float64, in fixed blocks reduced in order, so the
// norm (and hence clipping) is bitwise reproducible for a given thread count and across counts.
#pragma once
#include <vector>

#include "common.h"

namespace gm {

template <typename T>
double sum_squares(const T* g, i64 n) {
  const i64 block = 1 << 16;
  const i64 nb = (n + block - 1) / block;
  std::vector<double> part((size_t)nb);
#pragma omp parallel for schedule(static)
  for (i64 b = 0; b < nb; b++) {
    const i64 i1 = (b + 1) * block < n ? (b + 1) * block : n;
    double acc = 0;
    for (i64 i = b * block; i < i1; i++) acc += (double)g[i] * (double)g[i];
    part[b] = acc;
  }
  double total = 0;
  for (i64 b = 0; b < nb; b++) total += part[b];
  return total;
}

// torch.nn.utils.clip_grad_norm_: scale = max_norm / (norm + 1e-6) when that is below 1.
inline double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  const double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? c : 1.0;
}

}  // namespace gm

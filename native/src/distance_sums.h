// Sums of Euclidean distances from every point to every label group: out[i * k + c] = sum over j
// with labels[j] == c of ||x_i - x_j||. It is the whole cost of a silhouette (n^2 d), so it runs as
// blocked SGEMM (||a||^2 + ||b||^2 - 2 a.b, after centring the data to limit cancellation) with the
// square roots and per-label sums fused per block and accumulated in double. The distance of a point
// to itself is exactly 0.
#pragma once
#include <algorithm>
#include <vector>

#include "ops/common.h"

namespace gm {

inline void distance_sums(double* out, const float* x_in, i64 n, i64 d, const std::int32_t* labels, i64 k) {
  std::fill(out, out + n * k, 0.0);
  if (n == 0) return;
  std::vector<double> mean((size_t)d, 0.0);
  for (i64 i = 0; i < n; i++)
    for (i64 c = 0; c < d; c++) mean[c] += x_in[i * d + c];
  for (i64 c = 0; c < d; c++) mean[c] /= (double)n;
  std::vector<float> x((size_t)(n * d));
  std::vector<float> sq((size_t)n);
#pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; i++) {
    double s = 0;
    for (i64 c = 0; c < d; c++) {
      const float v = (float)(x_in[i * d + c] - mean[c]);
      x[i * d + c] = v;
      s += (double)v * v;
    }
    sq[i] = (float)s;
  }
  const i64 RB = 256, CB = 4096;
  std::vector<float> g((size_t)(RB * CB));
  for (i64 r0 = 0; r0 < n; r0 += RB) {
    const i64 nr = std::min(RB, n - r0);
    for (i64 c0 = 0; c0 < n; c0 += CB) {
      const i64 nc = std::min(CB, n - c0);
      gemm(false, true, nr, nc, d, 1.0f, &x[r0 * d], d, &x[c0 * d], d, 0.0f, g.data(), nc);
#pragma omp parallel for schedule(static)
      for (i64 r = 0; r < nr; r++) {
        const i64 i = r0 + r;
        double* acc = out + i * k;
        const float* row = &g[r * nc];
        const float si = sq[i];
        for (i64 j = 0; j < nc; j++) {
          const i64 jj = c0 + j;
          float d2 = si + sq[jj] - 2.0f * row[j];
          d2 = d2 > 0.0f ? d2 : 0.0f;
          if (jj != i) acc[labels[jj]] += std::sqrt(d2);
        }
      }
    }
  }
}

}  // namespace gm

// Fused softmax cross-entropy over [M, V] logits: returns the summed loss and overwrites the logits
// with dloss/dlogits = scale * (softmax - onehot), so probabilities are never stored separately.
#pragma once
#include <vector>

#include "common.h"

namespace gm {

template <typename T>
double cross_entropy_forward_backward(T* logits, const std::int32_t* targets, i64 M, i64 V, T scale) {
  std::vector<double> losses((size_t)M);
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    T* row = logits + m * V;
    T mx = row[0];
#pragma omp simd reduction(max : mx)
    for (i64 v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
    const double tgt_logit = (double)row[targets[m]] - (double)mx;
    T sum_t = 0;  // fp32 partial sums (vectorised); the row count is small enough for fp32
#pragma omp simd reduction(+ : sum_t)
    for (i64 v = 0; v < V; v++) {
      row[v] = vexp(row[v] - mx);
      sum_t += row[v];
    }
    const double sum = (double)sum_t;
    losses[m] = std::log(sum) - tgt_logit;
    const T inv = T(1.0 / sum);
    for (i64 v = 0; v < V; v++) row[v] *= inv * scale;
    row[targets[m]] -= scale;
  }
  double total = 0;
  for (i64 m = 0; m < M; m++) total += losses[m];
  return total;
}

}  // namespace gm

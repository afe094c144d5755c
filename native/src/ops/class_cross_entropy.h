// Softmax cross-entropy over [B, C] class logits with optional per-class weights, torch's
// CrossEntropyLoss(weight=w, reduction="mean"): sum_i w[y_i] * nll_i / sum_i w[y_i]. Writes
// dlogits = scale * w[y_i] * (softmax - onehot) / sum_i w[y_i] and the probabilities.
#pragma once
#include <vector>

#include "common.h"

namespace gm {

template <typename T>
double class_cross_entropy(T* dlogits, T* probs, const T* logits, const std::int32_t* targets, const T* class_weight,
                           i64 B, i64 C, double scale) {
  double wsum = 0;
  for (i64 b = 0; b < B; b++) wsum += class_weight ? (double)class_weight[targets[b]] : 1.0;
  double total = 0;
  for (i64 b = 0; b < B; b++) {
    const T* row = logits + b * C;
    double mx = row[0];
    for (i64 c = 1; c < C; c++) mx = row[c] > mx ? row[c] : mx;
    double sum = 0;
    for (i64 c = 0; c < C; c++) sum += std::exp((double)row[c] - mx);
    const double w = class_weight ? (double)class_weight[targets[b]] : 1.0;
    total += w * (std::log(sum) - ((double)row[targets[b]] - mx));
    for (i64 c = 0; c < C; c++) {
      const double p = std::exp((double)row[c] - mx) / sum;
      probs[b * C + c] = (T)p;
      if (dlogits) dlogits[b * C + c] = (T)(scale * w / wsum * (p - (c == targets[b] ? 1.0 : 0.0)));
    }
  }
  return wsum > 0 ? total / wsum : 0.0;
}

}  // namespace gm

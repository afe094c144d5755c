// Fused softmax cross-entropy (native/src/ops/cross_entropy.h): one block per row of logits. The
// logits are overwritten with dloss/dlogits = scale * (softmax - onehot); no probability tensor.
// Three phases around two block reductions: the row max, the sum of exp(x - max), then the writes.
// Rows whose target is -100 get loss 0 and a zero gradient row; a target outside [0, V) gets a NaN
// loss (the caller validates targets; a NaN is how a bad one would surface).
#pragma once
#include "common.cuh"

namespace gm {
namespace cuda {

constexpr std::int32_t kIgnoreIndex = -100;

inline Geometry cross_entropy_geometry(i64 M, i64 V) { return geometry_rows(M, V); }

template <typename T>
GM_HD inline float cross_entropy_max_partial(const Thread& th, const T* logits, const std::int32_t* targets, i64 V) {
  const i64 m = th.block.x;
  float mx = -INFINITY;
  if (targets[m] == kIgnoreIndex) return mx;
  for (i64 v = th.tid(); v < V; v += th.nthreads()) {
    const float x = get(logits + m * V + v);
    mx = x > mx ? x : mx;
  }
  return mx;
}
template <typename T>
GM_HD inline float cross_entropy_sum_partial(const Thread& th, float mx, const T* logits, const std::int32_t* targets,
                                             i64 V) {
  const i64 m = th.block.x;
  float s = 0.f;
  if (targets[m] == kIgnoreIndex) return s;
  for (i64 v = th.tid(); v < V; v += th.nthreads()) s += expf(get(logits + m * V + v) - mx);
  return s;
}
// Each element is read and written by its own thread; the thread owning the target column also
// writes the row's loss, log(sum) - (x_target - max).
template <typename T>
GM_HD inline void cross_entropy_finish(const Thread& th, float mx, float sum, T* logits, const std::int32_t* targets,
                                       float* row_loss, i64 V, float scale) {
  const i64 m = th.block.x;
  const std::int32_t tgt = targets[m];
  T* row = logits + m * V;
  if (tgt == kIgnoreIndex || tgt < 0 || tgt >= V) {
    for (i64 v = th.tid(); v < V; v += th.nthreads()) put(row + v, 0.f);
    if (th.tid() == 0) row_loss[m] = tgt == kIgnoreIndex ? 0.f : NAN;
    return;
  }
  const float k = (1.f / sum) * scale;
  for (i64 v = th.tid(); v < V; v += th.nthreads()) {
    const float x = get(row + v);
    float d = expf(x - mx) * k;
    if (v == tgt) {
      row_loss[m] = logf(sum) - (x - mx);
      d -= scale;
    }
    put(row + v, d);
  }
}

}  // namespace cuda
}  // namespace gm

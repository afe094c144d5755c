// AdamW with fp32 master weights (native/src/ops/adamw.h, torch.optim.AdamW's order of operations)
// and the deterministic global norm (native/src/ops/global_norm.h).
#pragma once
#include "common.cuh"

namespace gm {
namespace cuda {

// The per-step scalars, computed on the host in double exactly as adamw_update does, then cast.
struct AdamWScalars {
  float b1, b2, eps, decay, step_size, bc2_sqrt, grad_scale;
  int decay_on;
};
inline AdamWScalars adamw_scalars(const AdamWHyper& o) {
  AdamWScalars k;
  k.b1 = (float)o.beta1;
  k.b2 = (float)o.beta2;
  k.eps = (float)o.eps;
  k.decay = (float)(1.0 - o.lr * o.weight_decay);
  k.step_size = (float)(o.lr / (1.0 - pow(o.beta1, (double)o.step)));
  k.bc2_sqrt = (float)sqrt(1.0 - pow(o.beta2, (double)o.step));
  k.grad_scale = (float)o.grad_scale;
  k.decay_on = o.weight_decay != 0;
  return k;
}

inline Geometry adamw_geometry(i64 n) { return geometry_1d(n); }

// master, m, v: fp32; grads: fp32; params (nullable): the copy the forward pass reads (bf16 or
// float), rewritten from the updated master. scale_dev (nullable): a device-side factor on the
// gradient, e.g. the clip scale from clip_scale_body, so clipping needs no host round trip.
template <typename TP>
GM_HD inline void adamw_body(const Thread& th, float* master, TP* params, const float* grads, float* m, float* v, i64 n,
                             AdamWScalars k, const float* scale_dev) {
  const i64 i = th.global_x();
  if (i >= n) return;
  const float gs = scale_dev ? k.grad_scale * *scale_dev : k.grad_scale;
  const float g = grads[i] * gs;
  float p = master[i];
  if (k.decay_on) p *= k.decay;
  const float mi = m[i] + (g - m[i]) * (1.f - k.b1);
  const float vi = v[i] * k.b2 + (1.f - k.b2) * g * g;
  const float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
  p -= k.step_size * mi / denom;
  m[i] = mi;
  v[i] = vi;
  master[i] = p;
  if (params) put(params + i, p);
}

// ---- Global norm: sum of squares in float64, partial sums over fixed blocks of kNormBlock elements
// (the CPU op's blocks) reduced by a second single-block pass in block order, so the result is
// bitwise reproducible whatever the GPU. Square = false sums the values (e.g. the per-row losses).
inline Geometry sum_partial_geometry(i64 n) { return Geometry{{(int)sum_scratch_doubles(n), 1, 1}, {kThreads, 1, 1}}; }
inline Geometry sum_final_geometry() { return Geometry{{1, 1, 1}, {kThreads, 1, 1}}; }
template <typename T>
GM_HD inline double sum_partial(const Thread& th, const T* g, i64 n, bool square) {
  const i64 i0 = (i64)th.block.x * kNormBlock, i1 = imin(n, i0 + kNormBlock);
  double acc = 0;
  for (i64 i = i0 + th.tid(); i < i1; i += th.nthreads()) {
    const double x = (double)get(g + i);
    acc += square ? x * x : x;
  }
  return acc;
}
GM_HD inline double sum_final_partial(const Thread& th, const double* part, i64 nparts) {
  double acc = 0;
  for (i64 j = th.tid(); j < nparts; j += th.nthreads()) acc += part[j];
  return acc;
}
// torch.nn.utils.clip_grad_norm_'s factor from a sum of squares: max_norm / (norm + 1e-6) when below 1.
GM_HD inline void clip_scale_body(const Thread& th, float* scale, const double* sumsq, double max_norm) {
  if (th.global_x() != 0) return;
  double c = 1.0;
  if (max_norm > 0) {
    c = max_norm / (sqrt(*sumsq) + 1e-6);
    c = c < 1.0 ? c : 1.0;
  }
  *scale = (float)c;
}

}  // namespace cuda
}  // namespace gm

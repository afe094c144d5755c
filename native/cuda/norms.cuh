// RMSNorm and Mamba-2's gated RMSNorm (native/src/ops/rmsnorm.h, gated_rmsnorm.h): one block per
// row. A body in two halves around the block reduction: *_partial (this thread's share of the row's
// sum, columns tid, tid + blockDim, ...) and *_finish (everything after the sum). Weight gradients are
// column sums over rows in two deterministic passes (*_dw_partial, then colsum_finish_body).
#pragma once
#include "common.cuh"

namespace gm {
namespace cuda {

// ---- RMSNorm: out = x * w / sqrt(mean(x^2) + eps), rstd saved per row.
template <typename T>
GM_HD inline float rmsnorm_forward_partial(const Thread& th, const T* x, i64 C) {
  const T* xr = x + (i64)th.block.x * C;
  float ss = 0.f;
  for (i64 c = th.tid(); c < C; c += th.nthreads()) {
    const float v = get(xr + c);
    ss += v * v;
  }
  return ss;
}
template <typename T>
GM_HD inline void rmsnorm_forward_finish(const Thread& th, float ss, T* out, float* rstd, const T* x, const T* w, i64 C,
                                         float eps) {
  const i64 m = th.block.x;
  const float r = 1.f / sqrtf(ss / (float)C + eps);
  if (th.tid() == 0 && rstd) rstd[m] = r;
  const T* xr = x + m * C;
  T* o = out + m * C;
  for (i64 c = th.tid(); c < C; c += th.nthreads()) put(o + c, get(xr + c) * r * get(w + c));
}

// Backward, dx (accumulated): dx += r * (g*w - x * r^2 * mean(g*w*x)).
template <typename T>
GM_HD inline float rmsnorm_backward_partial(const Thread& th, const T* dout, const T* x, const T* w, i64 C) {
  const i64 m = th.block.x;
  float dot = 0.f;
  for (i64 c = th.tid(); c < C; c += th.nthreads()) dot += get(dout + m * C + c) * get(w + c) * get(x + m * C + c);
  return dot;
}
template <typename T>
GM_HD inline void rmsnorm_backward_finish(const Thread& th, float dot, T* dx, const T* dout, const T* x, const T* w,
                                          const float* rstd, i64 C) {
  const i64 m = th.block.x;
  const float r = rstd[m];
  dot /= (float)C;
  for (i64 c = th.tid(); c < C; c += th.nthreads()) {
    const float g = get(dout + m * C + c), xv = get(x + m * C + c);
    add(dx + m * C + c, r * (g * get(w + c) - xv * r * r * dot));
  }
}
// dw: partial sums of dout * x * rstd over blocks of kColRows rows; one thread per (row block, column).
template <typename T>
GM_HD inline void rmsnorm_dw_partial(const Thread& th, float* scratch, const T* dout, const T* x, const float* rstd,
                                     i64 M, i64 C) {
  const i64 i = th.global_x();
  if (i >= colsum_blocks(M) * C) return;
  const i64 rb = i / C, c = i % C, m1 = imin(M, (rb + 1) * kColRows);
  float acc = 0.f;
  for (i64 m = rb * kColRows; m < m1; m++) acc += get(dout + m * C + c) * get(x + m * C + c) * rstd[m];
  scratch[i] = acc;
}

// ---- Gated RMSNorm (gate before norm): g = y * silu(z); out = g * w / sqrt(mean(g^2) + eps).
template <typename T>
GM_HD inline float gated_rmsnorm_forward_partial(const Thread& th, const T* y, const T* z, i64 ld_z, i64 C) {
  const i64 m = th.block.x;
  float ss = 0.f;
  for (i64 c = th.tid(); c < C; c += th.nthreads()) {
    const float g = get(y + m * C + c) * siluf(get(z + m * ld_z + c));
    ss += g * g;
  }
  return ss;
}
template <typename T>
GM_HD inline void gated_rmsnorm_forward_finish(const Thread& th, float ss, T* out, float* rstd, const T* y, const T* z,
                                               i64 ld_z, const T* w, i64 C, float eps) {
  const i64 m = th.block.x;
  const float r = 1.f / sqrtf(ss / (float)C + eps);
  if (th.tid() == 0 && rstd) rstd[m] = r;
  for (i64 c = th.tid(); c < C; c += th.nthreads()) {
    const float g = get(y + m * C + c) * siluf(get(z + m * ld_z + c));
    put(out + m * C + c, g * (r * get(w + c)));
  }
}
template <typename T>
GM_HD inline float gated_rmsnorm_backward_partial(const Thread& th, const T* dout, const T* y, const T* z, i64 ld_z,
                                                  const T* w, i64 C) {
  const i64 m = th.block.x;
  float dot = 0.f;
  for (i64 c = th.tid(); c < C; c += th.nthreads()) {
    const float zv = get(z + m * ld_z + c);
    dot += get(dout + m * C + c) * get(w + c) * get(y + m * C + c) * zv * sigmoidf(zv);
  }
  return dot;
}
// Accumulates into dy and dz (ld_dz).
template <typename T>
GM_HD inline void gated_rmsnorm_backward_finish(const Thread& th, float dot, T* dy, T* dz, i64 ld_dz, const T* dout,
                                                const T* y, const T* z, i64 ld_z, const T* w, const float* rstd, i64 C) {
  const i64 m = th.block.x;
  const float r = rstd[m];
  dot /= (float)C;
  for (i64 c = th.tid(); c < C; c += th.nthreads()) {
    const float zv = get(z + m * ld_z + c), yv = get(y + m * C + c), go = get(dout + m * C + c);
    const float sg = sigmoidf(zv), sz = zv * sg, g = yv * sz;
    const float dg = r * go * get(w + c) - r * r * r * g * dot;
    add(dy + m * C + c, dg * sz);
    add(dz + m * ld_dz + c, dg * yv * sg * (1.f + zv * (1.f - sg)));
  }
}
template <typename T>
GM_HD inline void gated_rmsnorm_dw_partial(const Thread& th, float* scratch, const T* dout, const T* y, const T* z,
                                           i64 ld_z, const float* rstd, i64 M, i64 C) {
  const i64 i = th.global_x();
  if (i >= colsum_blocks(M) * C) return;
  const i64 rb = i / C, c = i % C, m1 = imin(M, (rb + 1) * kColRows);
  float acc = 0.f;
  for (i64 m = rb * kColRows; m < m1; m++)
    acc += get(dout + m * C + c) * get(y + m * C + c) * siluf(get(z + m * ld_z + c)) * rstd[m];
  scratch[i] = acc;
}

}  // namespace cuda
}  // namespace gm

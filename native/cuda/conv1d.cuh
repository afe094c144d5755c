// Causal depthwise conv1d over time (native/src/ops/conv1d.h), optionally fused with what the model
// does around it (native/src/model.cpp conv_input / conv_activation / mixer_backward):
//   lengths != null: the input is zero at t >= lengths[r] (pads never reach a state), the SiLU output
//                    is zero there, and backward leaves dx untouched at pads;
//   act != null (forward): act = SiLU(out), the activated output;
//   pre != null (backward): dout is the gradient of the activated output, so g = dout * SiLU'(pre)
//                    (and 0 at pads); with pre == null, dout is the gradient of the conv output.
// With lengths = act = pre = null this is exactly conv1d_forward / conv1d_backward.
// Layout [rows, T, C] with leading dimensions between time steps; weight (C, 1, K); K <= 8.
#pragma once
#include "common.cuh"

namespace gm {
namespace cuda {

constexpr int kConvMaxK = 8;

inline Geometry conv1d_geometry(i64 rows, i64 Tn, i64 C) { return geometry_1d(rows * Tn * C); }

template <typename T>
GM_HD inline void conv1d_forward_body(const Thread& th, T* out, i64 ld_out, T* act, i64 ld_act, const T* x, i64 ld_x,
                                      const T* w, const T* b, const std::int32_t* lengths, i64 rows, i64 Tn, i64 C,
                                      i64 K) {
  const i64 i = th.global_x();
  if (i >= rows * Tn * C) return;
  const i64 m = i / C, c = i % C, r = m / Tn, t = m % Tn;
  const i64 len = lengths ? (i64)lengths[r] : Tn;
  float acc = b ? get(b + c) : 0.f;
  for (i64 k = 0; k < K; k++) {
    const i64 ts = t - (K - 1) + k;
    if (ts < 0 || ts >= len) continue;
    acc += get(w + c * K + k) * get(x + (r * Tn + ts) * ld_x + c);
  }
  T* o = out + m * ld_out + c;
  put(o, acc);
  if (act) put(act + m * ld_act + c, t < len ? siluf(get(o)) : 0.f);
}

// Gradient of the conv output at (r, t, c): see the header comment.
template <typename T>
GM_HD inline float conv1d_grad_at(const T* dout, i64 ld_dout, const T* pre, i64 ld_pre, i64 len, i64 r, i64 t, i64 Tn,
                                  i64 c) {
  const float g = get(dout + (r * Tn + t) * ld_dout + c);
  if (!pre) return g;
  return t < len ? g * silu_gradf(get(pre + (r * Tn + t) * ld_pre + c)) : 0.f;
}

// dx (accumulated), one thread per (r, ts, c): the K outputs that read x[r, ts, c], in the CPU op's
// order of addition (t ascending).
template <typename T>
GM_HD inline void conv1d_backward_dx_body(const Thread& th, T* dx, i64 ld_dx, const T* dout, i64 ld_dout, const T* pre,
                                          i64 ld_pre, const T* w, const std::int32_t* lengths, i64 rows, i64 Tn, i64 C,
                                          i64 K) {
  const i64 i = th.global_x();
  if (i >= rows * Tn * C) return;
  const i64 m = i / C, c = i % C, r = m / Tn, ts = m % Tn;
  const i64 len = lengths ? (i64)lengths[r] : Tn;
  if (ts >= len) return;
  T* d = dx + m * ld_dx + c;
  float acc = get(d);
  for (i64 k = K - 1; k >= 0; k--) {
    const i64 t = ts + (K - 1) - k;
    if (t >= Tn) continue;
    acc += get(w + c * K + k) * conv1d_grad_at(dout, ld_dout, pre, ld_pre, len, r, t, Tn, c);
  }
  put(d, acc);
}

// dw and db: partial sums over blocks of kColRows time steps (flattened r * T + t), one thread per
// (row block, channel); scratch is [row block][C][K + 1] (K weight taps, then the bias).
inline Geometry conv1d_param_partial_geometry(i64 rows, i64 Tn, i64 C) { return geometry_1d(colsum_blocks(rows * Tn) * C); }
template <typename T>
GM_HD inline void conv1d_param_partial_body(const Thread& th, float* scratch, const T* dout, i64 ld_dout, const T* pre,
                                            i64 ld_pre, const T* x, i64 ld_x, const std::int32_t* lengths, i64 rows,
                                            i64 Tn, i64 C, i64 K) {
  const i64 i = th.global_x(), MT = rows * Tn;
  if (i >= colsum_blocks(MT) * C) return;
  const i64 rb = i / C, c = i % C, m1 = imin(MT, (rb + 1) * kColRows);
  float accw[kConvMaxK], accb = 0.f;
  for (int k = 0; k < kConvMaxK; k++) accw[k] = 0.f;
  for (i64 m = rb * kColRows; m < m1; m++) {
    const i64 r = m / Tn, t = m % Tn;
    const i64 len = lengths ? (i64)lengths[r] : Tn;
    const float g = conv1d_grad_at(dout, ld_dout, pre, ld_pre, len, r, t, Tn, c);
    accb += g;
    for (i64 k = 0; k < K; k++) {
      const i64 ts = t - (K - 1) + k;
      if (ts < 0 || ts >= len) continue;
      accw[k] += g * get(x + (r * Tn + ts) * ld_x + c);
    }
  }
  float* o = scratch + i * (K + 1);
  for (i64 k = 0; k < K; k++) o[k] = accw[k];
  o[K] = accb;
}
inline Geometry conv1d_param_finish_geometry(i64 C, i64 K) { return geometry_1d(C * (K + 1)); }
GM_HD inline void conv1d_param_finish_body(const Thread& th, float* dw, float* db, const float* scratch, i64 nrb, i64 C,
                                           i64 K) {
  const i64 j = th.global_x(), width = C * (K + 1);
  if (j >= width) return;
  const i64 c = j / (K + 1), k = j % (K + 1);
  float s = 0.f;
  for (i64 rb = 0; rb < nrb; rb++) s += scratch[rb * width + j];
  if (k < K) dw[c * K + k] += s;
  else if (db) db[c] += s;
}

}  // namespace cuda
}  // namespace gm

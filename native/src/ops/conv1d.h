// Causal depthwise conv1d over time (kernel K, zero left pad), as nn.Conv1d(C, C, K, groups=C,
// padding=K-1) truncated to the first T outputs: out[r,t,c] = b[c] + sum_k w[c,k] * x[r, t-(K-1)+k, c].
// Layout [rows, T, C] with leading dimension ld_x between time steps; weight is torch's (C, 1, K).
#pragma once
#include "common.h"

namespace gm {

template <typename T>
void conv1d_forward(T* out, i64 ld_out, const T* x, i64 ld_x, const T* w, const T* b, i64 rows, i64 Tn, i64 C, i64 K) {
#pragma omp parallel for collapse(2) schedule(static)
  for (i64 r = 0; r < rows; r++) {
    for (i64 t = 0; t < Tn; t++) {
      T* o = out + (r * Tn + t) * ld_out;
      for (i64 c = 0; c < C; c++) o[c] = b ? b[c] : T(0);
      for (i64 k = 0; k < K; k++) {
        const i64 ts = t - (K - 1) + k;
        if (ts < 0) continue;
        const T* xr = x + (r * Tn + ts) * ld_x;
        for (i64 c = 0; c < C; c++) o[c] += w[c * K + k] * xr[c];
      }
    }
  }
}

// Accumulates into dx (ld_dx), dw and db. Channel blocks are owned by one thread each.
template <typename T>
void conv1d_backward(T* dx, i64 ld_dx, T* dw, T* db, const T* dout, i64 ld_dout, const T* x, i64 ld_x, const T* w,
                     i64 rows, i64 Tn, i64 C, i64 K) {
  const i64 block = 32;
#pragma omp parallel for schedule(static)
  for (i64 c0 = 0; c0 < C; c0 += block) {
    const i64 c1 = c0 + block < C ? c0 + block : C;
    // Per-thread accumulators laid out [k][channel] and the weights transposed the same way, so the
    // channel loops are contiguous and vectorise.
    T accw[8 * 32] = {};  // K <= 8
    T accb[32] = {};
    T wt[8 * 32];
    const i64 nc = c1 - c0;
    for (i64 k = 0; k < K; k++)
      for (i64 c = 0; c < nc; c++) wt[k * 32 + c] = w[(c0 + c) * K + k];
    for (i64 r = 0; r < rows; r++) {
      for (i64 t = 0; t < Tn; t++) {
        const T* g = dout + (r * Tn + t) * ld_dout + c0;
        for (i64 c = 0; c < nc; c++) accb[c] += g[c];
        for (i64 k = 0; k < K; k++) {
          const i64 ts = t - (K - 1) + k;
          if (ts < 0) continue;
          const T* xr = x + (r * Tn + ts) * ld_x + c0;
          T* dxr = dx + (r * Tn + ts) * ld_dx + c0;
          T* aw = accw + k * 32;
          const T* wk = wt + k * 32;
#pragma omp simd
          for (i64 c = 0; c < nc; c++) {
            aw[c] += g[c] * xr[c];
            dxr[c] += wk[c] * g[c];
          }
        }
      }
    }
    for (i64 c = 0; c < nc; c++) {
      if (db) db[c0 + c] += accb[c];
      for (i64 k = 0; k < K; k++) dw[(c0 + c) * K + k] += accw[k * 32 + c];
    }
  }
}

}  // namespace gm

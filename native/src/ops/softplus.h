// Step size of the selective scan: delta[m,c] = softplus(x[m,c] + bias[c]) (torch threshold 20).
#pragma once
#include "common.h"

namespace gm {

template <typename T>
void softplus_forward(T* out, i64 ld_out, const T* x, i64 ld_x, const T* bias, i64 M, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* xr = x + m * ld_x;
    T* o = out + m * ld_out;
    for (i64 c = 0; c < C; c++) o[c] = softplus(xr[c] + bias[c]);
  }
}

// Accumulates into dx (ld_dx) and dbias; column blocks are owned by one thread (fixed summation order).
template <typename T>
void softplus_backward(T* dx, i64 ld_dx, T* dbias, const T* dout, i64 ld_dout, const T* x, i64 ld_x, const T* bias,
                       i64 M, i64 C) {
  const i64 block = 16;
#pragma omp parallel for schedule(static)
  for (i64 c0 = 0; c0 < C; c0 += block) {
    const i64 c1 = c0 + block < C ? c0 + block : C;
    T acc[16] = {};
    for (i64 m = 0; m < M; m++) {
      const T* xr = x + m * ld_x;
      const T* g = dout + m * ld_dout;
      T* d = dx + m * ld_dx;
      for (i64 c = c0; c < c1; c++) {
        const T v = g[c] * softplus_grad(xr[c] + bias[c]);
        d[c] += v;
        acc[c - c0] += v;
      }
    }
    for (i64 c = c0; c < c1; c++) dbias[c] += acc[c - c0];
  }
}

}  // namespace gm

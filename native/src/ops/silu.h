// SiLU over an [M, C] slice with leading dimensions. Backward needs the pre-activation.
#pragma once
#include "common.h"

namespace gm {

template <typename T>
void silu_forward(T* out, i64 ld_out, const T* x, i64 ld_x, i64 M, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* xr = x + m * ld_x;
    T* o = out + m * ld_out;
    for (i64 c = 0; c < C; c++) o[c] = silu(xr[c]);
  }
}

template <typename T>
void silu_backward(T* dx, i64 ld_dx, const T* dout, i64 ld_dout, const T* x, i64 ld_x, i64 M, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* xr = x + m * ld_x;
    const T* g = dout + m * ld_dout;
    T* d = dx + m * ld_dx;
    for (i64 c = 0; c < C; c++) d[c] += g[c] * silu_grad(xr[c]);
  }
}

}  // namespace gm

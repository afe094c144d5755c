// RMSNorm without bias: out = x * w / sqrt(mean(x^2) + eps). Forward saves rstd per row.
#pragma once
#include "common.h"

namespace gm {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, i64 M, i64 C, T eps) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* xr = x + m * C;
    T ss = 0;
#pragma omp simd reduction(+ : ss)
    for (i64 c = 0; c < C; c++) ss += xr[c] * xr[c];
    T r = T(1) / std::sqrt(ss / T(C) + eps);
    rstd[m] = r;
    T* o = out + m * C;
    for (i64 c = 0; c < C; c++) o[c] = xr[c] * r * w[c];
  }
}

template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, i64 M, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* xr = x + m * C;
    const T* g = dout + m * C;
    const T r = rstd[m];
    T dot = 0;  // mean((g*w) . x)
#pragma omp simd reduction(+ : dot)
    for (i64 c = 0; c < C; c++) dot += g[c] * w[c] * xr[c];
    dot /= T(C);
    T* d = dx + m * C;
    for (i64 c = 0; c < C; c++) d[c] += r * (g[c] * w[c] - xr[c] * r * r * dot);
  }
  accumulate_columns(dw, M, C, [&](i64 m, i64 c) { return dout[m * C + c] * x[m * C + c] * rstd[m]; });
}

}  // namespace gm

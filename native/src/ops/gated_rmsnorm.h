// Mamba-2 gated RMSNorm with the gate before the norm (norm_before_gate=False):
//   g = y * silu(z);  out = g * w / sqrt(mean(g^2) + eps)
// z is read with its own leading dimension (it is a column slice of in_proj's output).
#pragma once
#include <vector>

#include "common.h"

namespace gm {

template <typename T>
void gated_rmsnorm_forward(T* out, T* rstd, const T* y, const T* z, i64 ld_z, const T* w, i64 M, i64 C, T eps) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* yr = y + m * C;
    const T* zr = z + m * ld_z;
    T* o = out + m * C;
    T ss = 0;
#pragma omp simd reduction(+ : ss)
    for (i64 c = 0; c < C; c++) {
      T g = yr[c] * silu(zr[c]);
      o[c] = g;
      ss += g * g;
    }
    T r = T(1) / std::sqrt(ss / T(C) + eps);
    if (rstd) rstd[m] = r;
    for (i64 c = 0; c < C; c++) o[c] *= r * w[c];
  }
}

// Accumulates into dy, dz (ld_dz) and dw.
template <typename T>
void gated_rmsnorm_backward(T* dy, T* dz, i64 ld_dz, T* dw, const T* dout, const T* y, const T* z, i64 ld_z, const T* w,
                            const T* rstd, i64 M, i64 C) {
#pragma omp parallel
  {
    std::vector<T> sig((size_t)C);  // sigmoid(z) of the row: one exp per element
#pragma omp for schedule(static)
    for (i64 m = 0; m < M; m++) {
      const T* yr = y + m * C;
      const T* zr = z + m * ld_z;
      const T* go = dout + m * C;
      const T r = rstd[m];
      T dot = 0;  // mean((go*w) . g)
#pragma omp simd reduction(+ : dot)
      for (i64 c = 0; c < C; c++) {
        sig[c] = sigmoid(zr[c]);
        dot += go[c] * w[c] * yr[c] * zr[c] * sig[c];
      }
      dot /= T(C);
      T* dyr = dy + m * C;
      T* dzr = dz + m * ld_dz;
#pragma omp simd
      for (i64 c = 0; c < C; c++) {
        const T sg = sig[c], sz = zr[c] * sg;
        const T g = yr[c] * sz;
        const T dg = r * go[c] * w[c] - r * r * r * g * dot;
        dyr[c] += dg * sz;
        dzr[c] += dg * yr[c] * sg * (T(1) + zr[c] * (T(1) - sg));
      }
    }
  }
  accumulate_columns(dw, M, C, [&](i64 m, i64 c) { return dout[m * C + c] * y[m * C + c] * silu(z[m * ld_z + c]) * rstd[m]; });
}

}  // namespace gm

// Combining the forward (f) and backward (b) branches of a BiMamba layer. The gate mode's
// Linear(2d, d) runs through linear.h on the stored [f | b] rows; this file holds the pointwise parts:
//   gate: out = s*f + (1-s)*b with s = sigmoid(pre);  mean: (f + b)/2;  sum: f + b.
// fb is [M, 2C]: f in columns [0, C), b in [C, 2C).
#pragma once
#include "common.h"

namespace gm {

// pre holds W[f;b] + c on entry; it is overwritten with s = sigmoid(pre) (kept for backward).
template <typename T>
void gate_forward(T* out, T* pre_to_s, const T* fb, i64 M, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* f = fb + m * 2 * C;
    const T* b = f + C;
    T* s = pre_to_s + m * C;
    T* o = out + m * C;
    for (i64 c = 0; c < C; c++) {
      s[c] = sigmoid(s[c]);
      o[c] = s[c] * f[c] + (T(1) - s[c]) * b[c];
    }
  }
}

// Writes dpre (gradient of the gate's pre-activation) and accumulates into dfb.
template <typename T>
void gate_backward(T* dfb, T* dpre, const T* dout, const T* fb, const T* s, i64 M, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* f = fb + m * 2 * C;
    const T* b = f + C;
    const T* sr = s + m * C;
    const T* g = dout + m * C;
    T* df = dfb + m * 2 * C;
    T* db = df + C;
    T* dp = dpre + m * C;
    for (i64 c = 0; c < C; c++) {
      df[c] += g[c] * sr[c];
      db[c] += g[c] * (T(1) - sr[c]);
      dp[c] = g[c] * (f[c] - b[c]) * sr[c] * (T(1) - sr[c]);
    }
  }
}

// out = wf * f + wb * b (mean: 0.5, 0.5; sum: 1, 1).
template <typename T>
void blend_forward(T* out, const T* fb, T wf, T wb, i64 M, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* f = fb + m * 2 * C;
    T* o = out + m * C;
    for (i64 c = 0; c < C; c++) o[c] = wf * f[c] + wb * f[C + c];
  }
}

template <typename T>
void blend_backward(T* dfb, const T* dout, T wf, T wb, i64 M, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) {
    const T* g = dout + m * C;
    T* d = dfb + m * 2 * C;
    for (i64 c = 0; c < C; c++) {
      d[c] += wf * g[c];
      d[C + c] += wb * g[c];
    }
  }
}

}  // namespace gm

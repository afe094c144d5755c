// LeakyReLU (torch: x if x >= 0 else slope * x; the gradient at 0 is 1, as in torch).
#pragma once
#include "common.h"

namespace gm {

template <typename T>
void leaky_relu_forward(T* out, const T* inp, i64 n, T slope) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; i++) out[i] = inp[i] > T(0) ? inp[i] : inp[i] * slope;
}

template <typename T>
void leaky_relu_backward(T* dinp, const T* dout, const T* inp, i64 n, T slope) {
#pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; i++) dinp[i] += inp[i] > T(0) ? dout[i] : dout[i] * slope;
}

}  // namespace gm

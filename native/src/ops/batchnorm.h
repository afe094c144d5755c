// BatchNorm1d over [B, C] rows, torch semantics: training mode normalises with the batch mean and
// the biased variance and moves the running statistics by `momentum` using the *unbiased* variance;
// eval mode uses the running statistics. Forward keeps xhat and rstd for backward.
#pragma once
#include <vector>

#include "common.h"

namespace gm {

template <typename T>
void batchnorm_forward_train(T* out, T* xhat, T* rstd, const T* inp, const T* weight, const T* bias, T* running_mean,
                             T* running_var, i64 B, i64 C, double eps, double momentum) {
#pragma omp parallel for schedule(static)
  for (i64 c = 0; c < C; c++) {
    double mean = 0;
    for (i64 b = 0; b < B; b++) mean += inp[b * C + c];
    mean /= (double)B;
    double var = 0;
    for (i64 b = 0; b < B; b++) {
      const double d = inp[b * C + c] - mean;
      var += d * d;
    }
    const double biased = var / (double)B;
    const double r = 1.0 / std::sqrt(biased + eps);
    rstd[c] = (T)r;
    for (i64 b = 0; b < B; b++) {
      const T xh = (T)((inp[b * C + c] - mean) * r);
      xhat[b * C + c] = xh;
      out[b * C + c] = xh * weight[c] + bias[c];
    }
    if (running_mean) {
      const double unbiased = B > 1 ? var / (double)(B - 1) : biased;
      running_mean[c] = (T)((1 - momentum) * running_mean[c] + momentum * mean);
      running_var[c] = (T)((1 - momentum) * running_var[c] + momentum * unbiased);
    }
  }
}

template <typename T>
void batchnorm_forward_eval(T* out, const T* inp, const T* weight, const T* bias, const T* running_mean,
                            const T* running_var, i64 B, i64 C, double eps) {
#pragma omp parallel for schedule(static)
  for (i64 b = 0; b < B; b++)
    for (i64 c = 0; c < C; c++) {
      const double r = 1.0 / std::sqrt((double)running_var[c] + eps);
      out[b * C + c] = (T)(((double)inp[b * C + c] - running_mean[c]) * r * weight[c] + bias[c]);
    }
}

// Backward of the training-mode forward: dinp += rstd/B * (B*g - sum(g) - xhat*sum(g*xhat)) with
// g = dout*weight; dweight += sum(dout*xhat); dbias += sum(dout).
template <typename T>
void batchnorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* xhat, const T* rstd, const T* weight,
                        i64 B, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 c = 0; c < C; c++) {
    double sum_g = 0, sum_gx = 0, sum_d = 0, sum_dx = 0;
    for (i64 b = 0; b < B; b++) {
      const double d = dout[b * C + c], xh = xhat[b * C + c];
      sum_d += d;
      sum_dx += d * xh;
    }
    sum_g = sum_d * weight[c];
    sum_gx = sum_dx * weight[c];
    dweight[c] += (T)sum_dx;
    dbias[c] += (T)sum_d;
    const double k = (double)rstd[c] / (double)B;
    for (i64 b = 0; b < B; b++) {
      const double g = (double)dout[b * C + c] * weight[c];
      dinp[b * C + c] += (T)(k * ((double)B * g - sum_g - (double)xhat[b * C + c] * sum_gx));
    }
  }
}

}  // namespace gm

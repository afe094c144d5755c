// AdamW with decoupled weight decay, in exactly torch.optim.AdamW's order of operations:
//   p *= 1 - lr*wd;  m = lerp(m, g, 1-b1);  v = b2*v + (1-b2)*g^2;
//   p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
// grad_scale folds global-norm clipping (and any averaging) into the update without a second pass.
#pragma once
#include "common.h"

namespace gm {

struct AdamWParams {
  double lr, beta1, beta2, eps, weight_decay;
  long step;  // 1-based
  double grad_scale;
};

template <typename T>
void adamw_update(T* params, const T* grads, T* m, T* v, i64 n, const AdamWParams& o) {
  const T b1 = (T)o.beta1, b2 = (T)o.beta2, eps = (T)o.eps;
  const T decay = (T)(1.0 - o.lr * o.weight_decay);
  const T step_size = (T)(o.lr / (1.0 - std::pow(o.beta1, (double)o.step)));
  const T bc2_sqrt = (T)std::sqrt(1.0 - std::pow(o.beta2, (double)o.step));
  const T gs = (T)o.grad_scale;
#pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; i++) {
    const T g = grads[i] * gs;
    if (o.weight_decay != 0) params[i] *= decay;
    m[i] += (g - m[i]) * (T(1) - b1);
    v[i] = v[i] * b2 + (T(1) - b2) * g * g;
    const T denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    params[i] -= step_size * m[i] / denom;
  }
}

}  // namespace gm

// AdamW, global norm and clip-scale kernels (bodies: optim.cuh).
#include "kernels.h"
#include "optim.cuh"

namespace gm {
namespace cuda {

template <typename TP>
__global__ void adamw_kernel(float* master, TP* params, const float* grads, float* m, float* v, i64 n, AdamWScalars k,
                             const float* scale_dev) {
  adamw_body(this_thread(), master, params, grads, m, v, n, k, scale_dev);
}
template <typename T>
__global__ void sum_partial_kernel(double* part, const T* g, i64 n, bool square) {
  __shared__ double sh[32];
  const Thread th = this_thread();
  const double s = block_reduce(sum_partial(th, g, n, square), SumOp(), sh);
  if (th.tid() == 0) part[th.block.x] = s;
}
__global__ void sum_final_kernel(double* out, const double* part, i64 nparts) {
  __shared__ double sh[32];
  const Thread th = this_thread();
  const double s = block_reduce(sum_final_partial(th, part, nparts), SumOp(), sh);
  if (th.tid() == 0) out[0] = s;
}
__global__ void clip_scale_kernel(float* scale, const double* sumsq, double max_norm) {
  clip_scale_body(this_thread(), scale, sumsq, max_norm);
}

template <typename TP>
void adamw_update(float* master, TP* params, const float* grads, float* m, float* v, i64 n, const AdamWHyper& o,
                  const float* scale_dev, cudaStream_t stream) {
  if (n <= 0) return;
  GM_LAUNCH(adamw_kernel<TP>, adamw_geometry(n), stream)(master, params, grads, m, v, n, adamw_scalars(o), scale_dev);
  check_launch("adamw_update");
}
template <typename T>
static void sum_impl(double* out, const T* g, i64 n, bool square, double* scratch, cudaStream_t stream) {
  GM_LAUNCH(sum_partial_kernel<T>, sum_partial_geometry(n), stream)(scratch, g, n, square);
  GM_LAUNCH(sum_final_kernel, sum_final_geometry(), stream)(out, scratch, sum_scratch_doubles(n));
  check_launch(square ? "sum_squares" : "sum_values");
}
template <typename T>
void sum_squares(double* out, const T* g, i64 n, double* scratch, cudaStream_t stream) {
  sum_impl(out, g, n, true, scratch, stream);
}
void sum_values(double* out, const float* v, i64 n, double* scratch, cudaStream_t stream) {
  sum_impl(out, v, n, false, scratch, stream);
}
void clip_scale(float* scale, const double* sumsq, double max_norm, cudaStream_t stream) {
  clip_scale_kernel<<<1, 32, 0, stream>>>(scale, sumsq, max_norm);
  check_launch("clip_scale");
}

template void adamw_update<float>(float*, float*, const float*, float*, float*, i64, const AdamWHyper&, const float*,
                                  cudaStream_t);
template void adamw_update<bf16>(float*, bf16*, const float*, float*, float*, i64, const AdamWHyper&, const float*,
                                 cudaStream_t);
template void sum_squares<float>(double*, const float*, i64, double*, cudaStream_t);
template void sum_squares<bf16>(double*, const bf16*, i64, double*, cudaStream_t);

}  // namespace cuda
}  // namespace gm

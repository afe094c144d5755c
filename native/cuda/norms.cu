// RMSNorm and gated RMSNorm kernels (bodies: norms.cuh).
#include "kernels.h"
#include "norms.cuh"

namespace gm {
namespace cuda {

template <typename T>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* x, const T* w, i64 C, float eps) {
  __shared__ float sh[32];
  const Thread th = this_thread();
  const float ss = block_reduce(rmsnorm_forward_partial(th, x, C), SumOp(), sh);
  rmsnorm_forward_finish(th, ss, out, rstd, x, w, C, eps);
}
template <typename T>
__global__ void rmsnorm_backward_kernel(T* dx, const T* dout, const T* x, const T* w, const float* rstd, i64 C) {
  __shared__ float sh[32];
  const Thread th = this_thread();
  const float dot = block_reduce(rmsnorm_backward_partial(th, dout, x, w, C), SumOp(), sh);
  rmsnorm_backward_finish(th, dot, dx, dout, x, w, rstd, C);
}
template <typename T>
__global__ void rmsnorm_dw_kernel(float* scratch, const T* dout, const T* x, const float* rstd, i64 M, i64 C) {
  rmsnorm_dw_partial(this_thread(), scratch, dout, x, rstd, M, C);
}
__global__ void colsum_finish_kernel(float* dst, const float* scratch, i64 nrb, i64 width) {
  colsum_finish_body(this_thread(), dst, scratch, nrb, width);
}
template <typename T>
__global__ void gated_rmsnorm_forward_kernel(T* out, float* rstd, const T* y, const T* z, i64 ld_z, const T* w, i64 C,
                                             float eps) {
  __shared__ float sh[32];
  const Thread th = this_thread();
  const float ss = block_reduce(gated_rmsnorm_forward_partial(th, y, z, ld_z, C), SumOp(), sh);
  gated_rmsnorm_forward_finish(th, ss, out, rstd, y, z, ld_z, w, C, eps);
}
template <typename T>
__global__ void gated_rmsnorm_backward_kernel(T* dy, T* dz, i64 ld_dz, const T* dout, const T* y, const T* z, i64 ld_z,
                                              const T* w, const float* rstd, i64 C) {
  __shared__ float sh[32];
  const Thread th = this_thread();
  const float dot = block_reduce(gated_rmsnorm_backward_partial(th, dout, y, z, ld_z, w, C), SumOp(), sh);
  gated_rmsnorm_backward_finish(th, dot, dy, dz, ld_dz, dout, y, z, ld_z, w, rstd, C);
}
template <typename T>
__global__ void gated_rmsnorm_dw_kernel(float* scratch, const T* dout, const T* y, const T* z, i64 ld_z,
                                        const float* rstd, i64 M, i64 C) {
  gated_rmsnorm_dw_partial(this_thread(), scratch, dout, y, z, ld_z, rstd, M, C);
}

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, i64 M, i64 C, float eps, cudaStream_t stream) {
  if (M <= 0) return;
  GM_LAUNCH(rmsnorm_forward_kernel<T>, geometry_rows(M, C), stream)(out, rstd, x, w, C, eps);
  check_launch("rmsnorm_forward");
}
template <typename T>
void rmsnorm_backward(T* dx, float* dw, const T* dout, const T* x, const T* w, const float* rstd, i64 M, i64 C,
                      float* scratch, cudaStream_t stream) {
  if (M <= 0) return;
  GM_LAUNCH(rmsnorm_backward_kernel<T>, geometry_rows(M, C), stream)(dx, dout, x, w, rstd, C);
  GM_LAUNCH(rmsnorm_dw_kernel<T>, colsum_partial_geometry(M, C), stream)(scratch, dout, x, rstd, M, C);
  GM_LAUNCH(colsum_finish_kernel, colsum_finish_geometry(C), stream)(dw, scratch, colsum_blocks(M), C);
  check_launch("rmsnorm_backward");
}
template <typename T>
void gated_rmsnorm_forward(T* out, float* rstd, const T* y, const T* z, i64 ld_z, const T* w, i64 M, i64 C, float eps,
                           cudaStream_t stream) {
  if (M <= 0) return;
  GM_LAUNCH(gated_rmsnorm_forward_kernel<T>, geometry_rows(M, C), stream)(out, rstd, y, z, ld_z, w, C, eps);
  check_launch("gated_rmsnorm_forward");
}
template <typename T>
void gated_rmsnorm_backward(T* dy, T* dz, i64 ld_dz, float* dw, const T* dout, const T* y, const T* z, i64 ld_z,
                            const T* w, const float* rstd, i64 M, i64 C, float* scratch, cudaStream_t stream) {
  if (M <= 0) return;
  GM_LAUNCH(gated_rmsnorm_backward_kernel<T>, geometry_rows(M, C), stream)(dy, dz, ld_dz, dout, y, z, ld_z, w, rstd, C);
  GM_LAUNCH(gated_rmsnorm_dw_kernel<T>, colsum_partial_geometry(M, C), stream)(scratch, dout, y, z, ld_z, rstd, M, C);
  GM_LAUNCH(colsum_finish_kernel, colsum_finish_geometry(C), stream)(dw, scratch, colsum_blocks(M), C);
  check_launch("gated_rmsnorm_backward");
}

#define GM_INST(T)                                                                                                  \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, i64, i64, float, cudaStream_t);                  \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, i64, i64, float*,       \
                                    cudaStream_t);                                                                  \
  template void gated_rmsnorm_forward<T>(T*, float*, const T*, const T*, i64, const T*, i64, i64, float,            \
                                         cudaStream_t);                                                             \
  template void gated_rmsnorm_backward<T>(T*, T*, i64, float*, const T*, const T*, const T*, i64, const T*,         \
                                          const float*, i64, i64, float*, cudaStream_t);
GM_INST(float)
GM_INST(bf16)

}  // namespace cuda
}  // namespace gm

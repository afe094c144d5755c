// Softplus, combine and direction-reversal kernels (bodies: pointwise.cuh).
#include "kernels.h"
#include "pointwise.cuh"

namespace gm {
namespace cuda {

template <typename T>
__global__ void softplus_forward_kernel(T* out, i64 ld_out, const T* x, i64 ld_x, const T* bias, i64 M, i64 C) {
  softplus_forward_body(this_thread(), out, ld_out, x, ld_x, bias, M, C);
}
template <typename T>
__global__ void softplus_backward_dx_kernel(T* dx, i64 ld_dx, const T* dout, i64 ld_dout, const T* x, i64 ld_x,
                                            const T* bias, i64 M, i64 C) {
  softplus_backward_dx_body(this_thread(), dx, ld_dx, dout, ld_dout, x, ld_x, bias, M, C);
}
template <typename T>
__global__ void softplus_dbias_kernel(float* scratch, const T* dout, i64 ld_dout, const T* x, i64 ld_x, const T* bias,
                                      i64 M, i64 C) {
  softplus_dbias_partial(this_thread(), scratch, dout, ld_dout, x, ld_x, bias, M, C);
}
__global__ void pointwise_colsum_finish_kernel(float* dst, const float* scratch, i64 nrb, i64 width) {
  colsum_finish_body(this_thread(), dst, scratch, nrb, width);
}
template <typename T>
__global__ void gate_forward_kernel(T* out, T* pre_to_s, const T* fb, i64 M, i64 C) {
  gate_forward_body(this_thread(), out, pre_to_s, fb, M, C);
}
template <typename T>
__global__ void gate_backward_kernel(T* dfb, T* dpre, const T* dout, const T* fb, const T* s, i64 M, i64 C) {
  gate_backward_body(this_thread(), dfb, dpre, dout, fb, s, M, C);
}
template <typename T>
__global__ void blend_forward_kernel(T* out, const T* fb, float wf, float wb, i64 M, i64 C) {
  blend_forward_body(this_thread(), out, fb, wf, wb, M, C);
}
template <typename T>
__global__ void blend_backward_kernel(T* dfb, const T* dout, float wf, float wb, i64 M, i64 C) {
  blend_backward_body(this_thread(), dfb, dout, wf, wb, M, C);
}
template <typename T>
__global__ void reverse_forward_kernel(T* out, i64 ld_out, const T* in, i64 ld_in, const std::int32_t* lengths, i64 B,
                                       i64 L, i64 C) {
  reverse_forward_body(this_thread(), out, ld_out, in, ld_in, lengths, B, L, C);
}
template <typename T>
__global__ void reverse_backward_kernel(T* din, i64 ld_din, const T* dout, i64 ld_dout, const std::int32_t* lengths,
                                        i64 B, i64 L, i64 C) {
  reverse_backward_body(this_thread(), din, ld_din, dout, ld_dout, lengths, B, L, C);
}
template <typename T>
__global__ void bidir_merge_forward_kernel(T* fb, const T* mix, const T* x, const std::int32_t* lengths, i64 B, i64 L,
                                           i64 C) {
  bidir_merge_forward_body(this_thread(), fb, mix, x, lengths, B, L, C);
}
template <typename T>
__global__ void bidir_merge_backward_kernel(T* dx, T* dmix, const T* dfb, const std::int32_t* lengths, i64 B, i64 L,
                                            i64 C) {
  bidir_merge_backward_body(this_thread(), dx, dmix, dfb, lengths, B, L, C);
}

template <typename T>
__global__ void silu_gate_forward_kernel(T* out, const T* y, const T* z, i64 ld_z, i64 M, i64 C) {
  silu_gate_forward_body(this_thread(), out, y, z, ld_z, M, C);
}
template <typename T>
__global__ void silu_gate_backward_kernel(T* dy, T* dz, i64 ld_dz, const T* dout, const T* y, const T* z, i64 ld_z,
                                          i64 M, i64 C) {
  silu_gate_backward_body(this_thread(), dy, dz, ld_dz, dout, y, z, ld_z, M, C);
}
template <typename T>
__global__ void argmax_rows_kernel(std::int32_t* out, const T* x, i64 V) {
  __shared__ unsigned long long sh[32];
  const Thread th = this_thread();
  const unsigned long long key = block_reduce(argmax_partial(th, x, V), ArgMaxOp(), sh);
  argmax_finish(th, key, out);
}

__global__ void neg_exp_forward_kernel(float* A, const float* A_log, i64 n) {
  neg_exp_forward_body(this_thread(), A, A_log, n);
}
__global__ void neg_exp_backward_kernel(float* dA_log, const float* dA, const float* A, i64 n) {
  neg_exp_backward_body(this_thread(), dA_log, dA, A, n);
}
void neg_exp_forward(float* A, const float* A_log, i64 n, cudaStream_t stream) {
  if (n <= 0) return;
  GM_LAUNCH(neg_exp_forward_kernel, neg_exp_geometry(n), stream)(A, A_log, n);
  check_launch("neg_exp_forward");
}
void neg_exp_backward(float* dA_log, const float* dA, const float* A, i64 n, cudaStream_t stream) {
  if (n <= 0) return;
  GM_LAUNCH(neg_exp_backward_kernel, neg_exp_geometry(n), stream)(dA_log, dA, A, n);
  check_launch("neg_exp_backward");
}

template <typename T>
void softplus_forward(T* out, i64 ld_out, const T* x, i64 ld_x, const T* bias, i64 M, i64 C, cudaStream_t stream) {
  if (M * C <= 0) return;
  GM_LAUNCH(softplus_forward_kernel<T>, elementwise_geometry(M, C), stream)(out, ld_out, x, ld_x, bias, M, C);
  check_launch("softplus_forward");
}
template <typename T>
void softplus_backward(T* dx, i64 ld_dx, float* dbias, const T* dout, i64 ld_dout, const T* x, i64 ld_x, const T* bias,
                       i64 M, i64 C, float* scratch, cudaStream_t stream) {
  if (M * C <= 0) return;
  GM_LAUNCH(softplus_backward_dx_kernel<T>, elementwise_geometry(M, C), stream)(dx, ld_dx, dout, ld_dout, x, ld_x, bias,
                                                                                M, C);
  GM_LAUNCH(softplus_dbias_kernel<T>, colsum_partial_geometry(M, C), stream)(scratch, dout, ld_dout, x, ld_x, bias,
                                                                                 M, C);
  GM_LAUNCH(pointwise_colsum_finish_kernel, colsum_finish_geometry(C), stream)(dbias, scratch, colsum_blocks(M), C);
  check_launch("softplus_backward");
}
template <typename T>
void gate_forward(T* out, T* pre_to_s, const T* fb, i64 M, i64 C, cudaStream_t stream) {
  if (M * C <= 0) return;
  GM_LAUNCH(gate_forward_kernel<T>, elementwise_geometry(M, C), stream)(out, pre_to_s, fb, M, C);
  check_launch("gate_forward");
}
template <typename T>
void gate_backward(T* dfb, T* dpre, const T* dout, const T* fb, const T* s, i64 M, i64 C, cudaStream_t stream) {
  if (M * C <= 0) return;
  GM_LAUNCH(gate_backward_kernel<T>, elementwise_geometry(M, C), stream)(dfb, dpre, dout, fb, s, M, C);
  check_launch("gate_backward");
}
template <typename T>
void blend_forward(T* out, const T* fb, float wf, float wb, i64 M, i64 C, cudaStream_t stream) {
  if (M * C <= 0) return;
  GM_LAUNCH(blend_forward_kernel<T>, elementwise_geometry(M, C), stream)(out, fb, wf, wb, M, C);
  check_launch("blend_forward");
}
template <typename T>
void blend_backward(T* dfb, const T* dout, float wf, float wb, i64 M, i64 C, cudaStream_t stream) {
  if (M * C <= 0) return;
  GM_LAUNCH(blend_backward_kernel<T>, elementwise_geometry(M, C), stream)(dfb, dout, wf, wb, M, C);
  check_launch("blend_backward");
}
template <typename T>
void reverse_forward(T* out, i64 ld_out, const T* in, i64 ld_in, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                     cudaStream_t stream) {
  if (B * L * C <= 0) return;
  GM_LAUNCH(reverse_forward_kernel<T>, reverse_geometry(B, L, C), stream)(out, ld_out, in, ld_in, lengths, B, L, C);
  check_launch("reverse_forward");
}
template <typename T>
void reverse_backward(T* din, i64 ld_din, const T* dout, i64 ld_dout, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                      cudaStream_t stream) {
  if (B * L * C <= 0) return;
  GM_LAUNCH(reverse_backward_kernel<T>, reverse_geometry(B, L, C), stream)(din, ld_din, dout, ld_dout, lengths, B, L,
                                                                           C);
  check_launch("reverse_backward");
}
template <typename T>
void bidir_merge_forward(T* fb, const T* mix, const T* x, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                         cudaStream_t stream) {
  if (B * L * C <= 0) return;
  GM_LAUNCH(bidir_merge_forward_kernel<T>, reverse_geometry(B, L, C), stream)(fb, mix, x, lengths, B, L, C);
  check_launch("bidir_merge_forward");
}
template <typename T>
void bidir_merge_backward(T* dx, T* dmix, const T* dfb, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                          cudaStream_t stream) {
  if (B * L * C <= 0) return;
  GM_LAUNCH(bidir_merge_backward_kernel<T>, reverse_geometry(B, L, C), stream)(dx, dmix, dfb, lengths, B, L, C);
  check_launch("bidir_merge_backward");
}

template <typename T>
void silu_gate_forward(T* out, const T* y, const T* z, i64 ld_z, i64 M, i64 C, cudaStream_t stream) {
  if (M * C <= 0) return;
  GM_LAUNCH(silu_gate_forward_kernel<T>, elementwise_geometry(M, C), stream)(out, y, z, ld_z, M, C);
  check_launch("silu_gate_forward");
}
template <typename T>
void silu_gate_backward(T* dy, T* dz, i64 ld_dz, const T* dout, const T* y, const T* z, i64 ld_z, i64 M, i64 C,
                        cudaStream_t stream) {
  if (M * C <= 0) return;
  GM_LAUNCH(silu_gate_backward_kernel<T>, elementwise_geometry(M, C), stream)(dy, dz, ld_dz, dout, y, z, ld_z, M, C);
  check_launch("silu_gate_backward");
}
template <typename T>
void argmax_rows(std::int32_t* out, const T* x, i64 M, i64 V, cudaStream_t stream) {
  if (M <= 0 || V <= 0) return;
  GM_LAUNCH(argmax_rows_kernel<T>, argmax_geometry(M, V), stream)(out, x, V);
  check_launch("argmax_rows");
}

#define GM_INST(T)                                                                                                  \
  template void softplus_forward<T>(T*, i64, const T*, i64, const T*, i64, i64, cudaStream_t);                      \
  template void softplus_backward<T>(T*, i64, float*, const T*, i64, const T*, i64, const T*, i64, i64, float*,     \
                                     cudaStream_t);                                                                 \
  template void gate_forward<T>(T*, T*, const T*, i64, i64, cudaStream_t);                                          \
  template void gate_backward<T>(T*, T*, const T*, const T*, const T*, i64, i64, cudaStream_t);                     \
  template void blend_forward<T>(T*, const T*, float, float, i64, i64, cudaStream_t);                               \
  template void blend_backward<T>(T*, const T*, float, float, i64, i64, cudaStream_t);                              \
  template void reverse_forward<T>(T*, i64, const T*, i64, const std::int32_t*, i64, i64, i64, cudaStream_t);       \
  template void reverse_backward<T>(T*, i64, const T*, i64, const std::int32_t*, i64, i64, i64, cudaStream_t);      \
  template void bidir_merge_forward<T>(T*, const T*, const T*, const std::int32_t*, i64, i64, i64, cudaStream_t);   \
  template void bidir_merge_backward<T>(T*, T*, const T*, const std::int32_t*, i64, i64, i64, cudaStream_t);    \
  template void silu_gate_forward<T>(T*, const T*, const T*, i64, i64, i64, cudaStream_t);                          \
  template void silu_gate_backward<T>(T*, T*, i64, const T*, const T*, const T*, i64, i64, i64, cudaStream_t);      \
  template void argmax_rows<T>(std::int32_t*, const T*, i64, i64, cudaStream_t);
GM_INST(float)
GM_INST(bf16)

}  // namespace cuda
}  // namespace gm

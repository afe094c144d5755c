// Causal depthwise conv1d (+ SiLU, padding mask) kernels (bodies: conv1d.cuh).
#include "conv1d.cuh"
#include "kernels.h"

namespace gm {
namespace cuda {

template <typename T>
__global__ void conv1d_forward_kernel(T* out, i64 ld_out, T* act, i64 ld_act, const T* x, i64 ld_x, const T* w,
                                      const T* b, const std::int32_t* lengths, i64 rows, i64 Tn, i64 C, i64 K) {
  conv1d_forward_body(this_thread(), out, ld_out, act, ld_act, x, ld_x, w, b, lengths, rows, Tn, C, K);
}
template <typename T>
__global__ void conv1d_backward_dx_kernel(T* dx, i64 ld_dx, const T* dout, i64 ld_dout, const T* pre, i64 ld_pre,
                                          const T* w, const std::int32_t* lengths, i64 rows, i64 Tn, i64 C, i64 K) {
  conv1d_backward_dx_body(this_thread(), dx, ld_dx, dout, ld_dout, pre, ld_pre, w, lengths, rows, Tn, C, K);
}
template <typename T>
__global__ void conv1d_param_partial_kernel(float* scratch, const T* dout, i64 ld_dout, const T* pre, i64 ld_pre,
                                            const T* x, i64 ld_x, const std::int32_t* lengths, i64 rows, i64 Tn, i64 C,
                                            i64 K) {
  conv1d_param_partial_body(this_thread(), scratch, dout, ld_dout, pre, ld_pre, x, ld_x, lengths, rows, Tn, C, K);
}
__global__ void conv1d_param_finish_kernel(float* dw, float* db, const float* scratch, i64 nrb, i64 C, i64 K) {
  conv1d_param_finish_body(this_thread(), dw, db, scratch, nrb, C, K);
}

static void check_k(i64 K) {
  if (K < 1 || K > kConvMaxK) throw std::invalid_argument("gm cuda: conv1d: kernel size must be 1..8");
}

template <typename T>
void conv1d_forward(T* out, i64 ld_out, T* act, i64 ld_act, const T* x, i64 ld_x, const T* w, const T* b,
                    const std::int32_t* lengths, i64 rows, i64 Tn, i64 C, i64 K, cudaStream_t stream) {
  check_k(K);
  if (rows * Tn * C <= 0) return;
  GM_LAUNCH(conv1d_forward_kernel<T>, conv1d_geometry(rows, Tn, C), stream)(out, ld_out, act, ld_act, x, ld_x, w, b,
                                                                            lengths, rows, Tn, C, K);
  check_launch("conv1d_forward");
}
template <typename T>
void conv1d_backward(T* dx, i64 ld_dx, float* dw, float* db, const T* dout, i64 ld_dout, const T* pre, i64 ld_pre,
                     const T* x, i64 ld_x, const T* w, const std::int32_t* lengths, i64 rows, i64 Tn, i64 C, i64 K,
                     float* scratch, cudaStream_t stream) {
  check_k(K);
  if (rows * Tn * C <= 0) return;
  GM_LAUNCH(conv1d_backward_dx_kernel<T>, conv1d_geometry(rows, Tn, C), stream)(dx, ld_dx, dout, ld_dout, pre, ld_pre,
                                                                                w, lengths, rows, Tn, C, K);
  GM_LAUNCH(conv1d_param_partial_kernel<T>, conv1d_param_partial_geometry(rows, Tn, C), stream)(
      scratch, dout, ld_dout, pre, ld_pre, x, ld_x, lengths, rows, Tn, C, K);
  GM_LAUNCH(conv1d_param_finish_kernel, conv1d_param_finish_geometry(C, K), stream)(dw, db, scratch,
                                                                                    colsum_blocks(rows * Tn), C, K);
  check_launch("conv1d_backward");
}

#define GM_INST(T)                                                                                                  \
  template void conv1d_forward<T>(T*, i64, T*, i64, const T*, i64, const T*, const T*, const std::int32_t*, i64,    \
                                  i64, i64, i64, cudaStream_t);                                                     \
  template void conv1d_backward<T>(T*, i64, float*, float*, const T*, i64, const T*, i64, const T*, i64, const T*, \
                                   const std::int32_t*, i64, i64, i64, i64, float*, cudaStream_t);
GM_INST(float)
GM_INST(bf16)

}  // namespace cuda
}  // namespace gm

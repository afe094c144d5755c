// Embedding kernels (bodies: embedding.cuh).
#include "embedding.cuh"
#include "kernels.h"

namespace gm {
namespace cuda {

template <typename T>
__global__ void embedding_forward_kernel(T* out, const std::int32_t* tokens, const T* table, i64 M, i64 C) {
  embedding_forward_body(this_thread(), out, tokens, table, M, C);
}
template <typename T>
__global__ void embedding_backward_kernel(float* dtable, const T* dout, const std::int32_t* tokens,
                                          const std::int32_t* order, const std::int32_t* seg_start, i64 nseg, i64 C) {
  embedding_backward_body(this_thread(), dtable, dout, tokens, order, seg_start, nseg, C);
}

template <typename T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* table, i64 M, i64 C, cudaStream_t stream) {
  if (M <= 0 || C <= 0) return;
  GM_LAUNCH(embedding_forward_kernel<T>, embedding_forward_geometry(M, C), stream)(out, tokens, table, M, C);
  check_launch("embedding_forward");
}
template <typename T>
void embedding_backward(float* dtable, const T* dout, const std::int32_t* tokens, const std::int32_t* order,
                        const std::int32_t* seg_start, i64 nseg, i64 M, i64 C, cudaStream_t stream) {
  if (nseg <= 0 || C <= 0) return;
  GM_LAUNCH(embedding_backward_kernel<T>, embedding_backward_geometry(nseg, C), stream)(dtable, dout, tokens, order,
                                                                                       seg_start, nseg, C);
  check_launch("embedding_backward");
}

#define GM_INST(T)                                                                                                    \
  template void embedding_forward<T>(T*, const std::int32_t*, const T*, i64, i64, cudaStream_t);                      \
  template void embedding_backward<T>(float*, const T*, const std::int32_t*, const std::int32_t*, const std::int32_t*, \
                                      i64, i64, i64, cudaStream_t);
GM_INST(float)
GM_INST(bf16)

}  // namespace cuda
}  // namespace gm

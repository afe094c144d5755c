// Fused softmax cross-entropy kernel (bodies: cross_entropy.cuh).
#include "cross_entropy.cuh"
#include "kernels.h"

namespace gm {
namespace cuda {

template <typename T>
__global__ void cross_entropy_kernel(T* logits, const std::int32_t* targets, float* row_loss, i64 V, float scale) {
  __shared__ float sh[32];
  const Thread th = this_thread();
  const float mx = block_reduce(cross_entropy_max_partial(th, logits, targets, V), MaxOp(), sh);
  const float sum = block_reduce(cross_entropy_sum_partial(th, mx, logits, targets, V), SumOp(), sh);
  cross_entropy_finish(th, mx, sum, logits, targets, row_loss, V, scale);
}

template <typename T>
void cross_entropy_forward_backward(T* logits, const std::int32_t* targets, float* row_loss, i64 M, i64 V, float scale,
                                    cudaStream_t stream) {
  if (M <= 0) return;
  GM_LAUNCH(cross_entropy_kernel<T>, cross_entropy_geometry(M, V), stream)(logits, targets, row_loss, V, scale);
  check_launch("cross_entropy_forward_backward");
}

template void cross_entropy_forward_backward<float>(float*, const std::int32_t*, float*, i64, i64, float, cudaStream_t);
template void cross_entropy_forward_backward<bf16>(bf16*, const std::int32_t*, float*, i64, i64, float, cudaStream_t);

}  // namespace cuda
}  // namespace gm

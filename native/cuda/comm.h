// The gradient communicator the GPU model reduces through during backward (gpu_model.h). One
// instance per rank (process or, in the emulated tests, thread). Implementations:
//   - native/cuda/nccl_comm.{h,cpp}: NCCL (ncclAllReduce with ncclAvg on the given stream);
//   - native/test/cuda_emul_gpu_model.cpp: threads of one process averaging host buffers.
// Every rank must issue the same sequence of calls with the same sizes.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace gm {
namespace cuda {

class GradComm {
 public:
  virtual ~GradComm() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In place: p[0..n) (fp32, device memory) becomes the mean over the ranks of their p[0..n).
  // Enqueued on stream s after the work already there; returns without waiting.
  virtual void all_reduce_mean(float* p, std::int64_t n, cudaStream_t s) = 0;
  // Blocks until everything enqueued on s has completed. A peer that died or hangs makes this throw
  // std::runtime_error (after aborting the communicator) once timeout_s seconds have passed.
  virtual void wait(cudaStream_t s, double timeout_s) = 0;
};

}  // namespace cuda
}  // namespace gm

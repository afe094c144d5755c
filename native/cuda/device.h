// The small device interface the GPU model (gpu_model.cpp) is written against, besides the kernel
// launchers of kernels.h: memory, copies, streams and the GEMM (single or strided-batched). Two implementations:
//   - native/test/cuda_emul_device.cpp (GM_CUDA_EMUL): host memory, a plain fp32-accumulating loop
//     GEMM; with the launchers emulated on the host, this is gm_gpu_model_emul.
//   - native/cuda/device_cuda.cpp: the CUDA runtime (a caching allocator over cudaMalloc, async
//     copies and memsets, streams and events) and gemm() through cuBLASLt, loaded at run time
//     (native/cuda/dynlib.h), so it compiles wherever the toolkit is, with or without cuBLAS headers.
// Every pointer is device memory unless named host. Calls are ordered on the stream; copies to the
// host (copy_to_host, download) synchronise the stream before returning.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels.h"

namespace gm {
namespace cuda {

enum class DType { F32, BF16 };
template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::F32; }
template <>
constexpr DType dtype_of<bf16>() { return DType::BF16; }
inline std::size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

namespace device {

// GPUs visible to this process; 0 (never an exception) without a driver or a device.
int device_count();
// Makes `ordinal` the current device of the calling thread (every later call runs there).
void set_device(int ordinal);
struct DeviceProps {
  std::string name;
  int cc_major = 0, cc_minor = 0, sm_count = 0;
  std::size_t total_bytes = 0;
  double mem_bandwidth_gbs = 0;  // peak DRAM bandwidth from the memory clock and bus width
  double bf16_peak_tflops = 0;   // dense bf16 tensor-core peak from SMs x clock x per-SM rate (0: unknown arch)
};
DeviceProps device_props(int ordinal);

cudaStream_t stream_create();
void stream_destroy(cudaStream_t s);
void stream_sync(cudaStream_t s);
// Cross-stream ordering: work enqueued on s after stream_wait_event(s, e) waits for the work that
// was on the recorded stream when event_record(e, ...) was called.
cudaEvent_t event_create();
void event_destroy(cudaEvent_t e);
void event_record(cudaEvent_t e, cudaStream_t s);
void stream_wait_event(cudaStream_t s, cudaEvent_t e);

// Device memory held by alloc() (in_use, and its high-water mark since reset_peak) and kept cached
// for reuse after free().
struct MemoryStats {
  std::size_t in_use = 0, peak = 0, cached = 0;
};
MemoryStats memory_stats();
void reset_peak();
void release_cached();  // returns cached blocks to the driver

void* alloc(std::size_t bytes);  // throws std::runtime_error when out of memory
void free(void* p);              // null is fine
void memset_zero(void* p, std::size_t bytes, cudaStream_t s);
void copy_to_device(void* dst, const void* host_src, std::size_t bytes, cudaStream_t s);
void copy_to_host(void* host_dst, const void* src, std::size_t bytes, cudaStream_t s);
void copy_device(void* dst, const void* src, std::size_t bytes, cudaStream_t s);
// Host floats to device values of type t (rounded to nearest even for bf16), and back.
void upload(void* dst, DType t, const float* host_src, std::int64_t n, cudaStream_t s);
void download(float* host_dst, const void* src, DType t, std::int64_t n, cudaStream_t s);

// Row-major C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C, op(X) = X^T when trans. A is
// stored [M, K] (lda) or, transposed, [K, M]; B [K, N] (ldb) or [N, K]; C [M, N] (ldc). Products are
// accumulated in fp32 whatever the storage types; beta = 0 ignores C's contents.
void gemm(bool transA, bool transB, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const void* A,
          DType ta, std::int64_t lda, const void* B, DType tb, std::int64_t ldb, float beta, void* C, DType tc,
          std::int64_t ldc, cudaStream_t s);
// `batch` independent products of the same shape: product i reads A + i * strideA, B + i * strideB
// and writes C + i * strideC (strides in elements). gemm() is gemm_batched() with batch 1.
void gemm_batched(bool transA, bool transB, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const void* A,
                  DType ta, std::int64_t lda, std::int64_t strideA, const void* B, DType tb, std::int64_t ldb,
                  std::int64_t strideB, float beta, void* C, DType tc, std::int64_t ldc, std::int64_t strideC,
                  std::int64_t batch, cudaStream_t s);

}  // namespace device
}  // namespace cuda
}  // namespace gm

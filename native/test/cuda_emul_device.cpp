// The emulated GPU backend (GM_CUDA_EMUL): device.h on the host (memory = host memory, streams =
// null, GEMM = a plain loop accumulating in fp32) and every launcher of kernels.h implemented by
// running the kernel bodies over the launcher's grid (native/test/cuda_emul.h, the driver
// gm_cuda_emul checks the bodies with), in the launch sequence of native/cuda/*.cu. Linked into
// gm_gpu_model_emul with native/cuda/gpu_model.cpp, this runs the GPU model on the CPU.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

#include "../cuda/device.h"
#include "../cuda/kernels.h"
#include "cuda_emul.h"

namespace gm {
namespace cuda {

using emul::block_reduce;
using emul::block_threads;
using emul::run_blocks;
using emul::run_grid;

// ---------------------------------------------------------------- device.h
namespace device {

// Eight "devices" that all are this host, so tests can start one worker per emulated GPU.
constexpr int kEmulatedDevices = 8;
int device_count() { return kEmulatedDevices; }
void set_device(int ordinal) {
  if (ordinal < 0 || ordinal >= kEmulatedDevices) throw std::invalid_argument("emulated device: no such device");
}
DeviceProps device_props(int) {
  DeviceProps p;
  p.name = "emulated (host memory, kernel bodies on the CPU)";
  return p;
}
cudaStream_t stream_create() { return nullptr; }
void stream_destroy(cudaStream_t) {}
void stream_sync(cudaStream_t) {}
// Streams run in call order on the host, so events have nothing to order; a non-null handle keeps
// the model's "created?" checks honest.
cudaEvent_t event_create() { return reinterpret_cast<cudaEvent_t>(new char(0)); }
void event_destroy(cudaEvent_t e) { delete reinterpret_cast<char*>(e); }
void event_record(cudaEvent_t e, cudaStream_t) {
  if (!e) throw std::invalid_argument("emulated device: event_record on a null event");
}
void stream_wait_event(cudaStream_t, cudaEvent_t e) {
  if (!e) throw std::invalid_argument("emulated device: stream_wait_event on a null event");
}

// Exact byte accounting (no rounding, no cache), so tests can compare GpuModel::activation_bytes
// with what the model really allocates.
static std::unordered_map<void*, std::size_t> g_sizes;
static MemoryStats g_stats;
MemoryStats memory_stats() { return g_stats; }
void reset_peak() { g_stats.peak = g_stats.in_use; }
void release_cached() {}
void* alloc(std::size_t bytes) {
  void* p = std::malloc(bytes ? bytes : 1);
  if (!p) throw std::runtime_error("emulated device: out of memory");
  g_sizes[p] = bytes;
  g_stats.in_use += bytes;
  g_stats.peak = std::max(g_stats.peak, g_stats.in_use);
  return p;
}
void free(void* p) {
  if (!p) return;
  auto it = g_sizes.find(p);
  if (it == g_sizes.end()) throw std::logic_error("emulated device: free of a pointer alloc did not return");
  g_stats.in_use -= it->second;
  g_sizes.erase(it);
  std::free(p);
}
void memset_zero(void* p, std::size_t bytes, cudaStream_t) { std::memset(p, 0, bytes); }
void copy_to_device(void* dst, const void* src, std::size_t bytes, cudaStream_t) { std::memcpy(dst, src, bytes); }
void copy_to_host(void* dst, const void* src, std::size_t bytes, cudaStream_t) { std::memcpy(dst, src, bytes); }
void copy_device(void* dst, const void* src, std::size_t bytes, cudaStream_t) { std::memmove(dst, src, bytes); }

static float load(const void* p, DType t, i64 i) {
  return t == DType::F32 ? ((const float*)p)[i] : get((const bf16*)p + i);
}
static void store(void* p, DType t, i64 i, float v) {
  if (t == DType::F32) ((float*)p)[i] = v;
  else put((bf16*)p + i, v);
}
void upload(void* dst, DType t, const float* src, std::int64_t n, cudaStream_t) {
  for (i64 i = 0; i < n; i++) store(dst, t, i, src[i]);
}
void download(float* dst, const void* src, DType t, std::int64_t n, cudaStream_t) {
  for (i64 i = 0; i < n; i++) dst[i] = load(src, t, i);
}
void gemm_batched(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const void* A,
                  DType tA, std::int64_t lda, std::int64_t sA, const void* B, DType tB, std::int64_t ldb, std::int64_t sB,
                  float beta, void* C, DType tC, std::int64_t ldc, std::int64_t sC, std::int64_t batch, cudaStream_t) {
  for (i64 i = 0; i < batch; i++) {
    const i64 a0 = i * sA, b0 = i * sB, c0 = i * sC;
    for (i64 m = 0; m < M; m++)
      for (i64 n = 0; n < N; n++) {
        float acc = 0.f;
        for (i64 k = 0; k < K; k++)
          acc += load(A, tA, a0 + (ta ? k * lda + m : m * lda + k)) * load(B, tB, b0 + (tb ? n * ldb + k : k * ldb + n));
        const float c = beta == 0.f ? 0.f : beta * load(C, tC, c0 + m * ldc + n);
        store(C, tC, c0 + m * ldc + n, alpha * acc + c);
      }
  }
}
void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const void* A, DType tA,
          std::int64_t lda, const void* B, DType tB, std::int64_t ldb, float beta, void* C, DType tC, std::int64_t ldc,
          cudaStream_t s) {
  gemm_batched(ta, tb, M, N, K, alpha, A, tA, lda, 0, B, tB, ldb, 0, beta, C, tC, ldc, 0, 1, s);
}

}  // namespace device

// ---------------------------------------------------------------- kernels.h (launch sequences of the .cu files)
template <typename T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* table, i64 M, i64 C, cudaStream_t) {
  if (M <= 0 || C <= 0) return;
  run_grid(embedding_forward_geometry(M, C), [&](const Thread& th) { embedding_forward_body(th, out, tokens, table, M, C); });
}
template <typename T>
void embedding_backward(float* dtable, const T* dout, const std::int32_t* tokens, const std::int32_t* order,
                        const std::int32_t* seg_start, i64 nseg, i64 M, i64 C, cudaStream_t) {
  if (nseg <= 0 || C <= 0) return;
  run_grid(embedding_backward_geometry(nseg, C),
           [&](const Thread& th) { embedding_backward_body(th, dtable, dout, tokens, order, seg_start, nseg, C); });
}

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, i64 M, i64 C, float eps, cudaStream_t) {
  if (M <= 0) return;
  const Geometry g = geometry_rows(M, C);
  run_blocks(g, [&](int bx, int by) {
    const float ss = block_reduce<float>(g, bx, by, SumOp(), [&](const Thread& th) { return rmsnorm_forward_partial(th, x, C); });
    block_threads(g, bx, by, [&](const Thread& th) { rmsnorm_forward_finish(th, ss, out, rstd, x, w, C, eps); });
  });
}
template <typename T>
void rmsnorm_backward(T* dx, float* dw, const T* dout, const T* x, const T* w, const float* rstd, i64 M, i64 C,
                      float* scratch, cudaStream_t) {
  if (M <= 0) return;
  const Geometry g = geometry_rows(M, C);
  run_blocks(g, [&](int bx, int by) {
    const float dot = block_reduce<float>(g, bx, by, SumOp(), [&](const Thread& th) { return rmsnorm_backward_partial(th, dout, x, w, C); });
    block_threads(g, bx, by, [&](const Thread& th) { rmsnorm_backward_finish(th, dot, dx, dout, x, w, rstd, C); });
  });
  run_grid(colsum_partial_geometry(M, C), [&](const Thread& th) { rmsnorm_dw_partial(th, scratch, dout, x, rstd, M, C); });
  run_grid(colsum_finish_geometry(C), [&](const Thread& th) { colsum_finish_body(th, dw, scratch, colsum_blocks(M), C); });
}
template <typename T>
void gated_rmsnorm_forward(T* out, float* rstd, const T* y, const T* z, i64 ld_z, const T* w, i64 M, i64 C, float eps,
                           cudaStream_t) {
  if (M <= 0) return;
  const Geometry g = geometry_rows(M, C);
  run_blocks(g, [&](int bx, int by) {
    const float ss = block_reduce<float>(g, bx, by, SumOp(), [&](const Thread& th) { return gated_rmsnorm_forward_partial(th, y, z, ld_z, C); });
    block_threads(g, bx, by, [&](const Thread& th) { gated_rmsnorm_forward_finish(th, ss, out, rstd, y, z, ld_z, w, C, eps); });
  });
}
template <typename T>
void gated_rmsnorm_backward(T* dy, T* dz, i64 ld_dz, float* dw, const T* dout, const T* y, const T* z, i64 ld_z,
                            const T* w, const float* rstd, i64 M, i64 C, float* scratch, cudaStream_t) {
  if (M <= 0) return;
  const Geometry g = geometry_rows(M, C);
  run_blocks(g, [&](int bx, int by) {
    const float dot = block_reduce<float>(g, bx, by, SumOp(), [&](const Thread& th) { return gated_rmsnorm_backward_partial(th, dout, y, z, ld_z, w, C); });
    block_threads(g, bx, by, [&](const Thread& th) { gated_rmsnorm_backward_finish(th, dot, dy, dz, ld_dz, dout, y, z, ld_z, w, rstd, C); });
  });
  run_grid(colsum_partial_geometry(M, C), [&](const Thread& th) { gated_rmsnorm_dw_partial(th, scratch, dout, y, z, ld_z, rstd, M, C); });
  run_grid(colsum_finish_geometry(C), [&](const Thread& th) { colsum_finish_body(th, dw, scratch, colsum_blocks(M), C); });
}

template <typename T>
void conv1d_forward(T* out, i64 ld_out, T* act, i64 ld_act, const T* x, i64 ld_x, const T* w, const T* b,
                    const std::int32_t* lengths, i64 rows, i64 Tn, i64 C, i64 K, cudaStream_t) {
  if (K < 1 || K > kConvMaxK) throw std::invalid_argument("gm cuda: conv1d: kernel size must be 1..8");
  if (rows * Tn * C <= 0) return;
  run_grid(conv1d_geometry(rows, Tn, C), [&](const Thread& th) {
    conv1d_forward_body(th, out, ld_out, act, ld_act, x, ld_x, w, b, lengths, rows, Tn, C, K);
  });
}
template <typename T>
void conv1d_backward(T* dx, i64 ld_dx, float* dw, float* db, const T* dout, i64 ld_dout, const T* pre, i64 ld_pre,
                     const T* x, i64 ld_x, const T* w, const std::int32_t* lengths, i64 rows, i64 Tn, i64 C, i64 K,
                     float* scratch, cudaStream_t) {
  if (K < 1 || K > kConvMaxK) throw std::invalid_argument("gm cuda: conv1d: kernel size must be 1..8");
  if (rows * Tn * C <= 0) return;
  run_grid(conv1d_geometry(rows, Tn, C), [&](const Thread& th) {
    conv1d_backward_dx_body(th, dx, ld_dx, dout, ld_dout, pre, ld_pre, w, lengths, rows, Tn, C, K);
  });
  run_grid(conv1d_param_partial_geometry(rows, Tn, C), [&](const Thread& th) {
    conv1d_param_partial_body(th, scratch, dout, ld_dout, pre, ld_pre, x, ld_x, lengths, rows, Tn, C, K);
  });
  run_grid(conv1d_param_finish_geometry(C, K), [&](const Thread& th) {
    conv1d_param_finish_body(th, dw, db, scratch, colsum_blocks(rows * Tn), C, K);
  });
}

template <typename T>
void softplus_forward(T* out, i64 ld_out, const T* x, i64 ld_x, const T* bias, i64 M, i64 C, cudaStream_t) {
  if (M * C <= 0) return;
  run_grid(elementwise_geometry(M, C), [&](const Thread& th) { softplus_forward_body(th, out, ld_out, x, ld_x, bias, M, C); });
}
template <typename T>
void softplus_backward(T* dx, i64 ld_dx, float* dbias, const T* dout, i64 ld_dout, const T* x, i64 ld_x, const T* bias,
                       i64 M, i64 C, float* scratch, cudaStream_t) {
  if (M * C <= 0) return;
  run_grid(elementwise_geometry(M, C), [&](const Thread& th) { softplus_backward_dx_body(th, dx, ld_dx, dout, ld_dout, x, ld_x, bias, M, C); });
  run_grid(colsum_partial_geometry(M, C), [&](const Thread& th) { softplus_dbias_partial(th, scratch, dout, ld_dout, x, ld_x, bias, M, C); });
  run_grid(colsum_finish_geometry(C), [&](const Thread& th) { colsum_finish_body(th, dbias, scratch, colsum_blocks(M), C); });
}
template <typename T>
void gate_forward(T* out, T* pre_to_s, const T* fb, i64 M, i64 C, cudaStream_t) {
  if (M * C <= 0) return;
  run_grid(elementwise_geometry(M, C), [&](const Thread& th) { gate_forward_body(th, out, pre_to_s, fb, M, C); });
}
template <typename T>
void gate_backward(T* dfb, T* dpre, const T* dout, const T* fb, const T* s, i64 M, i64 C, cudaStream_t) {
  if (M * C <= 0) return;
  run_grid(elementwise_geometry(M, C), [&](const Thread& th) { gate_backward_body(th, dfb, dpre, dout, fb, s, M, C); });
}
template <typename T>
void blend_forward(T* out, const T* fb, float wf, float wb, i64 M, i64 C, cudaStream_t) {
  if (M * C <= 0) return;
  run_grid(elementwise_geometry(M, C), [&](const Thread& th) { blend_forward_body(th, out, fb, wf, wb, M, C); });
}
template <typename T>
void blend_backward(T* dfb, const T* dout, float wf, float wb, i64 M, i64 C, cudaStream_t) {
  if (M * C <= 0) return;
  run_grid(elementwise_geometry(M, C), [&](const Thread& th) { blend_backward_body(th, dfb, dout, wf, wb, M, C); });
}
template <typename T>
void reverse_forward(T* out, i64 ld_out, const T* in, i64 ld_in, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                     cudaStream_t) {
  if (B * L * C <= 0) return;
  run_grid(reverse_geometry(B, L, C), [&](const Thread& th) { reverse_forward_body(th, out, ld_out, in, ld_in, lengths, B, L, C); });
}
template <typename T>
void reverse_backward(T* din, i64 ld_din, const T* dout, i64 ld_dout, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                      cudaStream_t) {
  if (B * L * C <= 0) return;
  run_grid(reverse_geometry(B, L, C), [&](const Thread& th) { reverse_backward_body(th, din, ld_din, dout, ld_dout, lengths, B, L, C); });
}
template <typename T>
void bidir_merge_forward(T* fb, const T* mix, const T* x, const std::int32_t* lengths, i64 B, i64 L, i64 C, cudaStream_t) {
  if (B * L * C <= 0) return;
  run_grid(reverse_geometry(B, L, C), [&](const Thread& th) { bidir_merge_forward_body(th, fb, mix, x, lengths, B, L, C); });
}
template <typename T>
void bidir_merge_backward(T* dx, T* dmix, const T* dfb, const std::int32_t* lengths, i64 B, i64 L, i64 C, cudaStream_t) {
  if (B * L * C <= 0) return;
  run_grid(reverse_geometry(B, L, C), [&](const Thread& th) { bidir_merge_backward_body(th, dx, dmix, dfb, lengths, B, L, C); });
}
template <typename T>
void silu_gate_forward(T* out, const T* y, const T* z, i64 ld_z, i64 M, i64 C, cudaStream_t) {
  if (M * C <= 0) return;
  run_grid(elementwise_geometry(M, C), [&](const Thread& th) { silu_gate_forward_body(th, out, y, z, ld_z, M, C); });
}
template <typename T>
void silu_gate_backward(T* dy, T* dz, i64 ld_dz, const T* dout, const T* y, const T* z, i64 ld_z, i64 M, i64 C,
                        cudaStream_t) {
  if (M * C <= 0) return;
  run_grid(elementwise_geometry(M, C), [&](const Thread& th) { silu_gate_backward_body(th, dy, dz, ld_dz, dout, y, z, ld_z, M, C); });
}
template <typename T>
void argmax_rows(std::int32_t* out, const T* x, i64 M, i64 V, cudaStream_t) {
  if (M <= 0 || V <= 0) return;
  const Geometry g = argmax_geometry(M, V);
  run_blocks(g, [&](int bx, int by) {
    const unsigned long long key = block_reduce<unsigned long long>(g, bx, by, ArgMaxOp(), [&](const Thread& th) { return argmax_partial(th, x, V); });
    block_threads(g, bx, by, [&](const Thread& th) { argmax_finish(th, key, out); });
  });
}
void neg_exp_forward(float* A, const float* A_log, i64 n, cudaStream_t) {
  if (n <= 0) return;
  run_grid(neg_exp_geometry(n), [&](const Thread& th) { neg_exp_forward_body(th, A, A_log, n); });
}
void neg_exp_backward(float* dA_log, const float* dA, const float* A, i64 n, cudaStream_t) {
  if (n <= 0) return;
  run_grid(neg_exp_geometry(n), [&](const Thread& th) { neg_exp_backward_body(th, dA_log, dA, A, n); });
}

static void check_dims(const ScanDims& s) {
  if (s.rows < 1 || s.T < 1 || s.H < 1 || s.P < 1 || s.chunk < 1)
    throw std::invalid_argument("gm cuda: scan: rows, T, H, P and chunk must be positive");
  if (s.N < 1 || s.N > kScanMaxN) throw std::invalid_argument("gm cuda: scan: d_state must be 1..64");
  if (s.rows > 65535) throw std::invalid_argument("gm cuda: scan: at most 65535 rows per launch");
}
template <typename T>
void scan_forward(T* y, float* states, const T* x, const T* dt, const float* A, const T* B, const T* C, const float* D,
                  const ScanDims& s, cudaStream_t) {
  check_dims(s);
  emul::scan_forward(y, states, x, dt, A, B, C, D, s);
}
template <typename T>
void scan_backward(T* dx, T* ddt, float* dA, T* dB, T* dC, float* dD, const T* dy, const float* states, const T* x,
                   const T* dt, const float* A, const T* B, const T* C, const float* D, const ScanDims& s,
                   float* scratch, cudaStream_t) {
  check_dims(s);
  emul::scan_backward(dx, ddt, dA, dB, dC, dD, dy, states, x, dt, A, B, C, D, s, scratch);
}

template <typename T>
void cross_entropy_forward_backward(T* logits, const std::int32_t* targets, float* row_loss, i64 M, i64 V, float scale,
                                    cudaStream_t) {
  if (M <= 0) return;
  const Geometry g = cross_entropy_geometry(M, V);
  run_blocks(g, [&](int bx, int by) {
    const float mx = block_reduce<float>(g, bx, by, MaxOp(), [&](const Thread& th) { return cross_entropy_max_partial(th, logits, targets, V); });
    const float sum = block_reduce<float>(g, bx, by, SumOp(), [&](const Thread& th) { return cross_entropy_sum_partial(th, mx, logits, targets, V); });
    block_threads(g, bx, by, [&](const Thread& th) { cross_entropy_finish(th, mx, sum, logits, targets, row_loss, V, scale); });
  });
}

template <typename TP>
void adamw_update(float* master, TP* params, const float* grads, float* m, float* v, i64 n, const AdamWHyper& o,
                  const float* scale_dev, cudaStream_t) {
  if (n <= 0) return;
  const AdamWScalars k = adamw_scalars(o);
  run_grid(adamw_geometry(n), [&](const Thread& th) { adamw_body(th, master, params, grads, m, v, n, k, scale_dev); });
}
template <typename T>
static void sum_impl(double* out, const T* g, i64 n, bool square, double* scratch) {
  const Geometry gp = sum_partial_geometry(n), gf = sum_final_geometry();
  run_blocks(gp, [&](int bx, int by) {
    scratch[bx] = block_reduce<double>(gp, bx, by, SumOp(), [&](const Thread& th) { return sum_partial(th, g, n, square); });
  });
  const i64 np = sum_scratch_doubles(n);
  out[0] = block_reduce<double>(gf, 0, 0, SumOp(), [&](const Thread& th) { return sum_final_partial(th, scratch, np); });
}
template <typename T>
void sum_squares(double* out, const T* g, i64 n, double* scratch, cudaStream_t) {
  sum_impl(out, g, n, true, scratch);
}
void sum_values(double* out, const float* v, i64 n, double* scratch, cudaStream_t) { sum_impl(out, v, n, false, scratch); }
void clip_scale(float* scale, const double* sumsq, double max_norm, cudaStream_t) {
  clip_scale_body(Thread{{0, 0, 0}, {0, 0, 0}, {32, 1, 1}, {1, 1, 1}}, scale, sumsq, max_norm);
}

#define GM_INST(T)                                                                                                  \
  template void embedding_forward<T>(T*, const std::int32_t*, const T*, i64, i64, cudaStream_t);                    \
  template void embedding_backward<T>(float*, const T*, const std::int32_t*, const std::int32_t*,                  \
                                      const std::int32_t*, i64, i64, i64, cudaStream_t);                            \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, i64, i64, float, cudaStream_t);                  \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, i64, i64, float*,       \
                                    cudaStream_t);                                                                  \
  template void gated_rmsnorm_forward<T>(T*, float*, const T*, const T*, i64, const T*, i64, i64, float,            \
                                         cudaStream_t);                                                             \
  template void gated_rmsnorm_backward<T>(T*, T*, i64, float*, const T*, const T*, const T*, i64, const T*,         \
                                          const float*, i64, i64, float*, cudaStream_t);                            \
  template void conv1d_forward<T>(T*, i64, T*, i64, const T*, i64, const T*, const T*, const std::int32_t*, i64,    \
                                  i64, i64, i64, cudaStream_t);                                                     \
  template void conv1d_backward<T>(T*, i64, float*, float*, const T*, i64, const T*, i64, const T*, i64, const T*, \
                                   const std::int32_t*, i64, i64, i64, i64, float*, cudaStream_t);                  \
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
  template void bidir_merge_backward<T>(T*, T*, const T*, const std::int32_t*, i64, i64, i64, cudaStream_t);        \
  template void silu_gate_forward<T>(T*, const T*, const T*, i64, i64, i64, cudaStream_t);                          \
  template void silu_gate_backward<T>(T*, T*, i64, const T*, const T*, const T*, i64, i64, i64, cudaStream_t);      \
  template void argmax_rows<T>(std::int32_t*, const T*, i64, i64, cudaStream_t);                                    \
  template void scan_forward<T>(T*, float*, const T*, const T*, const float*, const T*, const T*, const float*,    \
                                const ScanDims&, cudaStream_t);                                                     \
  template void scan_backward<T>(T*, T*, float*, T*, T*, float*, const T*, const float*, const T*, const T*,       \
                                 const float*, const T*, const T*, const float*, const ScanDims&, float*,           \
                                 cudaStream_t);                                                                     \
  template void cross_entropy_forward_backward<T>(T*, const std::int32_t*, float*, i64, i64, float, cudaStream_t);  \
  template void adamw_update<T>(float*, T*, const float*, float*, float*, i64, const AdamWHyper&, const float*,     \
                                cudaStream_t);                                                                      \
  template void sum_squares<T>(double*, const T*, i64, double*, cudaStream_t);
GM_INST(float)
GM_INST(bf16)

}  // namespace cuda
}  // namespace gm

// The SSD scan's launch sequence (native/cuda/ssd.cu) compiled for the host: its kernel bodies run
// over every item in index order and its GEMMs are device::gemm_batched above.
#include "../cuda/ssd.cu"

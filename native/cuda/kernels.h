// Host launchers of the CUDA kernels (native/cuda/*.cu). Plain C++: include it from host code built
// against the CUDA toolkit's headers. Every pointer is device memory; every launcher enqueues on the
// given stream and returns without synchronising; a launch error throws std::runtime_error (a bad
// shape std::invalid_argument).
//
// Semantics are those of the CPU ops in native/src/ops/*.h (same layouts, leading dimensions and
// accumulate-into-gradient convention: backward passes add into their gradient buffers, except where
// a comment says "writes"). T, the storage type of activations and of the parameter copies the
// forward pass reads, is float or __nv_bfloat16; arithmetic is fp32 (fp64 for the global norm).
// Parameter gradients, AdamW's master weights and moments, the scan's A, D and chunk-start states are
// fp32. Backward launchers that reduce over rows take caller-allocated scratch, sized by the
// *_scratch functions of shapes.h. Reductions are deterministic (fixed order, no atomics).
//
// GM_CUDA_EMUL (defined by the CPU emulation build, native/test/cuda_emul_device.cpp and
// gm_gpu_model_emul): no CUDA headers; bf16 is common.cuh's bit-exact host type, cudaStream_t an
// opaque pointer, and the launchers are implemented on the host by driving the kernel bodies.
#pragma once
#if defined(GM_CUDA_EMUL)
#include "common.cuh"
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
struct CUevent_st;
typedef struct CUevent_st* cudaEvent_t;
#else
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#endif

#include <cstdint>

#include "shapes.h"

namespace gm {
namespace cuda {

#if !defined(GM_CUDA_EMUL)
using bf16 = __nv_bfloat16;
#endif

// ---- embedding (embedding.cu)
template <typename T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* table, i64 M, i64 C, cudaStream_t stream);
// order, seg_start: an EmbeddingPlan (shapes.h) of the same tokens, uploaded.
template <typename T>
void embedding_backward(float* dtable, const T* dout, const std::int32_t* tokens, const std::int32_t* order,
                        const std::int32_t* seg_start, i64 nseg, i64 M, i64 C, cudaStream_t stream);

// ---- RMSNorm and gated RMSNorm (norms.cu). rstd may be null in gated_rmsnorm_forward (recompute).
template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, i64 M, i64 C, float eps, cudaStream_t stream);
template <typename T>
void rmsnorm_backward(T* dx, float* dw, const T* dout, const T* x, const T* w, const float* rstd, i64 M, i64 C,
                      float* scratch, cudaStream_t stream);
template <typename T>
void gated_rmsnorm_forward(T* out, float* rstd, const T* y, const T* z, i64 ld_z, const T* w, i64 M, i64 C, float eps,
                           cudaStream_t stream);
template <typename T>
void gated_rmsnorm_backward(T* dy, T* dz, i64 ld_dz, float* dw, const T* dout, const T* y, const T* z, i64 ld_z,
                            const T* w, const float* rstd, i64 M, i64 C, float* scratch, cudaStream_t stream);

// ---- causal depthwise conv1d (+ SiLU and the padding mask; see conv1d.cuh) (conv1d.cu). b, act,
// lengths and pre may be null; db may be null.
template <typename T>
void conv1d_forward(T* out, i64 ld_out, T* act, i64 ld_act, const T* x, i64 ld_x, const T* w, const T* b,
                    const std::int32_t* lengths, i64 rows, i64 Tn, i64 C, i64 K, cudaStream_t stream);
template <typename T>
void conv1d_backward(T* dx, i64 ld_dx, float* dw, float* db, const T* dout, i64 ld_dout, const T* pre, i64 ld_pre,
                     const T* x, i64 ld_x, const T* w, const std::int32_t* lengths, i64 rows, i64 Tn, i64 C, i64 K,
                     float* scratch, cudaStream_t stream);

// ---- softplus step sizes, combine, direction reversal (pointwise.cu)
template <typename T>
void softplus_forward(T* out, i64 ld_out, const T* x, i64 ld_x, const T* bias, i64 M, i64 C, cudaStream_t stream);
template <typename T>
void softplus_backward(T* dx, i64 ld_dx, float* dbias, const T* dout, i64 ld_dout, const T* x, i64 ld_x, const T* bias,
                       i64 M, i64 C, float* scratch, cudaStream_t stream);
template <typename T>
void gate_forward(T* out, T* pre_to_s, const T* fb, i64 M, i64 C, cudaStream_t stream);
template <typename T>  // writes dpre, accumulates dfb
void gate_backward(T* dfb, T* dpre, const T* dout, const T* fb, const T* s, i64 M, i64 C, cudaStream_t stream);
template <typename T>
void blend_forward(T* out, const T* fb, float wf, float wb, i64 M, i64 C, cudaStream_t stream);
template <typename T>
void blend_backward(T* dfb, const T* dout, float wf, float wb, i64 M, i64 C, cudaStream_t stream);
// out[b, t] = in[b, src(t)], src(t) = len_b - 1 - t for t < len_b, else t (pads stay in place).
template <typename T>
void reverse_forward(T* out, i64 ld_out, const T* in, i64 ld_in, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                     cudaStream_t stream);
template <typename T>  // din[b, t] += dout[b, src(t)]
void reverse_backward(T* din, i64 ld_din, const T* dout, i64 ld_dout, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                      cudaStream_t stream);
// Mamba-2's A = -exp(A_log) per head, and dA_log += dA * A (fp32).
void neg_exp_forward(float* A, const float* A_log, i64 n, cudaStream_t stream);
void neg_exp_backward(float* dA_log, const float* dA, const float* A, i64 n, cudaStream_t stream);
// [f | b] rows of a BiMamba layer from the mixer output over 2B rows and the layer input (as model.cpp).
template <typename T>
void bidir_merge_forward(T* fb, const T* mix, const T* x, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                         cudaStream_t stream);
template <typename T>  // writes dx = df + db and dmix (forward rows df, reversed rows rev(db))
void bidir_merge_backward(T* dx, T* dmix, const T* dfb, const std::int32_t* lengths, i64 B, i64 L, i64 C,
                          cudaStream_t stream);

// Mamba-1's gate: out [M, C] = y [M, C] * SiLU(z) (z with leading dimension ld_z); backward
// accumulates dy += g SiLU(z), dz += g y SiLU'(z).
template <typename T>
void silu_gate_forward(T* out, const T* y, const T* z, i64 ld_z, i64 M, i64 C, cudaStream_t stream);
template <typename T>
void silu_gate_backward(T* dy, T* dz, i64 ld_dz, const T* dout, const T* y, const T* z, i64 ld_z, i64 M, i64 C,
                        cudaStream_t stream);
// out[m] = argmax over v of x[m, v] (x [M, V], e.g. logits; ties: the smallest index). Writes.
template <typename T>
void argmax_rows(std::int32_t* out, const T* x, i64 M, i64 V, cudaStream_t stream);

// ---- selective scan (scan.cu); both shapes, N <= kScanMaxN, rows <= 65535.
template <typename T>
void scan_forward(T* y, float* states, const T* x, const T* dt, const float* A, const T* B, const T* C, const float* D,
                  const ScanDims& s, cudaStream_t stream);
template <typename T>
void scan_backward(T* dx, T* ddt, float* dA, T* dB, T* dC, float* dD, const T* dy, const float* states, const T* x,
                   const T* dt, const float* A, const T* B, const T* C, const float* D, const ScanDims& s,
                   float* scratch, cudaStream_t stream);

// ---- Mamba-2's scan in the chunked SSD form (ssd.cu): the same results and chunk-start states as
// scan_forward / scan_backward for a Mamba-2 shape (P > 1), with the per-chunk products as
// strided-batched GEMMs (tensor cores in bf16). scratch: ssd_scratch_floats(s, sizeof(T)) floats.
i64 ssd_scratch_floats(const ScanDims& s, i64 storage_bytes);
template <typename T>
void ssd_scan_forward(T* y, float* states, const T* x, const T* dt, const float* A, const T* B, const T* C,
                      const float* D, const ScanDims& s, float* scratch, cudaStream_t stream);
template <typename T>
void ssd_scan_backward(T* dx, T* ddt, float* dA, T* dB, T* dC, float* dD, const T* dy, const float* states, const T* x,
                       const T* dt, const float* A, const T* B, const T* C, const float* D, const ScanDims& s,
                       float* scratch, cudaStream_t stream);

// The scan by implementation, for the callers that choose (ssd: ssd_scan_*, else scan_*): the
// scratch both passes take, in floats, and the two passes over it.
inline i64 scan_scratch_floats(const ScanDims& s, bool ssd, i64 storage_bytes) {
  return ssd ? ssd_scratch_floats(s, storage_bytes) : scan_backward_scratch(s).total();
}
template <typename T>
void scan_forward_with(bool ssd, T* y, float* states, const T* x, const T* dt, const float* A, const T* B, const T* C,
                       const float* D, const ScanDims& s, float* scratch, cudaStream_t stream) {
  if (ssd) ssd_scan_forward(y, states, x, dt, A, B, C, D, s, scratch, stream);
  else scan_forward(y, states, x, dt, A, B, C, D, s, stream);
}
template <typename T>
void scan_backward_with(bool ssd, T* dx, T* ddt, float* dA, T* dB, T* dC, float* dD, const T* dy, const float* states,
                        const T* x, const T* dt, const float* A, const T* B, const T* C, const float* D,
                        const ScanDims& s, float* scratch, cudaStream_t stream) {
  if (ssd) ssd_scan_backward(dx, ddt, dA, dB, dC, dD, dy, states, x, dt, A, B, C, D, s, scratch, stream);
  else scan_backward(dx, ddt, dA, dB, dC, dD, dy, states, x, dt, A, B, C, D, s, scratch, stream);
}

// ---- fused softmax cross-entropy (cross_entropy.cu): logits [M, V] overwritten with
// scale * (softmax - onehot); row_loss[m] = -log softmax[target] (0 where the target is -100).
template <typename T>
void cross_entropy_forward_backward(T* logits, const std::int32_t* targets, float* row_loss, i64 M, i64 V, float scale,
                                    cudaStream_t stream);

// ---- AdamW and the global norm (optim.cu). params (nullable) is the copy the forward reads,
// rewritten from the fp32 master; scale_dev (nullable) multiplies the gradients (clip_scale's output).
template <typename TP>
void adamw_update(float* master, TP* params, const float* grads, float* m, float* v, i64 n, const AdamWHyper& o,
                  const float* scale_dev, cudaStream_t stream);
// out[0] = sum of g^2 in float64 (deterministic; scratch: sum_scratch_doubles(n) doubles).
template <typename T>
void sum_squares(double* out, const T* g, i64 n, double* scratch, cudaStream_t stream);
// out[0] = sum of v (e.g. the per-row losses), same reduction.
void sum_values(double* out, const float* v, i64 n, double* scratch, cudaStream_t stream);
// scale[0] = clip_grad_norm_'s factor for the sum of squares at sumsq[0].
void clip_scale(float* scale, const double* sumsq, double max_norm, cudaStream_t stream);

}  // namespace cuda
}  // namespace gm

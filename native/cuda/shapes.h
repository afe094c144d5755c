// Plain C++ (no CUDA headers): shapes, hyperparameters and scratch sizes shared by the CUDA
// launchers (kernels.h), the kernel bodies (*.cuh) and the CPU emulation (native/test/cuda_emul.cpp).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

// GM_HD marks what runs on both sides: __host__ __device__ under nvcc, nothing under a plain C++
// compiler (g++ builds the CPU emulation of the kernel bodies and the host code that calls them).
#ifndef GM_HD
#if defined(__CUDACC__)
#define GM_HD __host__ __device__
#else
#define GM_HD
#endif
#endif

namespace gm {
namespace cuda {

using i64 = std::int64_t;

// Threads per block of the kernels (all multiples of 32).
constexpr int kThreads = 256;      // elementwise kernels
constexpr int kRowThreads = 256;   // most threads of a one-block-per-row kernel (norms, cross-entropy)
constexpr int kScanThreads = 128;  // scan: one thread per (row, channel), a block holds 128 channels of a row
constexpr int kColRows = 32;       // column reductions: rows summed per partial (first of the two passes)
constexpr i64 kNormBlock = 1 << 16;  // global norm: elements per partial sum (as native/src/ops/global_norm.h)

// The selective scan's shape, the same fields and meaning as gm::ScanShape (native/src/ops/scan.h),
// so the chunk-start states have the CPU layout [rows, blocks, nchunks, N, lanes] and either side's
// backward can follow the other side's forward.
struct ScanDims {
  i64 rows, T, H, P, N;
  i64 chunk;                     // Q: steps between saved states
  i64 ld_x, ld_dt, ld_bc, ld_y;  // leading dimensions (elements between time steps)
  GM_HD i64 nchunks() const { return (T + chunk - 1) / chunk; }
  GM_HD bool per_lane() const { return P == 1; }
  GM_HD i64 channels() const { return H * P; }
  GM_HD i64 lanes() const { return per_lane() ? (H < 16 ? H : 16) : P; }
  GM_HD i64 blocks() const { return (channels() + lanes() - 1) / lanes(); }
  GM_HD i64 states_size() const { return rows * blocks() * nchunks() * N * lanes(); }
  GM_HD i64 a_size() const { return per_lane() ? H * N : H; }
  GM_HD i64 groups() const { return (channels() + kScanThreads - 1) / kScanThreads; }  // thread blocks per row
};

// The most states per channel the scan kernels hold in registers (Mamba-2 uses 64, Mamba-1 16).
constexpr i64 kScanMaxN = 64;

// Scratch (in floats) the backward launchers need; the caller allocates it (device memory).
GM_HD inline i64 colsum_blocks(i64 M) { return (M + kColRows - 1) / kColRows; }
inline i64 rmsnorm_backward_scratch(i64 M, i64 C) { return colsum_blocks(M) * C; }
inline i64 softplus_backward_scratch(i64 M, i64 C) { return colsum_blocks(M) * C; }
inline i64 conv1d_backward_scratch(i64 rows, i64 T, i64 C, i64 K) { return colsum_blocks(rows * T) * C * (K + 1); }
// Scan backward: the states of one chunk per (row, channel) (recomputed from the saved chunk start),
// the per-block partial sums of dB/dC, Mamba-2's per-channel d(dt) terms, and per-row dA/dD terms.
struct ScanScratch {
  i64 hist, part_bc, part_dt, part_a, part_d;
  i64 total() const { return hist + part_bc + part_dt + part_a + part_d; }
};
inline ScanScratch scan_backward_scratch(const ScanDims& s) {
  const i64 ch = s.channels(), RT = s.rows * s.T;
  ScanScratch k;
  k.hist = std::min(s.chunk, s.T) * s.N * s.rows * ch;
  k.part_bc = RT * s.groups() * 2 * s.N;
  k.part_dt = s.per_lane() ? 0 : RT * ch;
  k.part_a = s.rows * ch * (s.per_lane() ? s.N : 1);
  k.part_d = s.rows * ch;
  return k;
}
// Global norm / sums: one double per block of kNormBlock elements.
inline i64 sum_scratch_doubles(i64 n) { return n > kNormBlock ? (n + kNormBlock - 1) / kNormBlock : 1; }

// torch.optim.AdamW's hyperparameters, as gm::AdamWParams (native/src/ops/adamw.h).
struct AdamWHyper {
  double lr, beta1, beta2, eps, weight_decay;
  long step;  // 1-based
  double grad_scale;
};

// Deterministic embedding backward: token positions grouped by token id (stable, so each group keeps
// position order). One thread per (group, column) sums its group's rows in that order, the order in
// which the CPU op adds them. Built on the host from the host copy of the tokens; the caller uploads
// order (M entries) and seg_start (nseg + 1 entries).
struct EmbeddingPlan {
  std::vector<std::int32_t> order, seg_start;
  i64 nseg() const { return (i64)seg_start.size() - 1; }
};
inline EmbeddingPlan embedding_plan(const std::int32_t* tokens, i64 M) {
  EmbeddingPlan p;
  p.order.resize((size_t)M);
  for (i64 i = 0; i < M; i++) p.order[(size_t)i] = (std::int32_t)i;
  std::stable_sort(p.order.begin(), p.order.end(), [&](std::int32_t a, std::int32_t b) { return tokens[a] < tokens[b]; });
  for (i64 i = 0; i < M; i++)
    if (i == 0 || tokens[p.order[(size_t)i]] != tokens[p.order[(size_t)i - 1]]) p.seg_start.push_back((std::int32_t)i);
  p.seg_start.push_back((std::int32_t)M);
  return p;
}

}  // namespace cuda
}  // namespace gm

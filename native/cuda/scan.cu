// Selective-scan kernels, both shapes (bodies and the algorithm: scan.cuh).
#include "kernels.h"
#include "scan.cuh"

namespace gm {
namespace cuda {

// Receives a thread's dB[t, n] / dC[t, n] terms: a warp sum, written by lane 0 to shared [warp][2N].
struct ScanSinkDevice {
  float* shared;
  int lane, warp;
  i64 N;
  GM_HD void operator()(i64 n, float db, float dc) {
#if defined(__CUDA_ARCH__)
    db = warp_reduce(db, SumOp());
    dc = warp_reduce(dc, SumOp());
    if (lane == 0) {
      shared[warp * 2 * N + n] = db;
      shared[warp * 2 * N + N + n] = dc;
    }
#endif
  }
};

template <int NM, typename T>
__global__ void __launch_bounds__(kScanThreads)
    scan_forward_kernel(T* y, float* states, const T* x, const T* dt, const float* A, const T* Bm, const T* Cm,
                        const float* D, ScanDims s) {
  scan_forward_body<NM>(this_thread(), y, states, x, dt, A, Bm, Cm, D, s);
}

template <int NM, typename T>
__global__ void __launch_bounds__(kScanThreads)
    scan_backward_kernel(T* dx, T* ddt, const T* dy, const float* states, const T* x, const T* dt, const float* A,
                         const T* Bm, const T* Cm, const float* D, ScanDims s, ScanBwdScratch w) {
  __shared__ float sh[(kScanThreads / 32) * 2 * kScanMaxN];
  const Thread th = this_thread();
  ScanBwdState<NM> st;
  scan_backward_init(st);
  ScanSinkDevice sink{sh, (int)(threadIdx.x & 31), (int)(threadIdx.x >> 5), s.N};
  for (i64 cc = s.nchunks() - 1; cc >= 0; cc--) {
    const i64 t0 = cc * s.chunk, t1 = imin(s.T, t0 + s.chunk);
    scan_backward_recompute<NM>(th, cc, w.hist, states, x, dt, A, Bm, s);
    for (i64 t = t1 - 1; t >= t0; t--) {
      scan_backward_step<NM>(th, st, t0, t, sink, dx, ddt, w.part_dt, dy, states, w.hist, x, dt, A, Bm, Cm, D, s);
      __syncthreads();
      scan_backward_bc_store(th, sh, w.part_bc, t, s);
      __syncthreads();
    }
  }
  scan_backward_store<NM>(th, st, w.part_a, w.part_d, s);
}

template <typename T>
__global__ void scan_bc_finish_kernel(T* dB, T* dC, const float* part_bc, ScanDims s) {
  scan_bc_finish_body(this_thread(), dB, dC, part_bc, s);
}
template <typename T>
__global__ void scan_dt_finish_kernel(T* ddt, const float* part_dt, ScanDims s) {
  scan_dt_finish_body(this_thread(), ddt, part_dt, s);
}
__global__ void scan_param_finish_kernel(float* dA, float* dD, const float* part_a, const float* part_d, ScanDims s) {
  scan_param_finish_body(this_thread(), dA, dD, part_a, part_d, s);
}

static void check_dims(const ScanDims& s) {
  if (s.rows < 1 || s.T < 1 || s.H < 1 || s.P < 1 || s.chunk < 1)
    throw std::invalid_argument("gm cuda: scan: rows, T, H, P and chunk must be positive");
  if (s.N < 1 || s.N > kScanMaxN) throw std::invalid_argument("gm cuda: scan: d_state must be 1..64");
  if (s.rows > 65535) throw std::invalid_argument("gm cuda: scan: at most 65535 rows per launch");
}

template <typename T>
void scan_forward(T* y, float* states, const T* x, const T* dt, const float* A, const T* B, const T* C, const float* D,
                  const ScanDims& s, cudaStream_t stream) {
  check_dims(s);
  const Geometry g = scan_geometry(s);
  if (s.N <= 16) GM_LAUNCH((scan_forward_kernel<16, T>), g, stream)(y, states, x, dt, A, B, C, D, s);
  else GM_LAUNCH((scan_forward_kernel<64, T>), g, stream)(y, states, x, dt, A, B, C, D, s);
  check_launch("scan_forward");
}

template <typename T>
void scan_backward(T* dx, T* ddt, float* dA, T* dB, T* dC, float* dD, const T* dy, const float* states, const T* x,
                   const T* dt, const float* A, const T* B, const T* C, const float* D, const ScanDims& s,
                   float* scratch, cudaStream_t stream) {
  check_dims(s);
  const ScanBwdScratch w = scan_backward_views(scratch, s);
  const Geometry g = scan_geometry(s);
  GM_LAUNCH((scan_backward_kernel<kScanMaxN, T>), g, stream)(dx, ddt, dy, states, x, dt, A, B, C, D, s, w);
  GM_LAUNCH(scan_bc_finish_kernel<T>, scan_bc_finish_geometry(s), stream)(dB, dC, w.part_bc, s);
  if (!s.per_lane()) GM_LAUNCH(scan_dt_finish_kernel<T>, scan_dt_finish_geometry(s), stream)(ddt, w.part_dt, s);
  GM_LAUNCH(scan_param_finish_kernel, scan_param_finish_geometry(s), stream)(dA, dD, w.part_a, w.part_d, s);
  check_launch("scan_backward");
}

#define GM_INST(T)                                                                                                  \
  template void scan_forward<T>(T*, float*, const T*, const T*, const float*, const T*, const T*, const float*,    \
                                const ScanDims&, cudaStream_t);                                                     \
  template void scan_backward<T>(T*, T*, float*, T*, T*, float*, const T*, const float*, const T*, const T*,       \
                                 const float*, const T*, const T*, const float*, const ScanDims&, float*,           \
                                 cudaStream_t);
GM_INST(float)
GM_INST(bf16)

}  // namespace cuda
}  // namespace gm

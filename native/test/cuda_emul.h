// The CPU emulation of CUDA launches, shared by gm_cuda_emul (native/test/cuda_emul.cpp, the kernel
// bodies against the CPU ops) and gm_gpu_model_emul (native/test/cuda_emul_device.cpp, every launcher
// of kernels.h on the host): the kernel bodies of native/cuda/*.cuh, compiled by g++, run over every
// (block, thread) index of the grid their launchers use, in grid order (blocks x, then threads x),
// with the block reductions replaced by the same butterfly tree on the host.
#pragma once
#include <algorithm>
#include <vector>

#include "../cuda/conv1d.cuh"
#include "../cuda/cross_entropy.cuh"
#include "../cuda/embedding.cuh"
#include "../cuda/norms.cuh"
#include "../cuda/optim.cuh"
#include "../cuda/pointwise.cuh"
#include "../cuda/scan.cuh"

namespace gm {
namespace cuda {
namespace emul {

inline Thread thread_at(const Geometry& g, int bx, int by, int bz, int tx, int ty, int tz) {
  return Thread{{bx, by, bz}, {tx, ty, tz}, g.block, g.grid};
}
// Every thread of the grid, in grid order.
template <typename F>
inline void run_grid(const Geometry& g, F&& f) {
  for (int bz = 0; bz < g.grid.z; bz++)
    for (int by = 0; by < g.grid.y; by++)
      for (int bx = 0; bx < g.grid.x; bx++)
        for (int tz = 0; tz < g.block.z; tz++)
          for (int ty = 0; ty < g.block.y; ty++)
            for (int tx = 0; tx < g.block.x; tx++) f(thread_at(g, bx, by, bz, tx, ty, tz));
}
// Every block in grid order; f(bx, by) runs the block's phases itself (1-D blocks).
template <typename F>
inline void run_blocks(const Geometry& g, F&& f) {
  for (int by = 0; by < g.grid.y; by++)
    for (int bx = 0; bx < g.grid.x; bx++) f(bx, by);
}
// block_reduce over one value per thread of block (bx, by), as the device tree adds them.
template <typename V, typename Op, typename P>
inline V block_reduce(const Geometry& g, int bx, int by, Op op, P&& partial) {
  std::vector<V> vals((size_t)g.block.x);
  for (int tx = 0; tx < g.block.x; tx++) vals[(size_t)tx] = partial(thread_at(g, bx, by, 0, tx, 0, 0));
  return emul_block_reduce(vals.data(), g.block.x, op);
}
template <typename F>
inline void block_threads(const Geometry& g, int bx, int by, F&& f) {
  for (int tx = 0; tx < g.block.x; tx++) f(thread_at(g, bx, by, 0, tx, 0, 0));
}

// Host sink of the scan backward: one thread's dB/dC terms for the step.
struct HostSink {
  float* db;
  float* dc;
  void operator()(i64 n, float a, float b) {
    db[n] = a;
    dc[n] = b;
  }
};

// scan_forward / scan_backward as their launchers (scan.cu) run them: the instantiation choice, the
// backward kernel's chunk loop with the device sink (warp sums, lane 0 -> shared[warp][k]), then the
// finishing kernels.
template <typename T>
inline void scan_forward(T* y, float* states, const T* x, const T* dt, const float* A, const T* Bm, const T* Cm,
                         const float* D, const ScanDims& d) {
  run_grid(scan_geometry(d), [&](const Thread& th) {
    if (d.N <= 16) scan_forward_body<16>(th, y, states, x, dt, A, Bm, Cm, D, d);
    else scan_forward_body<64>(th, y, states, x, dt, A, Bm, Cm, D, d);
  });
}
template <typename T>
inline void scan_backward(T* dx, T* ddt, float* dA, T* dB, T* dC, float* dD, const T* dy, const float* states,
                          const T* x, const T* dt, const float* A, const T* Bm, const T* Cm, const float* D,
                          const ScanDims& d, float* scratch) {
  const i64 N = d.N, Q = d.chunk, Tn = d.T;
  const Geometry g = scan_geometry(d);
  const ScanBwdScratch w = scan_backward_views(scratch, d);
  constexpr int NM = (int)kScanMaxN;
  run_blocks(g, [&](int bx, int by) {
    const int nt = g.block.x, nw = nt / 32;
    std::vector<ScanBwdState<NM>> state((size_t)nt);
    for (auto& q : state) scan_backward_init(q);
    std::vector<float> terms((size_t)(nt * 2 * N)), shared((size_t)(nw * 2 * N)), lanes(32);
    for (i64 cc = d.nchunks() - 1; cc >= 0; cc--) {
      const i64 t0 = cc * Q, t1 = std::min(Tn, t0 + Q);
      block_threads(g, bx, by, [&](const Thread& th) { scan_backward_recompute<NM>(th, cc, w.hist, states, x, dt, A, Bm, d); });
      for (i64 t = t1 - 1; t >= t0; t--) {
        block_threads(g, bx, by, [&](const Thread& th) {
          HostSink sink{&terms[(size_t)(th.tid() * 2 * N)], &terms[(size_t)(th.tid() * 2 * N + N)]};
          scan_backward_step<NM>(th, state[(size_t)th.tid()], t0, t, sink, dx, ddt, w.part_dt, dy, states, w.hist, x, dt,
                                 A, Bm, Cm, D, d);
        });
        for (int wp = 0; wp < nw; wp++)
          for (i64 k = 0; k < 2 * N; k++) {
            for (int l = 0; l < 32; l++) lanes[(size_t)l] = terms[(size_t)((wp * 32 + l) * 2 * N + k)];
            shared[(size_t)(wp * 2 * N + k)] = emul_warp_reduce(lanes.data(), SumOp());
          }
        block_threads(g, bx, by, [&](const Thread& th) { scan_backward_bc_store(th, shared.data(), w.part_bc, t, d); });
      }
    }
    block_threads(g, bx, by, [&](const Thread& th) { scan_backward_store<NM>(th, state[(size_t)th.tid()], w.part_a, w.part_d, d); });
  });
  run_grid(scan_bc_finish_geometry(d), [&](const Thread& th) { scan_bc_finish_body(th, dB, dC, w.part_bc, d); });
  if (!d.per_lane()) run_grid(scan_dt_finish_geometry(d), [&](const Thread& th) { scan_dt_finish_body(th, ddt, w.part_dt, d); });
  run_grid(scan_param_finish_geometry(d), [&](const Thread& th) { scan_param_finish_body(th, dA, dD, w.part_a, w.part_d, d); });
}

}  // namespace emul
}  // namespace cuda
}  // namespace gm

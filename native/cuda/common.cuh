// Shared by every kernel body. These headers compile with nvcc (the kernels, native/cuda/*.cu) and
// with plain g++ (native/test/cuda_emul.cpp runs the same bodies on the CPU over every block and
// thread index of the grid and compares them with the CPU ops).
//
// - GM_HD marks the per-thread bodies: __host__ __device__ under nvcc, empty under g++.
// - Storage types are float and bf16 (__nv_bfloat16 under nvcc; a bit-exact host emulation with
//   round-to-nearest-even under g++); get()/put() convert to and from the float the bodies compute in.
// - Thread/block indices reach a body as a Thread value: this_thread() on the device, the emulator's
//   loop counters on the host.
// - Block reductions: warp xor-butterflies (__shfl_xor_sync) and one cross-warp stage through shared
//   memory on the device; emul_block_reduce() below reproduces the same tree on the host, so the
//   emulation adds in the order the GPU does.
#pragma once
#include <math.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "shapes.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define GM_UNROLL _Pragma("unroll")
#define GM_NO_UNROLL _Pragma("unroll 1")
#else
#define GM_UNROLL
#define GM_NO_UNROLL
#endif

namespace gm {
namespace cuda {

#if defined(__CUDACC__)
using bf16 = __nv_bfloat16;
GM_HD inline float get(const bf16* p) { return __bfloat162float(*p); }
GM_HD inline void put(bf16* p, float v) { *p = __float2bfloat16_rn(v); }
#else
// Host stand-in for __nv_bfloat16: the upper 16 bits of an IEEE float.
struct bf16 {
  std::uint16_t bits;
};
inline float bf16_to_float(bf16 b) {
  const std::uint32_t u = (std::uint32_t)b.bits << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline bf16 float_to_bf16(float v) {  // round to nearest even, as __float2bfloat16_rn
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  bf16 b;
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) b.bits = (std::uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
  else b.bits = (std::uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  return b;
}
inline float get(const bf16* p) { return bf16_to_float(*p); }
inline void put(bf16* p, float v) { *p = float_to_bf16(v); }
#endif
GM_HD inline float get(const float* p) { return *p; }
GM_HD inline void put(float* p, float v) { *p = v; }
// p += v (the backward passes accumulate into their gradient buffers, as the CPU ops do).
template <typename T>
GM_HD inline void add(T* p, float v) {
  put(p, get(p) + v);
}

GM_HD inline i64 imin(i64 a, i64 b) { return a < b ? a : b; }
GM_HD inline float sigmoidf(float x) { return 1.f / (1.f + expf(-x)); }
GM_HD inline float siluf(float x) { return x * sigmoidf(x); }
GM_HD inline float silu_gradf(float x) {
  const float s = sigmoidf(x);
  return s * (1.f + x * (1.f - s));
}
// torch.nn.functional.softplus with threshold 20 (as gm::softplus).
GM_HD inline float softplusf(float x) { return x > 20.f ? x : log1pf(expf(x)); }
GM_HD inline float softplus_gradf(float x) { return x > 20.f ? 1.f : sigmoidf(x); }

// One thread's coordinates in its launch.
struct Idx3 {
  int x, y, z;
};
struct Thread {
  Idx3 block, thread, bdim, gdim;
  GM_HD i64 global_x() const { return (i64)block.x * bdim.x + thread.x; }
  GM_HD int tid() const { return thread.x; }
  GM_HD int nthreads() const { return bdim.x; }
};
// Launch geometry, computed by the same host function for the launcher and the emulator.
struct Geometry {
  Idx3 grid, block;
};
inline Geometry geometry_1d(i64 n, int threads = kThreads) {
  const i64 blocks = (n + threads - 1) / threads;
  return Geometry{{(int)(blocks > 0 ? blocks : 1), 1, 1}, {threads, 1, 1}};
}
// One block per row: a multiple of 32 threads, at most kRowThreads.
inline Geometry geometry_rows(i64 rows, i64 C) {
  i64 t = (C + 31) / 32 * 32;
  t = t < 32 ? 32 : (t > kRowThreads ? kRowThreads : t);
  return Geometry{{(int)rows, 1, 1}, {(int)t, 1, 1}};
}

#if defined(__CUDACC__)
__device__ inline Thread this_thread() {
  return Thread{{(int)blockIdx.x, (int)blockIdx.y, (int)blockIdx.z},
                {(int)threadIdx.x, (int)threadIdx.y, (int)threadIdx.z},
                {(int)blockDim.x, (int)blockDim.y, (int)blockDim.z},
                {(int)gridDim.x, (int)gridDim.y, (int)gridDim.z}};
}
inline dim3 to_dim3(Idx3 i) { return dim3((unsigned)i.x, (unsigned)i.y, (unsigned)i.z); }
// Launch errors (bad configuration, no device) become exceptions naming the launcher.
inline void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("gm cuda: ") + what + ": " + cudaGetErrorString(e));
}
#define GM_LAUNCH(kernel, geom, stream) kernel<<<to_dim3((geom).grid), to_dim3((geom).block), 0, stream>>>
#endif

struct SumOp {
  template <typename V>
  GM_HD V operator()(V a, V b) const { return a + b; }
  template <typename V>
  GM_HD static V identity() { return V(0); }
};
struct MaxOp {
  template <typename V>
  GM_HD V operator()(V a, V b) const { return a > b ? a : b; }
  template <typename V>
  GM_HD static V identity() { return V(-INFINITY); }
};

#if defined(__CUDACC__)
// Xor butterfly over the 32 lanes of a warp: every lane ends with the same value (a + b == b + a).
template <typename V, typename Op>
__device__ inline V warp_reduce(V v, Op op) {
  GM_UNROLL
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Every thread of the block gets op over one value per thread. blockDim.x is a multiple of 32;
// shared holds 32 values. Ends with a barrier, so shared can be reused at once.
template <typename V, typename Op>
__device__ inline V block_reduce(V v, Op op, V* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_reduce(v, op);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nw ? shared[lane] : Op::template identity<V>();
  v = warp_reduce(v, op);
  __syncthreads();
  return v;
}
#endif

// Host emulation of warp_reduce / block_reduce over the per-thread values vals[0..n), n a multiple
// of 32: the same butterfly, lane by lane.
template <typename V, typename Op>
inline V emul_warp_reduce(const V* lanes, Op op) {
  V v[32], w[32];
  for (int i = 0; i < 32; i++) v[i] = lanes[i];
  for (int o = 16; o > 0; o >>= 1) {
    for (int i = 0; i < 32; i++) w[i] = op(v[i], v[i ^ o]);
    for (int i = 0; i < 32; i++) v[i] = w[i];
  }
  return v[0];
}
template <typename V, typename Op>
inline V emul_block_reduce(const V* vals, int n, Op op) {
  V warps[32];
  const int nw = n / 32;
  for (int w = 0; w < nw; w++) warps[w] = emul_warp_reduce(vals + 32 * w, op);
  for (int w = nw; w < 32; w++) warps[w] = Op::template identity<V>();
  return emul_warp_reduce(warps, op);
}

// Column sums over rows, deterministic in two passes: a partial per (block of kColRows rows,
// column), then a per-column sum of the partials in block order.
inline Geometry colsum_partial_geometry(i64 M, i64 C) { return geometry_1d(colsum_blocks(M) * C); }
inline Geometry colsum_finish_geometry(i64 width) { return geometry_1d(width); }
GM_HD inline void colsum_finish_body(const Thread& th, float* dst, const float* scratch, i64 nrb, i64 width) {
  const i64 j = th.global_x();
  if (j >= width) return;
  float s = 0.f;
  for (i64 rb = 0; rb < nrb; rb++) s += scratch[rb * width + j];
  dst[j] += s;
}

}  // namespace cuda
}  // namespace gm

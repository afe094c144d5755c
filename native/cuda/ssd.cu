// Mamba-2's selective scan in the chunked "state space duality" (SSD) form on tensor cores: the same
// equations as the CPU engine's scan_forward_chunked / scan_backward_chunked (native/src/ops/scan.h),
// with every per-chunk product a strided-batched cuBLASLt GEMM (bf16 x bf16 with fp32 accumulation in
// bf16 mode, strict fp32 in fp32 mode) and the rest small one-thread-per-element kernels. Per chunk
// of Q steps, with l = the inclusive cumsum of dt*A, Z = dt*x, L[t,s] = exp(l_t - l_s) (s <= t),
// w_t = exp(l_last - l_t), e_t = exp(l_t) and S0 the state entering the chunk ([N][P] per head):
//   Y  = (L . C B^T) Z + diag(e) C S0 + D x        S1 = e_last S0 + (diag(w) B)^T Z
// The scan over chunks (S0 of chunk c + 1 from S0 and the local state of chunk c) is the only
// sequential part: one thread per state element walks the nchunks chunks.
//
// Products are batched over b = (row, head, chunk), in that order, so the saved chunk-start states
// ([rows, H, nchunks, N, P]) are the recurrent kernels' layout: either backward follows either
// forward. C B^T is head-independent and is formed once per (row, chunk). Inputs are packed into
// zero-padded [.., Q, .] tiles first, so a short last chunk needs no special case (dt = 0 there: no
// decay and no input). Scratch: ssd_scratch_floats() (kernels.h); the largest buffers are
// rows x T x H x max(P, N, Q) elements.
//
// This file is also compiled by g++ for the CPU emulation (test/cuda_emul_device.cpp includes it):
// there a "launch" runs the body over every thread index of the grid, and the GEMMs are the emulated
// device's loops.
#include <type_traits>

#include "common.cuh"
#include "device.h"
#include "kernels.h"

namespace gm {
namespace cuda {
namespace ssd {

// The chunked view of a Mamba-2 ScanDims.
struct Dims {
  i64 R, T, H, P, N, Q, nc, NB, NG, NP;
  i64 ld_x, ld_dt, ld_bc, ld_y;
  explicit Dims(const ScanDims& s)
      : R(s.rows), T(s.T), H(s.H), P(s.P), N(s.N), Q(s.chunk), nc(s.nchunks()), NB(s.rows * s.H * s.nchunks()),
        NG(s.rows * s.nchunks()), NP(s.N * s.P), ld_x(s.ld_x), ld_dt(s.ld_dt), ld_bc(s.ld_bc), ld_y(s.ld_y) {}
  // b = (r * H + h) * nc + c
  GM_HD i64 r_of(i64 b) const { return b / nc / H; }
  GM_HD i64 h_of(i64 b) const { return (b / nc) % H; }
  GM_HD i64 c_of(i64 b) const { return b % nc; }
  GM_HD i64 g_of(i64 b) const { return r_of(b) * nc + c_of(b); }  // (row, chunk)
  GM_HD i64 b_of(i64 r, i64 h, i64 c) const { return (r * H + h) * nc + c; }
  GM_HD bool valid(i64 c, i64 t) const { return c * Q + t < T; }
  GM_HD i64 row(i64 r, i64 c, i64 t) const { return r * T + c * Q + t; }
};

// The scratch buffers, carved from one float region (each at a 256-byte boundary). Forward uses the
// first group; backward reuses them and the rest. sp is the T copy of the states the GEMMs read
// (null for T = float: the states are read directly).
template <typename T>
struct Buffers {
  float *cdt, *cb, *yp_dxd, *sl_dsg, *dce, *dbw, *dmh, *dcp, *dbp, *dl, *dwt, *dtx, *ddp, *da, *part_a, *part_d;
  T *bp, *cp, *xd, *mh, *bw, *ce, *sp, *dyp, *dsl, *dcb;
};
template <typename T, class Get>
inline void lay_out(const Dims& d, Get&& get, Buffers<T>& w) {
  const i64 QP = d.NB * d.Q * d.P, QN = d.NB * d.Q * d.N, QQ = d.NB * d.Q * d.Q, S = d.NB * d.NP;
  get(w.cdt, d.NB * d.Q), get(w.cb, d.NG * d.Q * d.Q), get(w.yp_dxd, QP), get(w.sl_dsg, S);
  get(w.bp, d.NG * d.Q * d.N), get(w.cp, d.NG * d.Q * d.N), get(w.xd, QP), get(w.mh, QQ), get(w.bw, QN), get(w.ce, QN);
  if (std::is_same<T, float>::value) w.sp = nullptr;
  else get(w.sp, S);
  get(w.dce, QN), get(w.dbw, QN), get(w.dmh, QQ), get(w.dcp, d.NG * d.Q * d.N), get(w.dbp, d.NG * d.Q * d.N);
  get(w.dl, d.NB * d.Q), get(w.dwt, d.NB * d.Q), get(w.dtx, d.NB * d.Q), get(w.ddp, d.NB * d.Q);
  get(w.da, d.NB), get(w.part_a, d.NB), get(w.part_d, d.NB);
  get(w.dyp, QP), get(w.dsl, S), get(w.dcb, d.NG * d.Q * d.Q);
}
// Bytes from the region's start, and the carve itself.
struct Counter {
  std::size_t bytes = 0;
  template <typename U>
  void operator()(U*& p, i64 n) {
    bytes = (bytes + 255) / 256 * 256;
    p = nullptr;
    bytes += (std::size_t)n * sizeof(U);
  }
};
struct Carver {
  char* base;
  std::size_t bytes = 0;
  template <typename U>
  void operator()(U*& p, i64 n) {
    bytes = (bytes + 255) / 256 * 256;
    p = (U*)(base + bytes);
    bytes += (std::size_t)n * sizeof(U);
  }
};

// ---------------------------------------------------------------- kernel bodies (one thread per item)

// Packed B and C per (row, chunk): [NG, Q, N], zero past T.
template <typename T>
struct PackBC {
  Dims d;
  T *bp, *cp;
  const T *B, *C;
  GM_HD void operator()(i64 i) const {
    const i64 g = i / (d.Q * d.N), t = (i / d.N) % d.Q, n = i % d.N, r = g / d.nc, c = g % d.nc;
    const bool ok = d.valid(c, t);
    const i64 at = d.row(r, c, t) * d.ld_bc + n;
    put(bp + i, ok ? get(B + at) : 0.f);
    put(cp + i, ok ? get(C + at) : 0.f);
  }
};
// cdt[b, t] = inclusive cumsum of dt within the chunk (l = A * cdt).
template <typename T>
struct ChunkCumsum {
  Dims d;
  float* cdt;
  const T* dt;
  GM_HD void operator()(i64 b) const {
    const i64 r = d.r_of(b), h = d.h_of(b), c = d.c_of(b);
    float acc = 0.f;
    for (i64 t = 0; t < d.Q; t++) {
      if (d.valid(c, t)) acc += get(dt + d.row(r, c, t) * d.ld_dt + h);
      cdt[b * d.Q + t] = acc;
    }
  }
};
// [NB, Q, P] tiles of a [rows * T, ld] channel array, times dt when by_dt (Z = dt x), zero past T.
template <typename T>
struct PackHeads {
  Dims d;
  T* out;
  const T* src;
  i64 ld;
  const T* dt;  // null: no scaling
  GM_HD void operator()(i64 i) const {
    const i64 b = i / (d.Q * d.P), t = (i / d.P) % d.Q, p = i % d.P;
    const i64 r = d.r_of(b), h = d.h_of(b), c = d.c_of(b);
    float v = 0.f;
    if (d.valid(c, t)) {
      const i64 row = d.row(r, c, t);
      v = get(src + row * ld + h * d.P + p);
      if (dt) v *= get(dt + row * d.ld_dt + h);
    }
    put(out + i, v);
  }
};
GM_HD inline float decay(const float* cdt, float A, i64 b, i64 Q, i64 t, i64 s) {
  return expf(A * (cdt[b * Q + t] - cdt[b * Q + s]));
}
// mh[b, t, s] = (C B^T)[t, s] L[t, s] (zero above the diagonal).
template <typename T>
struct Mask {
  Dims d;
  T* mh;
  const float *cb, *cdt, *A;
  GM_HD void operator()(i64 i) const {
    const i64 b = i / (d.Q * d.Q), t = (i / d.Q) % d.Q, s = i % d.Q;
    const float v = s <= t ? cb[(d.g_of(b) * d.Q + t) * d.Q + s] * decay(cdt, A[d.h_of(b)], b, d.Q, t, s) : 0.f;
    put(mh + i, v);
  }
};
// bw[b, t, n] = w_t B[t, n] and ce[b, t, n] = e_t C[t, n].
template <typename T>
struct ScaleBC {
  Dims d;
  T *bw, *ce;
  const T *bp, *cp;
  const float *cdt, *A;
  GM_HD void operator()(i64 i) const {
    const i64 b = i / (d.Q * d.N), t = (i / d.N) % d.Q, n = i % d.N;
    const float Ah = A[d.h_of(b)];
    const i64 k = (d.g_of(b) * d.Q + t) * d.N + n;
    put(bw + i, decay(cdt, Ah, b, d.Q, d.Q - 1, t) * get(bp + k));
    put(ce + i, expf(Ah * cdt[b * d.Q + t]) * get(cp + k));
  }
};
// The scan over chunks, one thread per (row, head, state element): states[b] = S0 of chunk c, then
// S0 of c + 1 = e_last S0 + local state (sl).
template <typename T>
struct StatesForward {
  Dims d;
  float* states;
  T* sp;  // null: not needed (T = float)
  const float *sl, *cdt, *A;
  GM_HD void operator()(i64 i) const {
    const i64 rh = i / d.NP, e = i % d.NP;
    const float Ah = A[rh % d.H];
    float S = 0.f;
    for (i64 c = 0; c < d.nc; c++) {
      const i64 b = rh * d.nc + c, k = b * d.NP + e;
      states[k] = S;
      if (sp) put(sp + k, S);
      S = expf(Ah * cdt[b * d.Q + d.Q - 1]) * S + sl[k];
    }
  }
};
// y[row, h P + p] = yp + D_h x.
template <typename T>
struct UnpackY {
  Dims d;
  T* y;
  const float* yp;
  const T* x;
  const float* D;
  GM_HD void operator()(i64 i) const {
    const i64 ch = d.H * d.P, rt = i / ch, k = i % ch, r = rt / d.T, tt = rt % d.T, h = k / d.P, p = k % d.P;
    const i64 b = d.b_of(r, h, tt / d.Q), t = tt % d.Q;
    put(y + rt * d.ld_y + k, yp[(b * d.Q + t) * d.P + p] + D[h] * get(x + rt * d.ld_x + k));
  }
};
template <typename T>
struct ToStorage {
  T* out;
  const float* in;
  GM_HD void operator()(i64 i) const { put(out + i, in[i]); }
};
// Backward of the scan over chunks, last to first, with g the gradient of the state leaving chunk
// c: dsl[b] = g (the local state's gradient), the state entering gets dsg[b] + e_last g, and
// dsg[b] is overwritten with S0 (.) g, whose sum is the gradient of e_last.
template <typename T>
struct StatesBackward {
  Dims d;
  T* dsl;
  float* dsg;
  const float *states, *cdt, *A;
  GM_HD void operator()(i64 i) const {
    const i64 rh = i / d.NP, e = i % d.NP;
    const float Ah = A[rh % d.H];
    float g = 0.f;
    for (i64 c = d.nc - 1; c >= 0; c--) {
      const i64 b = rh * d.nc + c, k = b * d.NP + e;
      put(dsl + k, g);
      const float g0 = dsg[k] + expf(Ah * cdt[b * d.Q + d.Q - 1]) * g;
      dsg[k] = states[k] * g;
      g = g0;
    }
  }
};
struct RowSum {
  float* out;
  const float* in;
  i64 width;
  GM_HD void operator()(i64 b) const {
    float s = 0.f;
    for (i64 e = 0; e < width; e++) s += in[b * width + e];
    out[b] = s;
  }
};
// dcb[g, t, s] = sum over heads of dmh L (the gradient of the shared C B^T).
template <typename T>
struct MaskBackwardCB {
  Dims d;
  T* dcb;
  const float *dmh, *cdt, *A;
  GM_HD void operator()(i64 i) const {
    const i64 g = i / (d.Q * d.Q), t = (i / d.Q) % d.Q, s = i % d.Q, r = g / d.nc, c = g % d.nc;
    float acc = 0.f;
    if (s <= t)
      for (i64 h = 0; h < d.H; h++) {
        const i64 b = d.b_of(r, h, c);
        acc += dmh[(b * d.Q + t) * d.Q + s] * decay(cdt, A[h], b, d.Q, t, s);
      }
    put(dcb + i, acc);
  }
};
// dl[b, u] through L: sum_s dM[u, s] M[u, s] - sum_t dM[t, u] M[t, u] (M = C B^T . L, in fp32).
struct MaskBackwardL {
  Dims d;
  float* dl;
  const float *dmh, *cb, *cdt, *A;
  GM_HD void operator()(i64 i) const {
    const i64 b = i / d.Q, u = i % d.Q, g = d.g_of(b);
    const float Ah = A[d.h_of(b)];
    const float* dm = dmh + b * d.Q * d.Q;
    const float* G = cb + g * d.Q * d.Q;
    float v = 0.f;
    for (i64 s = 0; s <= u; s++) v += dm[u * d.Q + s] * G[u * d.Q + s] * decay(cdt, Ah, b, d.Q, u, s);
    for (i64 t = u; t < d.Q; t++) v -= dm[t * d.Q + u] * G[t * d.Q + u] * decay(cdt, Ah, b, d.Q, t, u);
    dl[i] = v;
  }
};
// dB, dC at (row, step, n): the shared C B^T's products plus every head's w (.) dbw and e (.) dce.
template <typename T>
struct BCBackward {
  Dims d;
  T *dB, *dC;
  const float *dcp, *dbp, *dce, *dbw, *cdt, *A;
  GM_HD void operator()(i64 i) const {
    const i64 g = i / (d.Q * d.N), t = (i / d.N) % d.Q, n = i % d.N, r = g / d.nc, c = g % d.nc;
    if (!d.valid(c, t)) return;
    float sc = dcp[i], sb = dbp[i];
    for (i64 h = 0; h < d.H; h++) {
      const i64 b = d.b_of(r, h, c), k = (b * d.Q + t) * d.N + n;
      sc += expf(A[h] * cdt[b * d.Q + t]) * dce[k];
      sb += decay(cdt, A[h], b, d.Q, d.Q - 1, t) * dbw[k];
    }
    const i64 at = d.row(r, c, t) * d.ld_bc + n;
    add(dC + at, sc);
    add(dB + at, sb);
  }
};
// Per (b, t): dl += e_t sum_n dce C - w_t sum_n dbw B; dwt = w_t sum_n dbw B (for l_last);
// dtx = sum_p dZ x (for dt); ddp = sum_p dy x (for D).
template <typename T>
struct StepBackward {
  Dims d;
  float *dl, *dwt, *dtx, *ddp;
  const float *dce, *dbw, *dxd, *cdt, *A;
  const T *cp, *bp, *x, *dy;
  GM_HD void operator()(i64 i) const {
    const i64 b = i / d.Q, t = i % d.Q, r = d.r_of(b), h = d.h_of(b), c = d.c_of(b);
    const float Ah = A[h];
    const i64 k = (d.g_of(b) * d.Q + t) * d.N;
    float sce = 0.f, sbw = 0.f;
    for (i64 n = 0; n < d.N; n++) {
      sce += dce[i * d.N + n] * get(cp + k + n);
      sbw += dbw[i * d.N + n] * get(bp + k + n);
    }
    const float w = decay(cdt, Ah, b, d.Q, d.Q - 1, t), dw = w * sbw;
    dl[i] += expf(Ah * cdt[i]) * sce - dw;
    dwt[i] = dw;
    float zx = 0.f, yx = 0.f;
    if (d.valid(c, t)) {
      const i64 row = d.row(r, c, t);
      for (i64 p = 0; p < d.P; p++) {
        const float xv = get(x + row * d.ld_x + h * d.P + p);
        zx += dxd[i * d.P + p] * xv;
        yx += get(dy + row * d.ld_y + h * d.P + p) * xv;
      }
    }
    dtx[i] = zx;
    ddp[i] = yx;
  }
};
// dx[row, h P + p] += dt dZ + D_h dy.
template <typename T>
struct DxBackward {
  Dims d;
  T* dx;
  const float* dxd;
  const T *dt, *dy;
  const float* D;
  GM_HD void operator()(i64 i) const {
    const i64 ch = d.H * d.P, rt = i / ch, k = i % ch, r = rt / d.T, tt = rt % d.T, h = k / d.P, p = k % d.P;
    const i64 b = d.b_of(r, h, tt / d.Q), t = tt % d.Q;
    add(dx + rt * d.ld_x + k,
        get(dt + rt * d.ld_dt + h) * dxd[(b * d.Q + t) * d.P + p] + D[h] * get(dy + rt * d.ld_y + k));
  }
};
// Per (row, head, chunk): l_last gets e_last (S0 . g) and the w terms; then l = A cumsum(dt) gives
// ddt (reverse cumsum times A, plus dtx) and this chunk's shares of dA and dD.
template <typename T>
struct ChunkBackward {
  Dims d;
  T* ddt;
  float *part_a, *part_d;
  const float *dl, *dwt, *dtx, *ddp, *da, *cdt, *A;
  const T* dt;
  GM_HD void operator()(i64 b) const {
    const i64 r = d.r_of(b), h = d.h_of(b), c = d.c_of(b), o = b * d.Q;
    const float Ah = A[h];
    float dlast = expf(Ah * cdt[o + d.Q - 1]) * da[b];
    for (i64 t = 0; t < d.Q; t++) dlast += dwt[o + t];
    float run = 0.f, sa = 0.f, sd = 0.f;
    for (i64 t = d.Q - 1; t >= 0; t--) {
      run += dl[o + t] + (t == d.Q - 1 ? dlast : 0.f);
      if (!d.valid(c, t)) continue;
      const i64 at = d.row(r, c, t) * d.ld_dt + h;
      sa += get(dt + at) * run;
      sd += ddp[o + t];
      add(ddt + at, Ah * run + dtx[o + t]);
    }
    part_a[b] = sa;
    part_d[b] = sd;
  }
};
// dA[h] += sum over (row, chunk) of part_a; dD[h] likewise (a fixed order).
struct ParamFinish {
  Dims d;
  float *dA, *dD;
  const float *part_a, *part_d;
  GM_HD void operator()(i64 h) const {
    float sa = 0.f, sd = 0.f;
    for (i64 r = 0; r < d.R; r++)
      for (i64 c = 0; c < d.nc; c++) {
        const i64 b = d.b_of(r, h, c);
        sa += part_a[b];
        sd += part_d[b];
      }
    dA[h] += sa;
    dD[h] += sd;
  }
};

// ---------------------------------------------------------------- launches

#if defined(__CUDACC__)
template <class Op>
__global__ void item_kernel(Op op, i64 n) {
  const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) op(i);
}
template <class Op>
void launch(const Op& op, i64 n, cudaStream_t s, const char* what) {
  if (n <= 0) return;
  const Geometry g = geometry_1d(n);
  GM_LAUNCH(item_kernel<Op>, g, s)(op, n);
  check_launch(what);
}
#else
template <class Op>
void launch(const Op& op, i64 n, cudaStream_t, const char*) {
  for (i64 i = 0; i < n; i++) op(i);  // the emulation: every item in index order
}
#endif

// C (fp32) = op(A) op(B) + beta C over `batch` products, A and B in the storage type.
template <typename T>
void gemm(bool ta, bool tb, i64 M, i64 N, i64 K, const T* A, i64 lda, i64 sA, const T* B, i64 ldb, i64 sB,
          float beta, float* C, i64 ldc, i64 sC, i64 batch, cudaStream_t s) {
  device::gemm_batched(ta, tb, M, N, K, 1.f, A, dtype_of<T>(), lda, sA, B, dtype_of<T>(), ldb, sB, beta, C, DType::F32,
                       ldc, sC, batch, s);
}

inline void ssd_check_dims(const ScanDims& s) {
  if (s.per_lane()) throw std::invalid_argument("gm cuda: ssd scan: Mamba-2 shapes only (headdim > 1)");
  if (s.rows < 1 || s.T < 1 || s.H < 1 || s.N < 1 || s.chunk < 1)
    throw std::invalid_argument("gm cuda: ssd scan: rows, T, H, d_state and chunk must be positive");
}

// The work both passes share: packed B, C, Z, the cumsums, C B^T, the masked decay matrices and the
// scaled B (w) and C (e).
template <typename T>
void prepare(const Dims& d, const Buffers<T>& w, const T* x, const T* dt, const float* A, const T* Bm, const T* Cm,
             cudaStream_t s) {
  launch(PackBC<T>{d, w.bp, w.cp, Bm, Cm}, d.NG * d.Q * d.N, s, "ssd pack_bc");
  launch(ChunkCumsum<T>{d, w.cdt, dt}, d.NB, s, "ssd cumsum");
  launch(PackHeads<T>{d, w.xd, x, d.ld_x, dt}, d.NB * d.Q * d.P, s, "ssd pack_z");
  const i64 Q = d.Q, N = d.N;
  gemm<T>(false, true, Q, Q, N, w.cp, N, Q * N, w.bp, N, Q * N, 0.f, w.cb, Q, Q * Q, d.NG, s);  // C B^T
  launch(Mask<T>{d, w.mh, w.cb, w.cdt, A}, d.NB * Q * Q, s, "ssd mask");
  launch(ScaleBC<T>{d, w.bw, w.ce, w.bp, w.cp, w.cdt, A}, d.NB * Q * N, s, "ssd scale_bc");
}

template <typename T>
void forward(T* y, float* states, const T* x, const T* dt, const float* A, const T* Bm, const T* Cm,
                      const float* D, const ScanDims& sd, float* scratch, cudaStream_t s) {
  ssd_check_dims(sd);
  const Dims d(sd);
  Buffers<T> w;
  Carver carve{(char*)scratch};
  lay_out(d, carve, w);
  prepare(d, w, x, dt, A, Bm, Cm, s);
  const i64 Q = d.Q, N = d.N, P = d.P, NP = d.NP;
  float *yp = w.yp_dxd, *sl = w.sl_dsg;
  gemm<T>(false, false, Q, P, Q, w.mh, Q, Q * Q, w.xd, P, Q * P, 0.f, yp, P, Q * P, d.NB, s);  // (L . C B^T) Z
  gemm<T>(true, false, N, P, Q, w.bw, N, Q * N, w.xd, P, Q * P, 0.f, sl, P, NP, d.NB, s);      // (diag(w) B)^T Z
  launch(StatesForward<T>{d, states, w.sp, sl, w.cdt, A}, d.R * d.H * NP, s, "ssd states_forward");
  const T* sp = w.sp ? w.sp : (const T*)(const void*)states;
  gemm<T>(false, false, Q, P, N, w.ce, N, Q * N, sp, P, NP, 1.f, yp, P, Q * P, d.NB, s);  // + diag(e) C S0
  launch(UnpackY<T>{d, y, yp, x, D}, d.R * d.T * d.H * P, s, "ssd unpack_y");
}

template <typename T>
void backward(T* dx, T* ddt, float* dA, T* dB, T* dC, float* dD, const T* dy, const float* states, const T* x,
                       const T* dt, const float* A, const T* Bm, const T* Cm, const float* D, const ScanDims& sd,
                       float* scratch, cudaStream_t s) {
  ssd_check_dims(sd);
  const Dims d(sd);
  Buffers<T> w;
  Carver carve{(char*)scratch};
  lay_out(d, carve, w);
  prepare(d, w, x, dt, A, Bm, Cm, s);
  const i64 Q = d.Q, N = d.N, P = d.P, NP = d.NP, NB = d.NB;
  if (w.sp) launch(ToStorage<T>{w.sp, states}, NB * NP, s, "ssd states_to_storage");
  const T* sp = w.sp ? w.sp : (const T*)(const void*)states;
  launch(PackHeads<T>{d, w.dyp, dy, d.ld_y, nullptr}, NB * Q * P, s, "ssd pack_dy");
  float *dxd = w.yp_dxd, *dsg = w.sl_dsg;
  // Y_off = diag(e) C S0: d(eC) = dY S0^T, dS0 = (eC)^T dY.
  gemm<T>(false, true, Q, N, P, w.dyp, P, Q * P, sp, P, NP, 0.f, w.dce, N, Q * N, NB, s);
  gemm<T>(true, false, N, P, Q, w.ce, N, Q * N, w.dyp, P, Q * P, 0.f, dsg, P, NP, NB, s);
  launch(StatesBackward<T>{d, w.dsl, dsg, states, w.cdt, A}, d.R * d.H * NP, s, "ssd states_backward");
  launch(RowSum{w.da, dsg, NP}, NB, s, "ssd states_dot");
  // S1 = ... + (wB)^T Z: d(wB) = Z dS1^T, dZ = (wB) dS1.
  gemm<T>(false, true, Q, N, P, w.xd, P, Q * P, w.dsl, P, NP, 0.f, w.dbw, N, Q * N, NB, s);
  gemm<T>(false, false, Q, P, N, w.bw, N, Q * N, w.dsl, P, NP, 0.f, dxd, P, Q * P, NB, s);
  // Y_diag = M Z: dM = dY Z^T, dZ += M^T dY.
  gemm<T>(false, true, Q, Q, P, w.dyp, P, Q * P, w.xd, P, Q * P, 0.f, w.dmh, Q, Q * Q, NB, s);
  gemm<T>(true, false, Q, P, Q, w.mh, Q, Q * Q, w.dyp, P, Q * P, 1.f, dxd, P, Q * P, NB, s);
  // M = (C B^T) . L: the shared C B^T's gradient, then dC += dG B and dB += dG^T C.
  launch(MaskBackwardCB<T>{d, w.dcb, w.dmh, w.cdt, A}, d.NG * Q * Q, s, "ssd mask_backward_cb");
  launch(MaskBackwardL{d, w.dl, w.dmh, w.cb, w.cdt, A}, NB * Q, s, "ssd mask_backward_l");
  gemm<T>(false, false, Q, N, Q, w.dcb, Q, Q * Q, w.bp, N, Q * N, 0.f, w.dcp, N, Q * N, d.NG, s);
  gemm<T>(true, false, Q, N, Q, w.dcb, Q, Q * Q, w.cp, N, Q * N, 0.f, w.dbp, N, Q * N, d.NG, s);
  launch(BCBackward<T>{d, dB, dC, w.dcp, w.dbp, w.dce, w.dbw, w.cdt, A}, d.NG * Q * N, s, "ssd bc_backward");
  launch(StepBackward<T>{d, w.dl, w.dwt, w.dtx, w.ddp, w.dce, w.dbw, dxd, w.cdt, A, w.cp, w.bp, x, dy}, NB * Q, s,
         "ssd step_backward");
  launch(DxBackward<T>{d, dx, dxd, dt, dy, D}, d.R * d.T * d.H * P, s, "ssd dx_backward");
  launch(ChunkBackward<T>{d, ddt, w.part_a, w.part_d, w.dl, w.dwt, w.dtx, w.ddp, w.da, w.cdt, A, dt}, NB, s,
         "ssd chunk_backward");
  launch(ParamFinish{d, dA, dD, w.part_a, w.part_d}, d.H, s, "ssd param_finish");
}

}  // namespace ssd

i64 ssd_scratch_floats(const ScanDims& s, i64 storage_bytes) {
  const ssd::Dims d(s);
  ssd::Counter count;
  if (storage_bytes == 4) {
    ssd::Buffers<float> w;
    ssd::lay_out(d, count, w);
  } else {
    ssd::Buffers<bf16> w;
    ssd::lay_out(d, count, w);
  }
  return (i64)((count.bytes + 255) / 256 * 64);
}

template <typename T>
void ssd_scan_forward(T* y, float* states, const T* x, const T* dt, const float* A, const T* Bm, const T* Cm,
                      const float* D, const ScanDims& sd, float* scratch, cudaStream_t s) {
  ssd::forward(y, states, x, dt, A, Bm, Cm, D, sd, scratch, s);
}
template <typename T>
void ssd_scan_backward(T* dx, T* ddt, float* dA, T* dB, T* dC, float* dD, const T* dy, const float* states, const T* x,
                       const T* dt, const float* A, const T* Bm, const T* Cm, const float* D, const ScanDims& sd,
                       float* scratch, cudaStream_t s) {
  ssd::backward(dx, ddt, dA, dB, dC, dD, dy, states, x, dt, A, Bm, Cm, D, sd, scratch, s);
}

#define GM_SSD_INST(T)                                                                                              \
  template void ssd_scan_forward<T>(T*, float*, const T*, const T*, const float*, const T*, const T*, const float*, \
                                    const ScanDims&, float*, cudaStream_t);                                         \
  template void ssd_scan_backward<T>(T*, T*, float*, T*, T*, float*, const T*, const float*, const T*, const T*,   \
                                     const float*, const T*, const T*, const float*, const ScanDims&, float*,       \
                                     cudaStream_t);
GM_SSD_INST(float)
GM_SSD_INST(bf16)
#undef GM_SSD_INST

}  // namespace cuda
}  // namespace gm

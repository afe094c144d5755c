// Selective scan (native/src/ops/scan.h), both shapes:
//   S_t = exp(dt_t * A) (.) S_{t-1} + dt_t x_t (outer) B_t        y_t = S_t C_t + D x_t
// Mamba-2 (P > 1): A one scalar per head, dt one per (step, head); Mamba-1 (P = 1): A[c, :] and dt
// per channel. One thread per (row, channel) holds the channel's N states in registers (NM >= N is a
// compile-time bound, 16 or 64) and walks the sequence; a thread block holds kScanThreads channels of
// one row (grid: groups x rows).
//
// Forward saves the state at the start of every chunk of Q steps in the CPU layout
// [rows, blocks, nchunks, N, lanes] (a block = a head for Mamba-2, 16 channels for Mamba-1; element
// (n, w) of a block of width W at n * W + w), so either side's backward can follow the other's forward.
// Backward walks the chunks last to first: it recomputes the chunk's states from the saved start
// state into scratch (hist: Q x N per thread, laid out so a warp's accesses are contiguous), then
// runs the reverse recursion dS_t = gy_t C_t + a_{t+1} dS_{t+1} with dS carried in registers across
// chunks. dx and (Mamba-1) d(dt) belong to one thread; sums over channels go through deterministic
// partial buffers: dB/dC per (row, step, block) from a block reduction every step, Mamba-2's d(dt)
// per (row, step, channel), dA/dD per (row, channel); small finishing kernels add them up in a fixed
// order. Arithmetic follows scan_forward_recurrent / scan_backward_recurrent term by term.
//
// Registers: the forward loops over n are unrolled (NM = 16 or 64 instances, the states stay in
// registers); the backward loops are not (one NM = 64 instance, its per-thread arrays in local
// memory): fully unrolled, the backward kernels took 18 s per architecture to compile and spilled
// anyway at NM = 64. Both choices are untested for speed: no GPU measurement exists yet.
#pragma once
#include "common.cuh"

namespace gm {
namespace cuda {

inline Geometry scan_geometry(const ScanDims& s) {
  return Geometry{{(int)s.groups(), (int)s.rows, 1}, {kScanThreads, 1, 1}};
}

// Where a thread's channel lives.
struct ScanLane {
  i64 r, c, h;      // row, channel, head (Mamba-2) or channel (Mamba-1): the index of dt, A, D
  i64 w, Wb;        // lane in its state block, width of that block
  i64 state_base;   // offset of its block's saved states (chunk 0, element 0)
  bool active;      // c < channels (the last thread block of a row may be partly idle)
};
GM_HD inline ScanLane scan_lane(const Thread& th, const ScanDims& s) {
  ScanLane l;
  l.r = th.block.y;
  l.c = (i64)th.block.x * th.bdim.x + th.thread.x;
  l.active = l.c < s.channels();
  const i64 WL = s.lanes(), bi = l.c / WL;
  l.h = s.per_lane() ? l.c : l.c / s.P;
  l.w = l.c % WL;
  l.Wb = imin(WL, s.channels() - bi * WL);
  l.state_base = (l.r * s.blocks() + bi) * s.nchunks() * s.N * WL;
  return l;
}

template <int NM, typename T>
GM_HD inline void scan_forward_body(const Thread& th, T* y, float* states, const T* x, const T* dt, const float* A,
                                    const T* Bm, const T* Cm, const float* D, const ScanDims& s) {
  const ScanLane l = scan_lane(th, s);
  if (!l.active) return;
  const i64 N = s.N, Q = s.chunk, NWL = s.N * s.lanes();
  const bool pl = s.per_lane();
  float S[NM];
  GM_UNROLL
  for (int n = 0; n < NM; n++) S[n] = 0.f;
  const float Dh = D[l.h];
  for (i64 t = 0; t < s.T; t++) {
    if (t % Q == 0) {
      float* sp = states + l.state_base + (t / Q) * NWL;
      GM_UNROLL
      for (int n = 0; n < NM; n++)
        if (n < N) sp[n * l.Wb + l.w] = S[n];
    }
    const i64 row = l.r * s.T + t;
    const float d = get(dt + row * s.ld_dt + l.h), xv = get(x + row * s.ld_x + l.c);
    const T* Bt = Bm + row * s.ld_bc;
    const T* Ct = Cm + row * s.ld_bc;
    const float dx = d * xv;
    float yv = Dh * xv;
    const float av = pl ? 0.f : expf(d * A[l.h]);
    GM_UNROLL
    for (int n = 0; n < NM; n++) {
      if (n < N) {
        const float a = pl ? expf(d * A[l.c * N + n]) : av;
        S[n] = a * S[n] + dx * get(Bt + n);
        yv += S[n] * get(Ct + n);
      }
    }
    put(y + row * s.ld_y + l.c, yv);
  }
}

// Scratch views of the backward (sizes: scan_backward_scratch in shapes.h).
struct ScanBwdScratch {
  float *hist, *part_bc, *part_dt, *part_a, *part_d;
};
inline ScanBwdScratch scan_backward_views(float* scratch, const ScanDims& s) {
  const ScanScratch k = scan_backward_scratch(s);
  ScanBwdScratch v;
  v.hist = scratch;
  v.part_bc = v.hist + k.hist;
  v.part_dt = v.part_bc + k.part_bc;
  v.part_a = v.part_dt + k.part_dt;
  v.part_d = v.part_a + k.part_a;
  return v;
}
GM_HD inline i64 scan_hist_index(const ScanDims& s, const ScanLane& l, i64 step_in_chunk, i64 n) {
  return (step_in_chunk * s.N + n) * (s.rows * s.channels()) + l.r * s.channels() + l.c;
}

// What a thread carries through the backward pass.
template <int NM>
struct ScanBwdState {
  float dS[NM];   // gradient of the state after the step being processed, times that step's decay
  float dAl[NM];  // Mamba-1: dA[c, n]
  float dAh, dD;  // Mamba-2: this channel's share of dA[h]; dD share
};
template <int NM>
GM_HD inline void scan_backward_init(ScanBwdState<NM>& st) {
  GM_NO_UNROLL
  for (int n = 0; n < NM; n++) st.dS[n] = st.dAl[n] = 0.f;
  st.dAh = st.dD = 0.f;
}

// Recompute chunk cc's states from its saved start state into hist.
template <int NM, typename T>
GM_HD inline void scan_backward_recompute(const Thread& th, i64 cc, float* hist, const float* states, const T* x,
                                          const T* dt, const float* A, const T* Bm, const ScanDims& s) {
  const ScanLane l = scan_lane(th, s);
  if (!l.active) return;
  const i64 N = s.N, t0 = cc * s.chunk, t1 = imin(s.T, t0 + s.chunk);
  const bool pl = s.per_lane();
  const float* sp = states + l.state_base + cc * N * s.lanes();
  float S[NM];
  GM_NO_UNROLL
  for (int n = 0; n < NM; n++) S[n] = n < N ? sp[n * l.Wb + l.w] : 0.f;
  for (i64 t = t0; t < t1; t++) {
    const i64 row = l.r * s.T + t;
    const float d = get(dt + row * s.ld_dt + l.h), xv = get(x + row * s.ld_x + l.c);
    const T* Bt = Bm + row * s.ld_bc;
    const float av = pl ? 0.f : expf(d * A[l.h]);
    GM_NO_UNROLL
    for (int n = 0; n < NM; n++) {
      if (n < N) {
        const float a = pl ? expf(d * A[l.c * N + n]) : av;
        S[n] = a * S[n] + d * xv * get(Bt + n);
        hist[scan_hist_index(s, l, t - t0, n)] = S[n];
      }
    }
  }
}

// One reverse step at time t of the chunk starting at t0. sink(n, db, dc) receives this thread's
// contributions to dB[t, n] and dC[t, n]. Every thread of the block reaches the same sink call for
// every n (idle threads with zeros), so the device sink can reduce across the warp.
template <int NM, typename T, typename Sink>
GM_HD inline void scan_backward_step(const Thread& th, ScanBwdState<NM>& st, i64 t0, i64 t, Sink& sink, T* dx, T* ddt,
                                     float* part_dt, const T* dy, const float* states, const float* hist, const T* x,
                                     const T* dt, const float* A, const T* Bm, const T* Cm, const float* D,
                                     const ScanDims& s) {
  const ScanLane l = scan_lane(th, s);
  const i64 N = s.N;
  const bool pl = s.per_lane(), act = l.active;
  const i64 row = l.r * s.T + t;
  float d = 0.f, xv = 0.f, gy = 0.f, av = 0.f;
  if (act) {
    d = get(dt + row * s.ld_dt + l.h);
    xv = get(x + row * s.ld_x + l.c);
    gy = get(dy + row * s.ld_y + l.c);
    av = pl ? 0.f : expf(d * A[l.h]);
  }
  const T* Bt = Bm + row * s.ld_bc;
  const T* Ct = Cm + row * s.ld_bc;
  const float* sp0 = states + l.state_base + (t0 / s.chunk) * N * s.lanes();
  float gx = 0.f, ddl = 0.f, qsum = 0.f;
  GM_NO_UNROLL
  for (int n = 0; n < NM; n++) {
    if (n < N) {
      float db = 0.f, dc = 0.f;
      if (act) {
        const float Sn = hist[scan_hist_index(s, l, t - t0, n)];
        const float Spn = t == t0 ? sp0[n * l.Wb + l.w] : hist[scan_hist_index(s, l, t - t0 - 1, n)];
        const float bn = get(Bt + n), cn = get(Ct + n);
        const float v = st.dS[n] + gy * cn;  // dS_t
        dc = Sn * gy;
        gx += v * bn;
        const float q = v * Spn;
        if (pl) {
          const float Afn = A[l.c * N + n], an = expf(d * Afn);
          db = d * v * xv;
          ddl += v * xv * bn + Afn * an * q;
          st.dAl[n] += d * an * q;
          st.dS[n] = v * an;  // becomes a_t dS_t, the carried term of dS_{t-1}
        } else {
          db = d * (v * xv);
          qsum += q;
          st.dS[n] = v * av;
        }
      }
      sink(n, db, dc);
    }
  }
  if (!act) return;
  add(dx + row * s.ld_x + l.c, d * gx + D[l.h] * gy);
  st.dD += gy * xv;
  if (pl) {
    add(ddt + row * s.ld_dt + l.c, ddl);
  } else {
    // this channel's share of d(dt)[t, h] (decay term + input term) and of dA[h]
    part_dt[row * s.channels() + l.c] = A[l.h] * av * qsum + xv * gx;
    st.dAh += d * av * qsum;
  }
}

// After the step: threads tid < 2N sum the per-warp sums (shared: [warps][2N]) in warp order into
// part_bc[row, t, block][k] (k < N: dB, else dC).
GM_HD inline void scan_backward_bc_store(const Thread& th, const float* shared, float* part_bc, i64 t, const ScanDims& s) {
  const i64 k = th.tid(), K = 2 * s.N;
  if (k >= K) return;
  const int nw = th.nthreads() / 32;
  float acc = 0.f;
  for (int w = 0; w < nw; w++) acc += shared[w * K + k];
  const i64 rt = (i64)th.block.y * s.T + t;
  part_bc[(rt * s.groups() + th.block.x) * K + k] = acc;
}

template <int NM>
GM_HD inline void scan_backward_store(const Thread& th, const ScanBwdState<NM>& st, float* part_a, float* part_d,
                                      const ScanDims& s) {
  const ScanLane l = scan_lane(th, s);
  if (!l.active) return;
  const i64 rc = l.r * s.channels() + l.c;
  if (s.per_lane()) {
    GM_NO_UNROLL
    for (int n = 0; n < NM; n++)
      if (n < s.N) part_a[rc * s.N + n] = st.dAl[n];
  } else {
    part_a[rc] = st.dAh;
  }
  part_d[rc] = st.dD;
}

// Finishing passes (fixed order): dB/dC over the row's thread blocks, Mamba-2 d(dt) over the head's
// channels, dA/dD over rows (then the head's channels for Mamba-2).
inline Geometry scan_bc_finish_geometry(const ScanDims& s) { return geometry_1d(s.rows * s.T * 2 * s.N); }
template <typename T>
GM_HD inline void scan_bc_finish_body(const Thread& th, T* dB, T* dC, const float* part_bc, const ScanDims& s) {
  const i64 i = th.global_x(), K = 2 * s.N, G = s.groups();
  if (i >= s.rows * s.T * K) return;
  const i64 rt = i / K, k = i % K;
  float acc = 0.f;
  for (i64 g = 0; g < G; g++) acc += part_bc[(rt * G + g) * K + k];
  if (k < s.N) add(dB + rt * s.ld_bc + k, acc);
  else add(dC + rt * s.ld_bc + (k - s.N), acc);
}
inline Geometry scan_dt_finish_geometry(const ScanDims& s) { return geometry_1d(s.rows * s.T * s.H); }
template <typename T>
GM_HD inline void scan_dt_finish_body(const Thread& th, T* ddt, const float* part_dt, const ScanDims& s) {
  const i64 i = th.global_x();
  if (i >= s.rows * s.T * s.H) return;
  const i64 rt = i / s.H, h = i % s.H;
  float acc = 0.f;
  for (i64 p = 0; p < s.P; p++) acc += part_dt[rt * s.channels() + h * s.P + p];
  add(ddt + rt * s.ld_dt + h, acc);
}
inline Geometry scan_param_finish_geometry(const ScanDims& s) { return geometry_1d(s.a_size() + s.H); }
GM_HD inline void scan_param_finish_body(const Thread& th, float* dA, float* dD, const float* part_a, const float* part_d,
                                         const ScanDims& s) {
  const i64 i = th.global_x(), ch = s.channels();
  if (i >= s.a_size() + s.H) return;
  float acc = 0.f;
  if (i < s.a_size()) {
    if (s.per_lane()) {  // dA[c, n]
      for (i64 r = 0; r < s.rows; r++) acc += part_a[(r * ch) * s.N + i];
    } else {  // dA[h]
      for (i64 r = 0; r < s.rows; r++)
        for (i64 p = 0; p < s.P; p++) acc += part_a[r * ch + i * s.P + p];
    }
    dA[i] += acc;
  } else {
    const i64 h = i - s.a_size();
    for (i64 r = 0; r < s.rows; r++)
      for (i64 p = 0; p < s.P; p++) acc += part_d[r * ch + h * s.P + p];
    dD[h] += acc;
  }
}

}  // namespace cuda
}  // namespace gm

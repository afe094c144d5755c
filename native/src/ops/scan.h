// Selective scan (the SSM recurrence of Mamba-1 and Mamba-2), one op for both:
//   S_t = exp(dt_t * A) (.) S_{t-1} + dt_t * x_t (outer) B_t        y_t = S_t C_t + D * x_t
// over C = H * P channels, N states per channel, B and C shared by all channels (ngroups = 1).
// Where A and dt vary is the only difference between the two mixers:
//   Mamba-2 (P > 1): H heads of P channels; A is one scalar per head, dt one per (step, head), so the
//                    decay is one scalar per (step, head). A has shape [H].
//   Mamba-1 (P = 1): every channel has its own dt and its own A[c, :] over the N states. A is [H, N].
//
// scan_forward_recurrent / scan_backward_recurrent handle both shapes: channels in blocks of W
// contiguous "lanes" (a whole head for Mamba-2, 16 channels for Mamba-1) with the state stored
// [N][W], so every inner loop runs over lanes (contiguous, vectorised). Forward keeps only the state
// at the start of each chunk of Q steps, like the reference CUDA kernels; backward walks the chunks
// last to first, recomputes the states inside a chunk from its saved start state, then runs the
// reverse recursion dS_t = gy_t C_t + a_{t+1} dS_{t+1}.
// For Mamba-2's scalar decay, scan_forward_chunked / scan_backward_chunked compute the same thing
// in the chunked matrix form (small dense products, 2-3x faster here); scan_forward/scan_backward at
// the end pick the form. The checks run both forms on the Mamba-2 shape and compare them.
// Threads take (row, block group) tasks. Gradients shared across blocks (dB, dC) and rows (dA, dD)
// go through per-task partial buffers reduced in a fixed order, so results do not depend on
// scheduling or on the number of threads.
#pragma once
#include <algorithm>
#include <vector>

#include "common.h"
#include "small_gemm.h"

namespace gm {

struct ScanShape {
  i64 rows, T, H, P, N;
  i64 chunk;                     // Q: steps between saved states
  i64 ld_x, ld_dt, ld_bc, ld_y;  // leading dimensions (elements between time steps)
  i64 nchunks() const { return (T + chunk - 1) / chunk; }
  bool per_lane() const { return P == 1; }
  i64 channels() const { return H * P; }
  i64 lanes() const { return per_lane() ? std::min<i64>(16, H) : P; }
  i64 blocks() const { return (channels() + lanes() - 1) / lanes(); }
  // Block groups per row: a fixed split (independent of the thread count) keeps the partial sums
  // fixed. Few groups keep the dB/dC partial buffers (groups x T x 2N per row) small; rows x 4
  // tasks still feed every core for the usual batch sizes.
  i64 groups() const { return std::min<i64>(blocks(), 4); }
  i64 states_size() const { return rows * blocks() * nchunks() * N * lanes(); }
  i64 a_size() const { return per_lane() ? H * N : H; }
};

namespace scan_detail {

// Per-block view of the inputs at one step: decay and step size per lane (broadcast for Mamba-2).
struct Block {
  i64 c0, W;  // first channel, lanes in this block (the last Mamba-1 block may be narrower)
  i64 head;   // Mamba-2: the block's head
};

template <typename T>
inline void load_dt(const ScanShape& s, const Block& b, const T* dt, i64 row, T* d) {
  if (s.per_lane()) {
    const T* p = dt + row * s.ld_dt + b.c0;
    for (i64 w = 0; w < b.W; w++) d[w] = p[w];
  } else {
    const T v = dt[row * s.ld_dt + b.head];
    for (i64 w = 0; w < b.W; w++) d[w] = v;
  }
}

// a[n][w] = exp(d[w] * A[n][w]) for Mamba-1 (At is A transposed to [N][H]); Mamba-2 needs a scalar.
template <typename T>
inline void decay_per_lane(const ScanShape& s, const Block& b, const T* At, const T* d, T* a) {
  const i64 W = b.W, H = s.H;
  for (i64 n = 0; n < s.N; n++) {
    const T* An = At + n * H + b.c0;
    T* an = a + n * W;
#pragma omp simd
    for (i64 w = 0; w < W; w++) an[w] = vexp(d[w] * An[w]);
  }
}

}  // namespace scan_detail

// x, dt, B, C, y are [rows * T, ld]: channel c reads x[., c], Mamba-2 head h reads dt[., h],
// Mamba-1 channel c reads dt[., c]. A is [H] (Mamba-2) or [H, N] (Mamba-1), D is [H].
// states receives the state at each chunk start: [rows, blocks, nchunks, N, lanes].
template <typename T>
void scan_forward_recurrent(T* y, T* states, const T* x, const T* dt, const T* A, const T* Bm, const T* Cm,
                            const T* D, const ScanShape& s) {
  using namespace scan_detail;
  const i64 N = s.N, WL = s.lanes(), G = s.groups(), nb = s.blocks(), nc = s.nchunks();
  std::vector<T> At;
  if (s.per_lane()) {  // [H, N] -> [N, H] so lanes are contiguous
    At.resize(s.H * N);
    for (i64 h = 0; h < s.H; h++)
      for (i64 n = 0; n < N; n++) At[n * s.H + h] = A[h * N + n];
  }
#pragma omp parallel
  {
    std::vector<T> S(N * WL), a(N * WL), d(WL), dx(WL), yv(WL), Dl(WL);
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < s.rows * G; task++) {
      const i64 r = task / G, g = task % G;
      for (i64 bi = g * nb / G; bi < (g + 1) * nb / G; bi++) {
        Block b{bi * WL, std::min(WL, s.channels() - bi * WL), bi * WL / s.P};
        const i64 W = b.W;
        for (i64 w = 0; w < W; w++) Dl[w] = s.per_lane() ? D[b.c0 + w] : D[b.head];
        std::fill(S.begin(), S.end(), T(0));
        T* st = states + (r * nb + bi) * nc * N * WL;
        for (i64 t = 0; t < s.T; t++) {
          if (t % s.chunk == 0) std::copy(S.begin(), S.end(), st + (t / s.chunk) * N * WL);
          const i64 row = r * s.T + t;
          const T* xt = x + row * s.ld_x + b.c0;
          const T* Bt = Bm + row * s.ld_bc;
          const T* Ct = Cm + row * s.ld_bc;
          load_dt(s, b, dt, row, d.data());
          for (i64 w = 0; w < W; w++) {
            dx[w] = d[w] * xt[w];
            yv[w] = Dl[w] * xt[w];
          }
          if (s.per_lane()) {
            decay_per_lane(s, b, At.data(), d.data(), a.data());
            for (i64 n = 0; n < N; n++) {
              T* Sn = S.data() + n * W;
              const T* an = a.data() + n * W;
              const T bn = Bt[n], cn = Ct[n];
#pragma omp simd
              for (i64 w = 0; w < W; w++) {
                Sn[w] = an[w] * Sn[w] + dx[w] * bn;
                yv[w] += Sn[w] * cn;
              }
            }
          } else {
            const T av = vexp(d[0] * A[b.head]);
            for (i64 n = 0; n < N; n++) {
              T* Sn = S.data() + n * W;
              const T bn = Bt[n], cn = Ct[n];
#pragma omp simd
              for (i64 w = 0; w < W; w++) {
                Sn[w] = av * Sn[w] + dx[w] * bn;
                yv[w] += Sn[w] * cn;
              }
            }
          }
          T* yt = y + row * s.ld_y + b.c0;
          for (i64 w = 0; w < W; w++) yt[w] = yv[w];
        }
      }
    }
  }
}

// Accumulates into dx, ddt (same layouts as x, dt), dA (shape of A), dB, dC (ld_bc) and dD [H].
template <typename T>
void scan_backward_recurrent(T* dx, T* ddt, T* dA, T* dB, T* dC, T* dD, const T* dy, const T* states, const T* x,
                             const T* dt, const T* A, const T* Bm, const T* Cm, const T* D, const ScanShape& s) {
  using namespace scan_detail;
  const i64 N = s.N, WL = s.lanes(), G = s.groups(), nb = s.blocks(), nc = s.nchunks(), Q = s.chunk;
  const i64 tasks = s.rows * G;
  std::vector<T> At;
  if (s.per_lane()) {
    At.resize(s.H * N);
    for (i64 h = 0; h < s.H; h++)
      for (i64 n = 0; n < N; n++) At[n * s.H + h] = A[h * N + n];
  }
  std::vector<T> part_bc((size_t)(tasks * s.T * 2 * N), T(0));  // per task: [T, dB | dC]
  std::vector<T> part_a((size_t)(s.rows * s.a_size()), T(0));    // per row: dA
  std::vector<T> part_d((size_t)(s.rows * s.H), T(0));           // per row: dD
#pragma omp parallel
  {
    std::vector<T> dS(N * WL), Sbuf(Q * N * WL), a(Q * N * WL), d(WL), gx(WL), ddl(WL), dAl(N * WL), dDl(WL);
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < tasks; task++) {
      const i64 r = task / G, g = task % G;
      T* pbc = part_bc.data() + task * s.T * 2 * N;
      for (i64 bi = g * nb / G; bi < (g + 1) * nb / G; bi++) {
        Block b{bi * WL, std::min(WL, s.channels() - bi * WL), bi * WL / s.P};
        const i64 W = b.W, NW = N * W;
        const T Ah = s.per_lane() ? T(0) : A[b.head];
        std::fill(dS.begin(), dS.end(), T(0));
        std::fill(dAl.begin(), dAl.end(), T(0));
        std::fill(dDl.begin(), dDl.end(), T(0));
        T dA_head = 0;
        const T* st = states + (r * nb + bi) * nc * N * WL;
        for (i64 c = nc - 1; c >= 0; c--) {
          const i64 t0 = c * Q, t1 = std::min(s.T, t0 + Q);
          const T* S0 = st + c * N * WL;
          // Recompute this chunk's states (and decays) from its start state.
          for (i64 t = t0; t < t1; t++) {
            const i64 row = r * s.T + t;
            const T* xt = x + row * s.ld_x + b.c0;
            const T* Bt = Bm + row * s.ld_bc;
            const T* prev = t == t0 ? S0 : Sbuf.data() + (t - t0 - 1) * NW;
            T* cur = Sbuf.data() + (t - t0) * NW;
            T* at = a.data() + (t - t0) * NW;
            load_dt(s, b, dt, row, d.data());
            if (s.per_lane()) decay_per_lane(s, b, At.data(), d.data(), at);
            else at[0] = vexp(d[0] * Ah);
            for (i64 n = 0; n < N; n++) {
              const T bn = Bt[n];
              const T* pn = prev + n * W;
              T* cn = cur + n * W;
              if (s.per_lane()) {
                const T* an = at + n * W;
#pragma omp simd
                for (i64 w = 0; w < W; w++) cn[w] = an[w] * pn[w] + d[w] * xt[w] * bn;
              } else {
                const T av = at[0];
#pragma omp simd
                for (i64 w = 0; w < W; w++) cn[w] = av * pn[w] + d[w] * xt[w] * bn;
              }
            }
          }
          for (i64 t = t1 - 1; t >= t0; t--) {
            const i64 row = r * s.T + t;
            const T* xt = x + row * s.ld_x + b.c0;
            const T* Bt = Bm + row * s.ld_bc;
            const T* Ct = Cm + row * s.ld_bc;
            const T* gy = dy + row * s.ld_y + b.c0;
            const T* St = Sbuf.data() + (t - t0) * NW;
            const T* Sprev = t == t0 ? S0 : St - NW;
            const T* at = a.data() + (t - t0) * NW;
            load_dt(s, b, dt, row, d.data());
            T* pb = pbc + t * 2 * N;
            for (i64 w = 0; w < W; w++) {
              gx[w] = 0;
              ddl[w] = 0;
            }
            for (i64 n = 0; n < N; n++) {
              T* dSn = dS.data() + n * W;
              const T* Sn = St + n * W;
              const T* Spn = Sprev + n * W;
              const T bn = Bt[n], cn = Ct[n];
              T dc = 0, db = 0;
              if (s.per_lane()) {
                const T* an = at + n * W;
                const T* Afn = At.data() + n * s.H + b.c0;
                T* dAn = dAl.data() + n * W;
#pragma omp simd reduction(+ : dc, db)
                for (i64 w = 0; w < W; w++) {
                  const T v = dSn[w] + gy[w] * cn;  // dS_t
                  dc += Sn[w] * gy[w];
                  gx[w] += v * bn;
                  db += d[w] * v * xt[w];
                  const T q = v * Spn[w];
                  ddl[w] += v * xt[w] * bn + Afn[w] * an[w] * q;
                  dAn[w] += d[w] * an[w] * q;
                  dSn[w] = v * an[w];  // becomes a_t dS_t, the carried term of dS_{t-1}
                }
              } else {
                const T av = at[0];
                T qsum = 0;
#pragma omp simd reduction(+ : dc, db, qsum)
                for (i64 w = 0; w < W; w++) {
                  const T v = dSn[w] + gy[w] * cn;
                  dc += Sn[w] * gy[w];
                  gx[w] += v * bn;
                  db += v * xt[w];
                  qsum += v * Spn[w];
                  dSn[w] = v * av;
                }
                db *= d[0];
                // d(dt) and dA of the scalar decay: sum over (n, w) of dS_t (.) A a S_{t-1}
                ddl[0] += Ah * av * qsum;
                dA_head += d[0] * av * qsum;
              }
              pb[n] += db;
              pb[N + n] += dc;
            }
            T* dxt = dx + row * s.ld_x + b.c0;
            if (s.per_lane()) {
              T* ddtt = ddt + row * s.ld_dt + b.c0;
              for (i64 w = 0; w < W; w++) {
                dxt[w] += d[w] * gx[w] + D[b.c0 + w] * gy[w];
                dDl[w] += gy[w] * xt[w];
                ddtt[w] += ddl[w];
              }
            } else {
              // d(dt) also gets sum_w x_w (dS_t B) = sum_w x_w gx_w from the input term
              T dd = ddl[0], dDh = 0;
              for (i64 w = 0; w < W; w++) {
                dxt[w] += d[0] * gx[w] + D[b.head] * gy[w];
                dd += xt[w] * gx[w];
                dDh += gy[w] * xt[w];
              }
              ddt[row * s.ld_dt + b.head] += dd;
              dDl[0] += dDh;
            }
          }
        }
        if (s.per_lane()) {
          for (i64 w = 0; w < W; w++) {
            part_d[r * s.H + b.c0 + w] += dDl[w];
            for (i64 n = 0; n < N; n++) part_a[r * s.a_size() + (b.c0 + w) * N + n] += dAl[n * W + w];
          }
        } else {
          part_d[r * s.H + b.head] += dDl[0];
          part_a[r * s.a_size() + b.head] += dA_head;
        }
      }
    }
    // Fixed-order reductions of the partial buffers.
#pragma omp for schedule(static)
    for (i64 rt = 0; rt < s.rows * s.T; rt++) {
      const i64 r = rt / s.T, t = rt % s.T;
      T* dBt = dB + rt * s.ld_bc;
      T* dCt = dC + rt * s.ld_bc;
      for (i64 g = 0; g < G; g++) {
        const T* pb = part_bc.data() + ((r * G + g) * s.T + t) * 2 * N;
        for (i64 n = 0; n < N; n++) {
          dBt[n] += pb[n];
          dCt[n] += pb[N + n];
        }
      }
    }
  }
  for (i64 r = 0; r < s.rows; r++) {
    for (i64 i = 0; i < s.a_size(); i++) dA[i] += part_a[r * s.a_size() + i];
    for (i64 h = 0; h < s.H; h++) dD[h] += part_d[r * s.H + h];
  }
}

// Forward of the Mamba-2 scan in the chunked form (see scan_backward_chunked for the equations):
// per chunk Y = (L . C B^T) Z + diag(exp lcs) C S0^T + D X and S1 = e_last S0 + Z^T diag(w) B, all
// small dense products; the state at every chunk start is saved ([N][P] per head) for backward.
template <typename T>
void scan_forward_chunked(T* y, T* states, const T* x, const T* dt, const T* A, const T* Bm, const T* Cm, const T* D,
                          const ScanShape& s) {
  const i64 N = s.N, P = s.P, H = s.H, G = s.groups(), nc = s.nchunks(), Q = s.chunk, TT = s.T;
  const i64 ldx = s.ld_x, ldy = s.ld_y, ldbc = s.ld_bc, lddt = s.ld_dt;
#pragma omp parallel
  {
    std::vector<T> Gm(Q * Q), Mm(Q * Q), Bt(N * Q), Z(Q * P), Yb(Q * P), Yo(Q * P), WB(Q * N), S(N * P), lcs(Q), ee(Q);
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < s.rows * G; task++) {
      const i64 r = task / G, g = task % G;
      const i64 h0 = g * H / G, h1 = (g + 1) * H / G;
      for (i64 h = h0; h < h1; h++) std::fill(states + (r * H + h) * nc * N * P, states + ((r * H + h) * nc + 1) * N * P, T(0));
      for (i64 c = 0; c < nc; c++) {
        const i64 t0 = c * Q, q = std::min(TT, t0 + Q) - t0, row0 = r * TT + t0;
        const T* Bc = Bm + row0 * ldbc;
        const T* Cc = Cm + row0 * ldbc;
        for (i64 t = 0; t < q; t++)
          for (i64 n = 0; n < N; n++) Bt[n * q + t] = Bc[t * ldbc + n];
        std::fill(Gm.begin(), Gm.begin() + q * q, T(0));
        mm_acc(Gm.data(), q, Cc, ldbc, 1, Bt.data(), q, q, N, q);  // G = C B^T, shared by the heads
        for (i64 h = h0; h < h1; h++) {
          const T Ah = A[h], Dh = D[h];
          const T* xh = x + row0 * ldx + h * P;
          const T* S0 = states + ((r * H + h) * nc + c) * N * P;
          T acc = 0;
          for (i64 t = 0; t < q; t++) {
            const T d = dt[(row0 + t) * lddt + h];
            acc += d * Ah;
            lcs[t] = acc;
            ee[t] = std::exp(acc);
            for (i64 p = 0; p < P; p++) Z[t * P + p] = d * xh[t * ldx + p];
          }
          for (i64 t = 0; t < q; t++) {
            T* mr = Mm.data() + t * q;
            const T* gr = Gm.data() + t * q;
            const T lt = lcs[t];
#pragma omp simd
            for (i64 u = 0; u <= t; u++) mr[u] = vexp(lt - lcs[u]) * gr[u];
            for (i64 u = t + 1; u < q; u++) mr[u] = T(0);
          }
          std::fill(Yb.begin(), Yb.begin() + q * P, T(0));
          mm_acc(Yb.data(), P, Mm.data(), q, 1, Z.data(), P, q, q, P);  // (L . C B^T) Z
          std::fill(Yo.begin(), Yo.begin() + q * P, T(0));
          mm_acc(Yo.data(), P, Cc, ldbc, 1, S0, P, q, N, P);  // C S0^T
          for (i64 t = 0; t < q; t++) {
            T* yt = y + (row0 + t) * ldy + h * P;
            const T* xt = xh + t * ldx;
            for (i64 p = 0; p < P; p++) yt[p] = Yb[t * P + p] + ee[t] * Yo[t * P + p] + Dh * xt[p];
          }
          if (c + 1 == nc) continue;
          // Next chunk's start state: e_last S0 + Z^T diag(w) B, stored [N][P].
          const T last = lcs[q - 1], elast = ee[q - 1];
          for (i64 t = 0; t < q; t++) {
            const T w = std::exp(last - lcs[t]);
            for (i64 n = 0; n < N; n++) WB[t * N + n] = w * Bc[t * ldbc + n];
          }
          T* S1 = states + ((r * H + h) * nc + c + 1) * N * P;
          for (i64 i = 0; i < N * P; i++) S1[i] = elast * S0[i];
          mm_acc(S1, P, WB.data(), 1, N, Z.data(), P, N, q, P);
        }
      }
    }
  }
}

// Backward of the Mamba-2 scan in the chunked "state space duality" form (the model reference
// section 4.6), for a scalar decay per head. Within a chunk of q steps starting from the saved
// state S0 (lcs = inclusive cumsum of dt*A, Z = dt*x, L[t,s] = exp(lcs_t - lcs_s) for s <= t):
//   Y  = (L . C B^T) Z + diag(exp lcs) C S0^T + D X
//   S1 = exp(lcs_last) S0 + Z^T diag(exp(lcs_last - lcs)) B
// so every gradient is a small dense product (q x q, q x 64) instead of a per-step recurrence; the
// gradient of S0 is carried to the previous chunk. B and C are shared by the heads, so C B^T is
// formed once per (row, chunk) for a task's heads.
template <typename T>
void scan_backward_chunked(T* dx, T* ddt, T* dA, T* dB, T* dC, T* dD, const T* dy, const T* states, const T* x,
                           const T* dt, const T* A, const T* Bm, const T* Cm, const T* D, const ScanShape& s) {
  const i64 N = s.N, P = s.P, H = s.H, G = s.groups(), nc = s.nchunks(), Q = s.chunk, TT = s.T;
  const i64 ldx = s.ld_x, ldy = s.ld_y, ldbc = s.ld_bc, lddt = s.ld_dt;
  const i64 tasks = s.rows * G;
  std::vector<T> part_bc((size_t)(tasks * TT * 2 * N), T(0));  // per task: [T, dB | dC]
  std::vector<T> part_a((size_t)(s.rows * H), T(0)), part_d((size_t)(s.rows * H), T(0));
#pragma omp parallel
  {
    std::vector<T> Gm(Q * Q), Lm(Q * Q), Mm(Q * Q), dM(Q * Q), dG(Q * Q), Bt(N * Q), Zt(P * Q), Z(Q * P), dZ(Q * P),
        EdY(Q * P), Yoff(Q * P), Kb(Q * P), WZ(Q * P), S0pn(P * N), dSt(N * P), dSn(P * N), lcs(Q), dl(Q), ee(Q), ww(Q),
        rc(Q);
    std::vector<T> dS;
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < tasks; task++) {
      const i64 r = task / G, g = task % G;
      const i64 h0 = g * H / G, h1 = (g + 1) * H / G, nh = h1 - h0;
      T* pbc = part_bc.data() + task * TT * 2 * N;
      dS.assign((size_t)(nh * P * N), T(0));
      for (i64 c = nc - 1; c >= 0; c--) {
        const i64 t0 = c * Q, q = std::min(TT, t0 + Q) - t0, row0 = r * TT + t0;
        const T* Bc = Bm + row0 * ldbc;
        const T* Cc = Cm + row0 * ldbc;
        T* pb = pbc + t0 * 2 * N;
        for (i64 t = 0; t < q; t++)
          for (i64 n = 0; n < N; n++) Bt[n * q + t] = Bc[t * ldbc + n];
        std::fill(Gm.begin(), Gm.begin() + q * q, T(0));
        mm_acc(Gm.data(), q, Cc, ldbc, 1, Bt.data(), q, q, N, q);  // G = C B^T
        for (i64 h = h0; h < h1; h++) {
          const T Ah = A[h], Dh = D[h];
          const T* xh = x + row0 * ldx + h * P;
          const T* dyh = dy + row0 * ldy + h * P;
          const T* S0 = states + ((r * H + h) * nc + c) * N * P;  // [N][P]
          T* dS1 = dS.data() + (h - h0) * P * N;                   // [P][N], gradient of the chunk's end state
          T acc = 0;
          for (i64 t = 0; t < q; t++) {
            acc += dt[(row0 + t) * lddt + h] * Ah;
            lcs[t] = acc;
            ee[t] = std::exp(acc);
            dl[t] = 0;
          }
          const T last = lcs[q - 1], elast = ee[q - 1];
          for (i64 t = 0; t < q; t++) {
            ww[t] = std::exp(last - lcs[t]);
            const T d = dt[(row0 + t) * lddt + h];
            for (i64 p = 0; p < P; p++) {
              const T z = d * xh[t * ldx + p];
              Z[t * P + p] = z;
              Zt[p * q + t] = z;
            }
          }
          for (i64 t = 0; t < q; t++) {
            T* lr = Lm.data() + t * q;
            T* mr = Mm.data() + t * q;
            const T* gr = Gm.data() + t * q;
            const T lt = lcs[t];
#pragma omp simd
            for (i64 u = 0; u <= t; u++) {
              lr[u] = vexp(lt - lcs[u]);
              mr[u] = lr[u] * gr[u];
            }
            for (i64 u = t + 1; u < q; u++) lr[u] = mr[u] = T(0);
          }
          std::fill(dM.begin(), dM.begin() + q * q, T(0));
          mm_acc(dM.data(), q, dyh, ldy, 1, Zt.data(), q, q, P, q);  // dM = dY Z^T
          std::fill(dZ.begin(), dZ.begin() + q * P, T(0));
          mm_acc(dZ.data(), P, Mm.data(), 1, q, dyh, ldy, q, q, P);  // dZ = M^T dY
          for (i64 t = 0; t < q; t++) {
            const T* dmr = dM.data() + t * q;
            const T* lr = Lm.data() + t * q;
            const T* mr = Mm.data() + t * q;
            T* dgr = dG.data() + t * q;
            T rowsum = 0;
#pragma omp simd reduction(+ : rowsum)
            for (i64 u = 0; u < q; u++) {
              dgr[u] = dmr[u] * lr[u];
              const T tt = dmr[u] * mr[u];  // d(lcs_t - lcs_u) through L (zero above the diagonal)
              rowsum += tt;
              dl[u] -= tt;
            }
            dl[t] += rowsum;
          }
          mm_acc(pb + N, 2 * N, dG.data(), q, 1, Bc, ldbc, q, q, N);  // dC += dG B
          mm_acc(pb, 2 * N, dG.data(), 1, q, Cc, ldbc, q, q, N);      // dB += dG^T C
          // State entering the chunk: Yoff = diag(e) C S0^T.
          for (i64 t = 0; t < q; t++)
            for (i64 p = 0; p < P; p++) EdY[t * P + p] = ee[t] * dyh[t * ldy + p];
          for (i64 n = 0; n < N; n++)
            for (i64 p = 0; p < P; p++) S0pn[p * N + n] = S0[n * P + p];
          mm_acc(pb + N, 2 * N, EdY.data(), P, 1, S0pn.data(), N, q, P, N);  // dC += diag(e) dY S0
          for (i64 i = 0; i < P * N; i++) dSn[i] = elast * dS1[i];
          mm_acc(dSn.data(), N, EdY.data(), 1, P, Cc, ldbc, P, q, N);  // dS0 += (diag(e) dY)^T C
          std::fill(Yoff.begin(), Yoff.begin() + q * P, T(0));
          mm_acc(Yoff.data(), P, Cc, ldbc, 1, S0, P, q, N, P);  // C S0^T
          for (i64 t = 0; t < q; t++) {
            T v = 0;
            for (i64 p = 0; p < P; p++) v += dyh[t * ldy + p] * Yoff[t * P + p];
            dl[t] += ee[t] * v;
          }
          // State leaving the chunk: S1 = e_last S0 + Z^T diag(w) B.
          T dlast = 0;
          for (i64 p = 0; p < P; p++)
            for (i64 n = 0; n < N; n++) {
              dlast += dS1[p * N + n] * S0[n * P + p];
              dSt[n * P + p] = dS1[p * N + n];
            }
          dlast *= elast;
          std::fill(Kb.begin(), Kb.begin() + q * P, T(0));
          mm_acc(Kb.data(), P, Bc, ldbc, 1, dSt.data(), P, q, N, P);  // K = B dS1^T
          for (i64 u = 0; u < q; u++) {
            T dw = 0;
            for (i64 p = 0; p < P; p++) {
              dw += Z[u * P + p] * Kb[u * P + p];
              dZ[u * P + p] += ww[u] * Kb[u * P + p];
              WZ[u * P + p] = ww[u] * Z[u * P + p];
            }
            dlast += ww[u] * dw;
            dl[u] -= ww[u] * dw;
          }
          mm_acc(pb, 2 * N, WZ.data(), P, 1, dS1, N, q, P, N);  // dB += diag(w) Z dS1
          dl[q - 1] += dlast;
          // Z = dt x, lcs = cumsum(dt A), y += D x.
          T run = 0;
          for (i64 t = q - 1; t >= 0; t--) {
            run += dl[t];
            rc[t] = run;
          }
          T dAh = 0, dDh = 0;
          for (i64 t = 0; t < q; t++) {
            const T d = dt[(row0 + t) * lddt + h];
            const T* xt = xh + t * ldx;
            const T* gy = dyh + t * ldy;
            T* dxt = dx + (row0 + t) * ldx + h * P;
            T dd = Ah * rc[t];
            for (i64 p = 0; p < P; p++) {
              dxt[p] += d * dZ[t * P + p] + Dh * gy[p];
              dd += dZ[t * P + p] * xt[p];
              dDh += gy[p] * xt[p];
            }
            ddt[(row0 + t) * lddt + h] += dd;
            dAh += d * rc[t];
          }
          part_a[r * H + h] += dAh;
          part_d[r * H + h] += dDh;
          std::copy(dSn.begin(), dSn.end(), dS1);
        }
      }
    }
#pragma omp for schedule(static)
    for (i64 rt = 0; rt < s.rows * TT; rt++) {
      const i64 r = rt / TT, t = rt % TT;
      T* dBt = dB + rt * ldbc;
      T* dCt = dC + rt * ldbc;
      for (i64 g = 0; g < G; g++) {
        const T* pb = part_bc.data() + ((r * G + g) * TT + t) * 2 * N;
        for (i64 n = 0; n < N; n++) {
          dBt[n] += pb[n];
          dCt[n] += pb[N + n];
        }
      }
    }
  }
  for (i64 r = 0; r < s.rows; r++)
    for (i64 h = 0; h < H; h++) {
      dA[h] += part_a[r * H + h];
      dD[h] += part_d[r * H + h];
    }
}

// The op: Mamba-2's scalar decay takes the chunked matrix form, Mamba-1 the recurrence. Both
// save the same chunk-start states ([rows, blocks, nchunks, N, lanes] with a block = a head for
// Mamba-2), so either backward can follow either forward.
template <typename T>
void scan_forward(T* y, T* states, const T* x, const T* dt, const T* A, const T* Bm, const T* Cm, const T* D,
                  const ScanShape& s) {
  if (s.per_lane()) scan_forward_recurrent(y, states, x, dt, A, Bm, Cm, D, s);
  else scan_forward_chunked(y, states, x, dt, A, Bm, Cm, D, s);
}

template <typename T>
void scan_backward(T* dx, T* ddt, T* dA, T* dB, T* dC, T* dD, const T* dy, const T* states, const T* x, const T* dt,
                   const T* A, const T* Bm, const T* Cm, const T* D, const ScanShape& s) {
  if (s.per_lane()) scan_backward_recurrent(dx, ddt, dA, dB, dC, dD, dy, states, x, dt, A, Bm, Cm, D, s);
  else scan_backward_chunked(dx, ddt, dA, dB, dC, dD, dy, states, x, dt, A, Bm, Cm, D, s);
}

}  // namespace gm

// Selective scan (the SSM recurrence of Mamba-1 and Mamba-2), one kernel for both:
//   S_t = exp(dt_t * A) (.) S_{t-1} + dt_t * x_t (outer) B_t        S: [P, N] per (row, head)
//   y_t = S_t C_t + D * x_t
// Mamba-2: H heads of P = headdim channels, A one scalar per head (the caller expands it to [H, N]),
// dt per head, B and C shared by all heads (ngroups = 1). Mamba-1: every channel is a head (P = 1)
// with its own A[c, :] and dt. B and C are always [rows, T, N] and shared across heads.
//
// Chunked, in the style of the reference CUDA kernels: forward keeps only the state at the start of
// each chunk of Q steps; backward walks the chunks last to first, recomputes the states inside a
// chunk from its saved start state, then runs the reverse recursion dS_t = gy_t C_t + a_{t+1} dS_{t+1}.
// The inner loops run over the state dimension N (contiguous, vectorised); threads take (row, head
// group) tasks. Gradients shared across heads (dB, dC) and across rows (dA, dD) go through per-task
// partial buffers reduced in a fixed order, so results do not depend on scheduling.
#pragma once
#include <algorithm>
#include <vector>

#include "common.h"

namespace gm {

struct ScanShape {
  i64 rows, T, H, P, N;
  i64 chunk;                   // Q: steps between saved states
  i64 ld_x, ld_dt, ld_bc, ld_y;  // leading dimensions (elements between time steps)
  i64 nchunks() const { return (T + chunk - 1) / chunk; }
  // Heads per task: a fixed split (independent of the thread count) keeps the partial sums fixed.
  i64 groups() const { return std::min<i64>(H, 16); }
  i64 states_size() const { return rows * H * nchunks() * P * N; }
};

// x, dt, B, C, y are [rows * T, ld] with head h reading x columns [h*P, h*P + P) and dt column h.
// A is [H, N], D is [H]. states receives [rows, H, nchunks, P, N] (state at each chunk start).
template <typename T>
void scan_forward(T* y, T* states, const T* x, const T* dt, const T* A, const T* Bm, const T* Cm, const T* D,
                  const ScanShape& s) {
  const i64 P = s.P, N = s.N, G = s.groups(), nc = s.nchunks();
#pragma omp parallel
  {
    std::vector<T> S(P * N), a(N);
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < s.rows * G; task++) {
      const i64 r = task / G, g = task % G;
      const i64 h0 = g * s.H / G, h1 = (g + 1) * s.H / G;
      for (i64 h = h0; h < h1; h++) {
        std::fill(S.begin(), S.end(), T(0));
        const T* Ah = A + h * N;
        for (i64 t = 0; t < s.T; t++) {
          if (t % s.chunk == 0) std::copy(S.begin(), S.end(), states + (((r * s.H + h) * nc + t / s.chunk) * P * N));
          const i64 row = r * s.T + t;
          const T d = dt[row * s.ld_dt + h];
          const T* xt = x + row * s.ld_x + h * P;
          const T* Bt = Bm + row * s.ld_bc;
          const T* Ct = Cm + row * s.ld_bc;
          T* yt = y + row * s.ld_y + h * P;
          for (i64 n = 0; n < N; n++) a[n] = std::exp(d * Ah[n]);
          for (i64 p = 0; p < P; p++) {
            T* Sp = S.data() + p * N;
            const T dx = d * xt[p];
            T acc = 0;
            for (i64 n = 0; n < N; n++) {
              Sp[n] = a[n] * Sp[n] + dx * Bt[n];
              acc += Sp[n] * Ct[n];
            }
            yt[p] = acc + D[h] * xt[p];
          }
        }
      }
    }
  }
}

// Accumulates into dx, ddt (same layouts as x, dt), dA [H, N], dB, dC (ld_bc) and dD [H].
template <typename T>
void scan_backward(T* dx, T* ddt, T* dA, T* dB, T* dC, T* dD, const T* dy, const T* states, const T* x, const T* dt,
                   const T* A, const T* Bm, const T* Cm, const T* D, const ScanShape& s) {
  const i64 P = s.P, N = s.N, G = s.groups(), nc = s.nchunks(), Q = s.chunk;
  const i64 tasks = s.rows * G;
  std::vector<T> part_bc((size_t)(tasks * s.T * 2 * N), T(0));   // per task: [T, dB | dC]
  std::vector<T> part_a((size_t)(s.rows * s.H * N), T(0));       // per row: dA
  std::vector<T> part_d((size_t)(s.rows * s.H), T(0));           // per row: dD
#pragma omp parallel
  {
    std::vector<T> dS(P * N), Sbuf(Q * P * N), a(N), rr(N), qq(N), dc(N);
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < tasks; task++) {
      const i64 r = task / G, g = task % G;
      const i64 h0 = g * s.H / G, h1 = (g + 1) * s.H / G;
      T* pbc = part_bc.data() + task * s.T * 2 * N;
      for (i64 h = h0; h < h1; h++) {
        const T* Ah = A + h * N;
        T* dAh = part_a.data() + (r * s.H + h) * N;
        T dDh = 0;
        std::fill(dS.begin(), dS.end(), T(0));
        for (i64 c = nc - 1; c >= 0; c--) {
          const i64 t0 = c * Q, t1 = std::min(s.T, t0 + Q);
          const T* S0 = states + ((r * s.H + h) * nc + c) * P * N;
          // Recompute the states of this chunk from its start state.
          for (i64 t = t0; t < t1; t++) {
            const i64 row = r * s.T + t;
            const T d = dt[row * s.ld_dt + h];
            const T* xt = x + row * s.ld_x + h * P;
            const T* Bt = Bm + row * s.ld_bc;
            const T* prev = t == t0 ? S0 : Sbuf.data() + (t - t0 - 1) * P * N;
            T* cur = Sbuf.data() + (t - t0) * P * N;
            for (i64 n = 0; n < N; n++) a[n] = std::exp(d * Ah[n]);
            for (i64 p = 0; p < P; p++) {
              const T dxp = d * xt[p];
              for (i64 n = 0; n < N; n++) cur[p * N + n] = a[n] * prev[p * N + n] + dxp * Bt[n];
            }
          }
          for (i64 t = t1 - 1; t >= t0; t--) {
            const i64 row = r * s.T + t;
            const T d = dt[row * s.ld_dt + h];
            const T* xt = x + row * s.ld_x + h * P;
            const T* Bt = Bm + row * s.ld_bc;
            const T* Ct = Cm + row * s.ld_bc;
            const T* gy = dy + row * s.ld_y + h * P;
            const T* St = Sbuf.data() + (t - t0) * P * N;
            const T* Sprev = t == t0 ? S0 : St - P * N;
            T* dxt = dx + row * s.ld_x + h * P;
            for (i64 n = 0; n < N; n++) {
              a[n] = std::exp(d * Ah[n]);
              rr[n] = qq[n] = dc[n] = 0;
            }
            for (i64 p = 0; p < P; p++) {
              T* dSp = dS.data() + p * N;
              const T* Sp = St + p * N;
              const T* Spp = Sprev + p * N;
              const T gyp = gy[p], xp = xt[p];
              T accx = 0;
              for (i64 n = 0; n < N; n++) {
                const T v = dSp[n] + gyp * Ct[n];  // dS_t
                dc[n] += Sp[n] * gyp;
                accx += v * Bt[n];
                rr[n] += v * xp;
                qq[n] += v * Spp[n];
                dSp[n] = v * a[n];  // becomes a_t dS_t, the carried term of dS_{t-1}
              }
              dxt[p] += d * accx + D[h] * gyp;
              dDh += gyp * xp;
            }
            T dd = 0;
            T* pb = pbc + t * 2 * N;
            for (i64 n = 0; n < N; n++) {
              dd += Bt[n] * rr[n] + Ah[n] * a[n] * qq[n];
              dAh[n] += d * a[n] * qq[n];
              pb[n] += d * rr[n];
              pb[N + n] += dc[n];
            }
            ddt[row * s.ld_dt + h] += dd;
          }
        }
        part_d[r * s.H + h] += dDh;
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
    for (i64 i = 0; i < s.H * N; i++) dA[i] += part_a[r * s.H * N + i];
    for (i64 h = 0; h < s.H; h++) dD[h] += part_d[r * s.H + h];
  }
}

}  // namespace gm

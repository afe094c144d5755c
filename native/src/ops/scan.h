// Selective scan (the SSM recurrence of Mamba-1 and Mamba-2), one kernel for both:
//   S_t = exp(dt_t * A) (.) S_{t-1} + dt_t * x_t (outer) B_t        y_t = S_t C_t + D * x_t
// over C = H * P channels, N states per channel, B and C shared by all channels (ngroups = 1).
// Where A and dt vary is the only difference between the two mixers:
//   Mamba-2 (P > 1): H heads of P channels; A is one scalar per head, dt one per (step, head), so the
//                    decay is one scalar per (step, head). A has shape [H].
//   Mamba-1 (P = 1): every channel has its own dt and its own A[c, :] over the N states. A is [H, N].
//
// Channels are processed in blocks of W contiguous "lanes" (a whole head for Mamba-2, 16 channels for
// Mamba-1) with the state stored [N][W], so every inner loop runs over lanes: contiguous,
// vectorised, and free of horizontal sums in the forward pass.
//
// Chunked, like the reference CUDA kernels: forward keeps only the state at the start of each chunk
// of Q steps; backward walks the chunks last to first, recomputes the states inside a chunk from its
// saved start state, then runs the reverse recursion dS_t = gy_t C_t + a_{t+1} dS_{t+1}.
// Threads take (row, block group) tasks. Gradients shared across blocks (dB, dC) and rows (dA, dD)
// go through per-task partial buffers reduced in a fixed order, so results do not depend on
// scheduling or on the number of threads.
#pragma once
#include <algorithm>
#include <vector>

#include "common.h"

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
template <typename T>
struct Block {
  i64 c0, W;  // first channel, lanes in this block (the last Mamba-1 block may be narrower)
  i64 head;   // Mamba-2: the block's head
};

template <typename T>
inline void load_dt(const ScanShape& s, const Block<T>& b, const T* dt, i64 row, T* d) {
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
inline void decay_per_lane(const ScanShape& s, const Block<T>& b, const T* At, const T* d, T* a) {
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
void scan_forward(T* y, T* states, const T* x, const T* dt, const T* A, const T* Bm, const T* Cm, const T* D,
                  const ScanShape& s) {
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
        Block<T> b{bi * WL, std::min(WL, s.channels() - bi * WL), bi * WL / s.P};
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
void scan_backward(T* dx, T* ddt, T* dA, T* dB, T* dC, T* dD, const T* dy, const T* states, const T* x, const T* dt,
                   const T* A, const T* Bm, const T* Cm, const T* D, const ScanShape& s) {
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
        Block<T> b{bi * WL, std::min(WL, s.channels() - bi * WL), bi * WL / s.P};
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

}  // namespace gm

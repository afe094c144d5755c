// Micro-benchmark of the selective scan and of the GEMMs of a GeneMamba layer (native/build/gm_bench,
// run by `pnpm bench:engine`). Prints one JSON line per kernel with time, FLOP and byte counts.
//
// Scan counts per (row, head, step) with P channels and N states (fp32):
//   forward : S = a*S + (dt*x) B  (3 FLOP per state) and y = S C (2 per state)     -> 5 P N FLOP
//   backward: recompute S (3), dS = dS + gy C (2), dC (2), dx (2), dB (2), d(dt)/dA (2), decay (1)
//                                                                                 -> 14 P N FLOP
//   bytes   : forward reads x, dt, B, C and writes y: 4 (2P + 2N + 1); backward reads x, dt, B, C, dy,
//             the chunk-start state once per chunk, and writes dx, ddt, dB, dC: about twice that.
// The state (P x N fp32 = 16 kB for Mamba-2) stays in L1 cache, so the scan is compute-bound.
// Mamba-2 runs the chunked matrix form, whose FLOP count is within 20% of the recurrence's for a
// chunk of 64 (docs/engine.md); the GFLOP/s printed are the recurrence's counts over the time.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "ops/common.h"
#include "ops/linear.h"
#include "ops/scan.h"

using namespace gm;
using clk = std::chrono::steady_clock;

template <typename F>
double best_of(int reps, F&& f) {
  double best = 1e30;
  for (int i = 0; i < reps; i++) {
    auto t0 = clk::now();
    f();
    best = std::min(best, std::chrono::duration<double>(clk::now() - t0).count());
  }
  return best;
}

static void fill(std::vector<float>& v, float lo, float hi, std::mt19937& g) {
  std::uniform_real_distribution<float> u(lo, hi);
  for (float& x : v) x = u(g);
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : max_threads();
  const i64 L = argc > 2 ? std::atoll(argv[2]) : 2048;
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  std::mt19937 g(1);
  struct Case {
    const char* name;
    i64 H, P, N;
  } cases[] = {{"scan_mamba2_d512", 16, 64, 64}, {"scan_mamba1_d512", 1024, 1, 16}};
  for (const Case& c : cases) {
    const i64 R = 2;  // the two directions of one cell
    const i64 HP = c.H * c.P;
    const i64 Q = std::getenv("GM_CHUNK") ? std::atoll(std::getenv("GM_CHUNK")) : 64;  // the model default
    ScanShape s{R, L, c.H, c.P, c.N, Q, HP, c.H, 2 * c.N, HP};
    std::vector<float> x(R * L * HP), dt(R * L * c.H), A(s.a_size()), BC(R * L * 2 * c.N), D(c.H), y(R * L * HP),
        st(s.states_size());
    fill(x, -1, 1, g), fill(dt, 0.001f, 0.1f, g), fill(A, -8, -1, g), fill(BC, -1, 1, g), fill(D, 0.5f, 1.5f, g);
    std::vector<float> dy(y.size()), dx(x.size()), ddt(dt.size()), dA(A.size()), dBC(BC.size()), dD(D.size());
    fill(dy, -1, 1, g);
    const double fwd = best_of(5, [&] { scan_forward(y.data(), st.data(), x.data(), dt.data(), A.data(), BC.data(), BC.data() + c.N, D.data(), s); });
    const double bwd = best_of(5, [&] {
      scan_backward(dx.data(), ddt.data(), dA.data(), dBC.data(), dBC.data() + c.N, dD.data(), dy.data(), st.data(), x.data(),
                    dt.data(), A.data(), BC.data(), BC.data() + c.N, D.data(), s);
    });
    const double steps = (double)R * L * c.H, pn = (double)c.P * c.N;
    const double fbytes = steps * 4.0 * (2 * c.P + 2 * c.N + 1), bbytes = 2 * fbytes;
    std::printf("{\"kernel\":\"%s\",\"threads\":%d,\"len\":%lld,\"fwd_ms\":%.3f,\"bwd_ms\":%.3f,\"fwd_gflops\":%.2f,\"bwd_gflops\":%.2f,"
                "\"fwd_gbytes_s\":%.2f,\"bwd_gbytes_s\":%.2f,\"fwd_flop_per_byte\":%.1f}\n",
                c.name, threads, (long long)L, fwd * 1e3, bwd * 1e3, 5 * pn * steps / fwd / 1e9, 14 * pn * steps / bwd / 1e9,
                fbytes / fwd / 1e9, bbytes / bwd / 1e9, 5 * pn * steps / fbytes);
  }
  // The GEMMs of one 24l-512d layer for one cell (both directions: M = 2L rows).
  struct Gemm {
    const char* name;
    i64 M, K, N;
  } gemms[] = {{"gemm_in_proj_fwd", 2 * L, 512, 2192}, {"gemm_out_proj_fwd", 2 * L, 1024, 512}, {"gemm_lm_head_fwd", L, 512, 25426}};
  for (const Gemm& m : gemms) {
    std::vector<float> a(m.M * m.K), w(m.N * m.K), o(m.M * m.N);
    fill(a, -1, 1, g), fill(w, -1, 1, g);
    const double t = best_of(5, [&] { linear_forward(o.data(), m.N, a.data(), m.K, w.data(), (const float*)nullptr, m.M, m.K, m.N); });
    std::printf("{\"kernel\":\"%s\",\"threads\":%d,\"m\":%lld,\"k\":%lld,\"n\":%lld,\"ms\":%.3f,\"gflops\":%.2f}\n", m.name, threads,
                (long long)m.M, (long long)m.K, (long long)m.N, t * 1e3, 2.0 * m.M * m.K * m.N / t / 1e9);
  }
  return 0;
}

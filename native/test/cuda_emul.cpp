// CPU emulation of the CUDA kernels (gm_cuda_emul): runs the kernel bodies of native/cuda/*.cuh,
// compiled by g++, over every (block, thread) index of the grid their launchers use, in grid order
// (blocks x, then threads x), with the block reductions replaced by the same butterfly tree on the
// host; then compares outputs and gradients with the CPU ops of native/src/ops/*.h (and, for the
// reversal, which the CPU engine does inline, with the loops of native/src/model.cpp).
//
// float32: max |kernel - cpu| / max |cpu| <= 1e-5 per tensor. bf16 storage: the CPU op runs in
// float32 on the bf16-rounded inputs; tolerance 1e-2 (a bf16 value is within 2^-9 = 2e-3 of its
// float; the outputs and any accumulated gradient are rounded once more).
//
// What this does not cover: the __global__ wrappers' own lines (they only pass this_thread() and the
// arguments on; nvcc compiles them in packages/engine/test/cuda-kernels.test.ts), shared-memory
// races and anything about real GPU speed or memory. Prints one JSON line per check and a summary;
// exits 1 on any failure. packages/engine/test/cuda-kernels.test.ts runs it.
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ops/adamw.h"
#include "ops/combine.h"
#include "ops/conv1d.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/gated_rmsnorm.h"
#include "ops/global_norm.h"
#include "ops/rmsnorm.h"
#include "ops/scan.h"
#include "ops/silu.h"
#include "ops/softplus.h"
// the kernel bodies (plain C++ under g++) and the grid emulation
#include "cuda_emul.h"

namespace cu = gm::cuda;
using gm::i64;
using Vec = std::vector<float>;
using cu::bf16;
using cu::emul::block_reduce;
using cu::emul::block_threads;
using cu::emul::run_blocks;
using cu::emul::run_grid;

// ---------------------------------------------------------------- data and storage types
static std::mt19937_64 rng(20240611);
static Vec randn(size_t n, float scale = 1.f, float shift = 0.f) {
  std::normal_distribution<float> nd(0.f, 1.f);
  Vec v(n);
  for (float& x : v) x = shift + scale * nd(rng);
  return v;
}
template <typename S>
static std::vector<S> store(const Vec& f) {
  std::vector<S> s(f.size());
  for (size_t i = 0; i < f.size(); i++) cu::put(&s[i], f[i]);
  return s;
}
template <typename S>
static Vec load(const std::vector<S>& s) {
  Vec f(s.size());
  for (size_t i = 0; i < s.size(); i++) f[i] = cu::get(&s[i]);
  return f;
}
// What the kernel will see: f rounded to S.
template <typename S>
static Vec rounded(const Vec& f) {
  return load(store<S>(f));
}
template <typename S>
static const char* dtype() {
  return sizeof(S) == 4 ? "f32" : "bf16";
}
template <typename S>
static double tol() {
  return sizeof(S) == 4 ? 1e-5 : 1e-2;
}

static int failures = 0, checks = 0;
static void report(const char* kernel, const char* dt, const std::string& cs, const char* output, double err, double tl) {
  checks++;
  const bool ok = err <= tl;  // false for NaN
  if (!ok) failures++;
  std::printf("{\"kernel\":\"%s\",\"dtype\":\"%s\",\"case\":\"%s\",\"output\":\"%s\",\"max_rel_err\":%.3e,\"tol\":%.0e,\"ok\":%s}\n",
              kernel, dt, cs.c_str(), output, err, tl, ok ? "true" : "false");
}
// max |a - b| / max |b| (0 when both are all zeros).
static double rel_err(const Vec& a, const Vec& b) {
  if (a.size() != b.size()) return INFINITY;
  double md = 0, mb = 0;
  bool nan = false;
  for (size_t i = 0; i < a.size(); i++) {
    const double d = std::fabs((double)a[i] - (double)b[i]);
    if (std::isnan(d)) nan = true;
    else md = std::max(md, d);
    mb = std::max(mb, std::fabs((double)b[i]));
  }
  if (nan) return NAN;
  return mb > 0 ? md / mb : md;
}
template <typename S>
static void compare(const char* kernel, const std::string& cs, const char* output, const Vec& got, const Vec& want) {
  report(kernel, dtype<S>(), cs, output, rel_err(got, want), tol<S>());
}
static std::string shape(std::initializer_list<std::pair<const char*, i64>> kv) {
  std::string s;
  for (auto& p : kv) s += (s.empty() ? "" : "_") + std::string(p.first) + std::to_string(p.second);
  return s;
}

// ---------------------------------------------------------------- embedding
template <typename S>
static void test_embedding() {
  const i64 V = 7, C = 37, M = 11;
  std::vector<std::int32_t> tok = {3, 1, 3, 0, 6, 3, 1, 2, 6, 6, 3};
  const Vec table = rounded<S>(randn(V * C)), dout = rounded<S>(randn(M * C)), dt0 = randn(V * C);
  const std::string cs = shape({{"V", V}, {"C", C}, {"M", M}});
  Vec ref(M * C);
  gm::embedding_forward(ref.data(), tok.data(), table.data(), M, C);
  std::vector<S> out(M * C), tab = store<S>(table);
  run_grid(cu::embedding_forward_geometry(M, C), [&](const cu::Thread& th) { cu::embedding_forward_body(th, out.data(), tok.data(), tab.data(), M, C); });
  compare<S>("embedding_forward", cs, "out", load(out), ref);
  Vec dref = dt0, dgot = dt0;
  gm::embedding_backward(dref.data(), dout.data(), tok.data(), M, C);
  const cu::EmbeddingPlan plan = cu::embedding_plan(tok.data(), M);
  const std::vector<S> dO = store<S>(dout);
  run_grid(cu::embedding_backward_geometry(plan.nseg(), C), [&](const cu::Thread& th) {
    cu::embedding_backward_body(th, dgot.data(), dO.data(), tok.data(), plan.order.data(), plan.seg_start.data(), plan.nseg(), C);
  });
  compare<S>("embedding_backward", cs, "dtable", dgot, dref);
}

// ---------------------------------------------------------------- RMSNorm, gated RMSNorm
template <typename S>
static void test_rmsnorm(i64 M, i64 C) {
  const std::string cs = shape({{"M", M}, {"C", C}});
  const Vec x = rounded<S>(randn(M * C)), w = rounded<S>(randn(C, 0.3f, 1.f)), g = rounded<S>(randn(M * C));
  const Vec dx0 = rounded<S>(randn(M * C)), dw0 = randn(C);
  Vec out(M * C), rstd(M);
  gm::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), M, C, 1e-5f);
  Vec dx = dx0, dw = dw0;
  gm::rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), rstd.data(), M, C);

  const std::vector<S> X = store<S>(x), W = store<S>(w), G = store<S>(g);
  std::vector<S> O(M * C), DX = store<S>(dx0);
  Vec R(M), DW = dw0, scratch(cu::rmsnorm_backward_scratch(M, C));
  const cu::Geometry gr = cu::geometry_rows(M, C);
  run_blocks(gr, [&](int bx, int by) {
    const float ss = block_reduce<float>(gr, bx, by, cu::SumOp(), [&](const cu::Thread& th) { return cu::rmsnorm_forward_partial(th, X.data(), C); });
    block_threads(gr, bx, by, [&](const cu::Thread& th) { cu::rmsnorm_forward_finish(th, ss, O.data(), R.data(), X.data(), W.data(), C, 1e-5f); });
  });
  run_blocks(gr, [&](int bx, int by) {
    const float dot = block_reduce<float>(gr, bx, by, cu::SumOp(), [&](const cu::Thread& th) { return cu::rmsnorm_backward_partial(th, G.data(), X.data(), W.data(), C); });
    block_threads(gr, bx, by, [&](const cu::Thread& th) { cu::rmsnorm_backward_finish(th, dot, DX.data(), G.data(), X.data(), W.data(), R.data(), C); });
  });
  run_grid(cu::colsum_partial_geometry(M, C), [&](const cu::Thread& th) { cu::rmsnorm_dw_partial(th, scratch.data(), G.data(), X.data(), R.data(), M, C); });
  run_grid(cu::colsum_finish_geometry(C), [&](const cu::Thread& th) { cu::colsum_finish_body(th, DW.data(), scratch.data(), cu::colsum_blocks(M), C); });
  compare<S>("rmsnorm_forward", cs, "out", load(O), out);
  compare<S>("rmsnorm_forward", cs, "rstd", R, rstd);
  compare<S>("rmsnorm_backward", cs, "dx", load(DX), dx);
  compare<S>("rmsnorm_backward", cs, "dw", DW, dw);
}

template <typename S>
static void test_gated_rmsnorm(i64 M, i64 C, i64 ldz) {
  const std::string cs = shape({{"M", M}, {"C", C}, {"ldz", ldz}});
  const Vec y = rounded<S>(randn(M * C)), z = rounded<S>(randn(M * ldz)), w = rounded<S>(randn(C, 0.3f, 1.f));
  const Vec g = rounded<S>(randn(M * C)), dy0 = rounded<S>(randn(M * C)), dz0 = rounded<S>(randn(M * ldz)), dw0 = randn(C);
  Vec out(M * C), rstd(M), dy = dy0, dz = dz0, dw = dw0;
  gm::gated_rmsnorm_forward(out.data(), rstd.data(), y.data(), z.data(), ldz, w.data(), M, C, 1e-5f);
  gm::gated_rmsnorm_backward(dy.data(), dz.data(), ldz, dw.data(), g.data(), y.data(), z.data(), ldz, w.data(), rstd.data(), M, C);

  const std::vector<S> Y = store<S>(y), Z = store<S>(z), W = store<S>(w), G = store<S>(g);
  std::vector<S> O(M * C), O2(M * C), DY = store<S>(dy0), DZ = store<S>(dz0);
  Vec R(M), DW = dw0, scratch(cu::rmsnorm_backward_scratch(M, C));
  const cu::Geometry gr = cu::geometry_rows(M, C);
  for (int pass = 0; pass < 2; pass++) {  // with rstd, and without (the backward's recompute)
    run_blocks(gr, [&](int bx, int by) {
      const float ss = block_reduce<float>(gr, bx, by, cu::SumOp(), [&](const cu::Thread& th) { return cu::gated_rmsnorm_forward_partial(th, Y.data(), Z.data(), ldz, C); });
      block_threads(gr, bx, by, [&](const cu::Thread& th) {
        cu::gated_rmsnorm_forward_finish(th, ss, (pass ? O2 : O).data(), pass ? nullptr : R.data(), Y.data(), Z.data(), ldz, W.data(), C, 1e-5f);
      });
    });
  }
  run_blocks(gr, [&](int bx, int by) {
    const float dot = block_reduce<float>(gr, bx, by, cu::SumOp(), [&](const cu::Thread& th) { return cu::gated_rmsnorm_backward_partial(th, G.data(), Y.data(), Z.data(), ldz, W.data(), C); });
    block_threads(gr, bx, by, [&](const cu::Thread& th) {
      cu::gated_rmsnorm_backward_finish(th, dot, DY.data(), DZ.data(), ldz, G.data(), Y.data(), Z.data(), ldz, W.data(), R.data(), C);
    });
  });
  run_grid(cu::colsum_partial_geometry(M, C), [&](const cu::Thread& th) { cu::gated_rmsnorm_dw_partial(th, scratch.data(), G.data(), Y.data(), Z.data(), ldz, R.data(), M, C); });
  run_grid(cu::colsum_finish_geometry(C), [&](const cu::Thread& th) { cu::colsum_finish_body(th, DW.data(), scratch.data(), cu::colsum_blocks(M), C); });
  compare<S>("gated_rmsnorm_forward", cs, "out", load(O), out);
  compare<S>("gated_rmsnorm_forward", cs, "out_without_rstd", load(O2), out);
  compare<S>("gated_rmsnorm_forward", cs, "rstd", R, rstd);
  compare<S>("gated_rmsnorm_backward", cs, "dy", load(DY), dy);
  compare<S>("gated_rmsnorm_backward", cs, "dz", load(DZ), dz);
  compare<S>("gated_rmsnorm_backward", cs, "dw", DW, dw);
}

// ---------------------------------------------------------------- conv1d
// fused = the model's sequence around the op: input masked at pads, SiLU, output masked; backward
// from the gradient of the masked SiLU output, dx left alone at pads.
template <typename S>
static void test_conv1d(bool fused, i64 R, i64 Tn, i64 C, i64 K, std::vector<std::int32_t> lengths) {
  const i64 ldx = C + 5, ldo = C + 3, ldd = C + 5, ldg = C + 3;
  const std::string cs = std::string(fused ? "fused_silu_mask_" : "plain_") + shape({{"R", R}, {"T", Tn}, {"C", C}, {"K", K}});
  const Vec x = rounded<S>(randn(R * Tn * ldx)), w = rounded<S>(randn(C * K)), b = rounded<S>(randn(C));
  const Vec gout = rounded<S>(randn(R * Tn * ldg)), dx0 = rounded<S>(randn(R * Tn * ldd)), dw0 = randn(C * K), db0 = randn(C);
  const std::int32_t* len = fused ? lengths.data() : nullptr;
  auto valid = [&](i64 r, i64 t) { return !fused || t < lengths[(size_t)r]; };
  // CPU reference
  Vec xin = x;
  for (i64 r = 0; r < R; r++)
    for (i64 t = 0; t < Tn; t++)
      if (!valid(r, t))
        for (i64 c = 0; c < C; c++) xin[(r * Tn + t) * ldx + c] = 0.f;
  Vec pre(R * Tn * ldo, 0.f), act(R * Tn * C, 0.f);
  gm::conv1d_forward(pre.data(), ldo, xin.data(), ldx, w.data(), b.data(), R, Tn, C, K);
  if (fused) {
    gm::silu_forward(act.data(), C, pre.data(), ldo, R * Tn, C);
    for (i64 r = 0; r < R; r++)
      for (i64 t = 0; t < Tn; t++)
        if (!valid(r, t))
          for (i64 c = 0; c < C; c++) act[(r * Tn + t) * C + c] = 0.f;
  }
  Vec g = gout, dxr = dx0, dw = dw0, db = db0;
  if (fused) {
    Vec gm_(R * Tn * ldg, 0.f);
    for (i64 r = 0; r < R; r++)
      for (i64 t = 0; t < Tn; t++)
        if (!valid(r, t))
          for (i64 c = 0; c < C; c++) g[(r * Tn + t) * ldg + c] = 0.f;
    gm::silu_backward(gm_.data(), ldg, g.data(), ldg, rounded<S>(pre).data(), ldo, R * Tn, C);
    g = gm_;
    Vec tmp(R * Tn * ldd, 0.f);
    gm::conv1d_backward(tmp.data(), ldd, dw.data(), db.data(), g.data(), ldg, xin.data(), ldx, w.data(), R, Tn, C, K);
    for (i64 r = 0; r < R; r++)
      for (i64 t = 0; t < Tn; t++)
        if (valid(r, t))
          for (i64 c = 0; c < C; c++) dxr[(r * Tn + t) * ldd + c] += tmp[(r * Tn + t) * ldd + c];
  } else {
    gm::conv1d_backward(dxr.data(), ldd, dw.data(), db.data(), g.data(), ldg, xin.data(), ldx, w.data(), R, Tn, C, K);
  }
  // kernels
  const std::vector<S> X = store<S>(x), W = store<S>(w), Bv = store<S>(b), G = store<S>(gout);
  std::vector<S> O(R * Tn * ldo, S{}), A(R * Tn * C, S{}), DX = store<S>(dx0);
  Vec DW = dw0, DB = db0, scratch(cu::conv1d_backward_scratch(R, Tn, C, K));
  run_grid(cu::conv1d_geometry(R, Tn, C), [&](const cu::Thread& th) {
    cu::conv1d_forward_body(th, O.data(), ldo, fused ? A.data() : (S*)nullptr, C, X.data(), ldx, W.data(), Bv.data(), len, R, Tn, C, K);
  });
  const S* P = fused ? O.data() : nullptr;
  run_grid(cu::conv1d_geometry(R, Tn, C), [&](const cu::Thread& th) {
    cu::conv1d_backward_dx_body(th, DX.data(), ldd, G.data(), ldg, P, ldo, W.data(), len, R, Tn, C, K);
  });
  run_grid(cu::conv1d_param_partial_geometry(R, Tn, C), [&](const cu::Thread& th) {
    cu::conv1d_param_partial_body(th, scratch.data(), G.data(), ldg, P, ldo, X.data(), ldx, len, R, Tn, C, K);
  });
  run_grid(cu::conv1d_param_finish_geometry(C, K), [&](const cu::Thread& th) {
    cu::conv1d_param_finish_body(th, DW.data(), DB.data(), scratch.data(), cu::colsum_blocks(R * Tn), C, K);
  });
  compare<S>("conv1d_forward", cs, "out", load(O), pre);
  if (fused) compare<S>("conv1d_forward", cs, "silu_out", load(A), act);
  compare<S>("conv1d_backward", cs, "dx", load(DX), dxr);
  compare<S>("conv1d_backward", cs, "dw", DW, dw);
  compare<S>("conv1d_backward", cs, "db", DB, db);
}

// ---------------------------------------------------------------- softplus
template <typename S>
static void test_softplus() {
  const i64 M = 70, C = 20, ldx = 25, ldo = 22, ldg = 23;
  const std::string cs = shape({{"M", M}, {"C", C}});
  const Vec x = rounded<S>(randn(M * ldx, 8.f)), bias = rounded<S>(randn(C)), g = rounded<S>(randn(M * ldg));  // some beyond the threshold 20
  const Vec dx0 = rounded<S>(randn(M * ldx)), db0 = randn(C);
  Vec out(M * ldo, 0.f), dx = dx0, db = db0;
  gm::softplus_forward(out.data(), ldo, x.data(), ldx, bias.data(), M, C);
  gm::softplus_backward(dx.data(), ldx, db.data(), g.data(), ldg, x.data(), ldx, bias.data(), M, C);
  const std::vector<S> X = store<S>(x), Bv = store<S>(bias), G = store<S>(g);
  std::vector<S> O(M * ldo, S{}), DX = store<S>(dx0);
  Vec DB = db0, scratch(cu::softplus_backward_scratch(M, C));
  run_grid(cu::elementwise_geometry(M, C), [&](const cu::Thread& th) { cu::softplus_forward_body(th, O.data(), ldo, X.data(), ldx, Bv.data(), M, C); });
  run_grid(cu::elementwise_geometry(M, C), [&](const cu::Thread& th) { cu::softplus_backward_dx_body(th, DX.data(), ldx, G.data(), ldg, X.data(), ldx, Bv.data(), M, C); });
  run_grid(cu::colsum_partial_geometry(M, C), [&](const cu::Thread& th) { cu::softplus_dbias_partial(th, scratch.data(), G.data(), ldg, X.data(), ldx, Bv.data(), M, C); });
  run_grid(cu::colsum_finish_geometry(C), [&](const cu::Thread& th) { cu::colsum_finish_body(th, DB.data(), scratch.data(), cu::colsum_blocks(M), C); });
  compare<S>("softplus_forward", cs, "out", load(O), out);
  compare<S>("softplus_backward", cs, "dx", load(DX), dx);
  compare<S>("softplus_backward", cs, "dbias", DB, db);
}

// ---------------------------------------------------------------- selective scan
template <typename S>
static void test_scan(const char* name, i64 R, i64 Tn, i64 H, i64 P, i64 N, i64 Q) {
  const bool pl = P == 1;
  const i64 ch = H * P, ldx = ch + 3, lddt = (pl ? ch : H) + 2, ldbc = 2 * N + 3, ldy = ch + 1;
  const gm::ScanShape s{R, Tn, H, P, N, Q, ldx, lddt, ldbc, ldy};
  const cu::ScanDims d{R, Tn, H, P, N, Q, ldx, lddt, ldbc, ldy};
  const std::string cs = std::string(name) + "_" + shape({{"R", R}, {"T", Tn}, {"H", H}, {"P", P}, {"N", N}, {"Q", Q}});
  const i64 RT = R * Tn, na = s.a_size();
  Vec dtv = randn(RT * lddt, 1.f, -1.f);
  for (float& v : dtv) v = (float)gm::softplus(v);
  dtv = rounded<S>(dtv);
  const Vec x = rounded<S>(randn(RT * ldx)), bc = rounded<S>(randn(RT * ldbc)), gy = rounded<S>(randn(RT * ldy));
  Vec A = randn(na, 0.5f);
  for (float& a : A) a = -std::exp(a);
  const Vec D = randn(H);
  const Vec dx0 = rounded<S>(randn(RT * ldx)), ddt0 = rounded<S>(randn(RT * lddt)), dbc0 = rounded<S>(randn(RT * ldbc));
  const Vec dA0 = randn(na), dD0 = randn(H);
  // CPU: the op the model runs (chunked form for Mamba-2, the recurrence for Mamba-1)
  Vec y(RT * ldy, 0.f), st(s.states_size(), 0.f);
  gm::scan_forward(y.data(), st.data(), x.data(), dtv.data(), A.data(), bc.data(), bc.data() + N, D.data(), s);
  Vec dx = dx0, ddt = ddt0, dbc = dbc0, dA = dA0, dD = dD0;
  gm::scan_backward(dx.data(), ddt.data(), dA.data(), dbc.data(), dbc.data() + N, dD.data(), gy.data(), st.data(), x.data(),
                    dtv.data(), A.data(), bc.data(), bc.data() + N, D.data(), s);
  // kernels
  const std::vector<S> X = store<S>(x), DT = store<S>(dtv), BC = store<S>(bc), GY = store<S>(gy);
  std::vector<S> Y(RT * ldy, S{}), DX = store<S>(dx0), DDT = store<S>(ddt0), DBC = store<S>(dbc0);
  Vec ST(d.states_size(), 0.f), DA = dA0, DDv = dD0, scratch(cu::scan_backward_scratch(d).total(), NAN);
  cu::emul::scan_forward(Y.data(), ST.data(), X.data(), DT.data(), A.data(), BC.data(), BC.data() + N, D.data(), d);
  cu::emul::scan_backward(DX.data(), DDT.data(), DA.data(), DBC.data(), DBC.data() + N, DDv.data(), GY.data(), ST.data(), X.data(),
                          DT.data(), A.data(), BC.data(), BC.data() + N, D.data(), d, scratch.data());
  compare<S>("scan_forward", cs, "y", load(Y), y);
  compare<S>("scan_forward", cs, "states", ST, st);
  compare<S>("scan_backward", cs, "dx", load(DX), dx);
  compare<S>("scan_backward", cs, "ddt", load(DDT), ddt);
  compare<S>("scan_backward", cs, "dA", DA, dA);
  compare<S>("scan_backward", cs, "dB_dC", load(DBC), dbc);
  compare<S>("scan_backward", cs, "dD", DDv, dD);
}

// ---------------------------------------------------------------- reversal and combine
template <typename S>
static void test_reverse() {
  const i64 B = 3, L = 7, C = 5, ldi = 6, ldo = 8;
  const std::vector<std::int32_t> len = {7, 4, 0};
  const std::string cs = shape({{"B", B}, {"L", L}, {"C", C}}) + "_len7_4_0";
  auto src = [&](i64 b, i64 t) { return t < len[(size_t)b] ? len[(size_t)b] - 1 - t : t; };  // model.cpp build_mixer_input
  const Vec in = rounded<S>(randn(B * L * ldi)), dout = rounded<S>(randn(B * L * ldo)), din0 = rounded<S>(randn(B * L * ldi));
  Vec out(B * L * ldo, 0.f), din = din0;
  for (i64 b = 0; b < B; b++)
    for (i64 t = 0; t < L; t++)
      for (i64 c = 0; c < C; c++) {
        out[(b * L + t) * ldo + c] = in[(b * L + src(b, t)) * ldi + c];
        din[(b * L + src(b, t)) * ldi + c] += dout[(b * L + t) * ldo + c];  // adjoint of the gather
      }
  const std::vector<S> I = store<S>(in), G = store<S>(dout);
  std::vector<S> O(B * L * ldo, S{}), DI = store<S>(din0);
  run_grid(cu::reverse_geometry(B, L, C), [&](const cu::Thread& th) { cu::reverse_forward_body(th, O.data(), ldo, I.data(), ldi, len.data(), B, L, C); });
  run_grid(cu::reverse_geometry(B, L, C), [&](const cu::Thread& th) { cu::reverse_backward_body(th, DI.data(), ldi, G.data(), ldo, len.data(), B, L, C); });
  compare<S>("reverse_forward", cs, "out", load(O), out);
  compare<S>("reverse_backward", cs, "din", load(DI), din);

  // [f | b] rows and their backward, as Model::forward / Model::loss compute them
  const Vec mix = rounded<S>(randn(2 * B * L * C)), x = rounded<S>(randn(B * L * C)), dfb = rounded<S>(randn(B * L * 2 * C));
  Vec fb(B * L * 2 * C), dx(B * L * C), dmix(2 * B * L * C);
  for (i64 b = 0; b < B; b++)
    for (i64 t = 0; t < L; t++)
      for (i64 c = 0; c < C; c++) {
        const i64 m = b * L + t;
        fb[m * 2 * C + c] = mix[m * C + c] + x[m * C + c];
        fb[m * 2 * C + C + c] = mix[((B + b) * L + src(b, t)) * C + c] + x[m * C + c];
        dx[m * C + c] = dfb[m * 2 * C + c] + dfb[m * 2 * C + C + c];
        dmix[m * C + c] = dfb[m * 2 * C + c];
        dmix[((B + b) * L + t) * C + c] = dfb[(b * L + src(b, t)) * 2 * C + C + c];
      }
  const std::vector<S> MX = store<S>(mix), XX = store<S>(x), DFB = store<S>(dfb);
  std::vector<S> FB(B * L * 2 * C, S{}), DX(B * L * C, S{}), DM(2 * B * L * C, S{});
  run_grid(cu::reverse_geometry(B, L, C), [&](const cu::Thread& th) { cu::bidir_merge_forward_body(th, FB.data(), MX.data(), XX.data(), len.data(), B, L, C); });
  run_grid(cu::reverse_geometry(B, L, C), [&](const cu::Thread& th) { cu::bidir_merge_backward_body(th, DX.data(), DM.data(), DFB.data(), len.data(), B, L, C); });
  compare<S>("bidir_merge_forward", cs, "fb", load(FB), fb);
  compare<S>("bidir_merge_backward", cs, "dx", load(DX), dx);
  compare<S>("bidir_merge_backward", cs, "dmix", load(DM), dmix);
}

template <typename S>
static void test_combine() {
  const i64 M = 13, C = 9;
  const std::string cs = shape({{"M", M}, {"C", C}});
  const Vec fb = rounded<S>(randn(M * 2 * C)), pre = rounded<S>(randn(M * C)), g = rounded<S>(randn(M * C)), dfb0 = rounded<S>(randn(M * 2 * C));
  Vec out(M * C), sv = pre, dfb = dfb0, dpre(M * C);
  gm::gate_forward(out.data(), sv.data(), fb.data(), M, C);
  const Vec s_r = rounded<S>(sv);  // the kernel's backward reads the stored (rounded) gate
  gm::gate_backward(dfb.data(), dpre.data(), g.data(), fb.data(), s_r.data(), M, C);
  const std::vector<S> FB = store<S>(fb), G = store<S>(g);
  std::vector<S> O(M * C), SV = store<S>(pre), DFB = store<S>(dfb0), DP(M * C);
  run_grid(cu::elementwise_geometry(M, C), [&](const cu::Thread& th) { cu::gate_forward_body(th, O.data(), SV.data(), FB.data(), M, C); });
  run_grid(cu::elementwise_geometry(M, C), [&](const cu::Thread& th) { cu::gate_backward_body(th, DFB.data(), DP.data(), G.data(), FB.data(), SV.data(), M, C); });
  compare<S>("gate_forward", cs, "out", load(O), out);
  compare<S>("gate_forward", cs, "s", load(SV), sv);
  compare<S>("gate_backward", cs, "dfb", load(DFB), dfb);
  compare<S>("gate_backward", cs, "dpre", load(DP), dpre);
  for (int mode = 0; mode < 2; mode++) {
    const float wf = mode ? 1.f : 0.5f, wb = wf;
    const char* mname = mode ? "sum" : "mean";
    Vec bo(M * C), bd = dfb0;
    gm::blend_forward(bo.data(), fb.data(), wf, wb, M, C);
    gm::blend_backward(bd.data(), g.data(), wf, wb, M, C);
    std::vector<S> BO(M * C), BD = store<S>(dfb0);
    run_grid(cu::elementwise_geometry(M, C), [&](const cu::Thread& th) { cu::blend_forward_body(th, BO.data(), FB.data(), wf, wb, M, C); });
    run_grid(cu::elementwise_geometry(M, C), [&](const cu::Thread& th) { cu::blend_backward_body(th, BD.data(), G.data(), wf, wb, M, C); });
    compare<S>("blend_forward", cs + "_" + mname, "out", load(BO), bo);
    compare<S>("blend_backward", cs + "_" + mname, "dfb", load(BD), bd);
  }
}

// ---------------------------------------------------------------- Mamba-1 gate and row argmax
// Against model.cpp's loops (mamba1_gate, mixer_backward's Mamba-1 branch, argmax_logits), with the
// kernel's accumulate convention (the CPU writes into zeroed buffers: here both start from random).
template <typename S>
static void test_silu_gate() {
  const i64 M = 37, C = 20, ldz = 47;
  const std::string cs = shape({{"M", M}, {"C", C}, {"ldz", ldz}});
  const Vec y = rounded<S>(randn(M * C)), z = rounded<S>(randn(M * ldz, 3.f)), g = rounded<S>(randn(M * C));
  const Vec dy0 = rounded<S>(randn(M * C)), dz0 = rounded<S>(randn(M * ldz));
  Vec out(M * C), dy = dy0, dz = dz0;
  for (i64 m = 0; m < M; m++)
    for (i64 c = 0; c < C; c++) {
      const float zv = z[m * ldz + c], gv = g[m * C + c];
      out[m * C + c] = y[m * C + c] * gm::silu(zv);
      dy[m * C + c] += gv * gm::silu(zv);
      dz[m * ldz + c] += gv * y[m * C + c] * gm::silu_grad(zv);
    }
  const std::vector<S> Y = store<S>(y), Z = store<S>(z), G = store<S>(g);
  std::vector<S> O(M * C), DY = store<S>(dy0), DZ = store<S>(dz0);
  run_grid(cu::elementwise_geometry(M, C), [&](const cu::Thread& th) { cu::silu_gate_forward_body(th, O.data(), Y.data(), Z.data(), ldz, M, C); });
  run_grid(cu::elementwise_geometry(M, C), [&](const cu::Thread& th) { cu::silu_gate_backward_body(th, DY.data(), DZ.data(), ldz, G.data(), Y.data(), Z.data(), ldz, M, C); });
  compare<S>("silu_gate_forward", cs, "out", load(O), out);
  compare<S>("silu_gate_backward", cs, "dy", load(DY), dy);
  compare<S>("silu_gate_backward", cs, "dz", load(DZ), dz);
}
template <typename S>
static void test_argmax(i64 M, i64 V) {
  const std::string cs = shape({{"M", M}, {"V", V}});
  Vec x = rounded<S>(randn(M * V));
  x[1 * V + 5] = x[1 * V + 9] = 50.f;  // a tie: the smallest index wins
  for (i64 v = 0; v < V; v++) x[2 * V + v] = -3.f - (float)(v % 7);  // all negative, several ties at -3
  Vec want(M), got(M);
  for (i64 m = 0; m < M; m++) {
    i64 best = 0;
    for (i64 v = 1; v < V; v++)
      if (x[m * V + v] > x[m * V + best]) best = v;
    want[m] = (float)best;
  }
  const std::vector<S> X = store<S>(x);
  std::vector<std::int32_t> out(M, -1);
  const cu::Geometry g = cu::argmax_geometry(M, V);
  run_blocks(g, [&](int bx, int by) {
    const unsigned long long key = block_reduce<unsigned long long>(g, bx, by, cu::ArgMaxOp(), [&](const cu::Thread& th) { return cu::argmax_partial(th, X.data(), V); });
    block_threads(g, bx, by, [&](const cu::Thread& th) { cu::argmax_finish(th, key, out.data()); });
  });
  double bad = 0;
  for (i64 m = 0; m < M; m++) {
    got[m] = (float)out[m];
    bad += got[m] != want[m];
  }
  report("argmax_rows", dtype<S>(), cs, "index", bad, 0);
}

// ---------------------------------------------------------------- cross-entropy
template <typename S>
static void test_cross_entropy(i64 V, std::vector<std::int32_t> targets) {
  const i64 M = (i64)targets.size();
  const float scale = 0.37f;
  const std::string cs = shape({{"M", M}, {"V", V}});
  const Vec logits = rounded<S>(randn(M * V, 3.f));
  Vec dref(M * V, 0.f), lref(M, 0.f);
  for (i64 m = 0; m < M; m++) {  // the CPU op, row by row (the engine gathers the scored rows; -100 rows stay zero)
    if (targets[(size_t)m] == cu::kIgnoreIndex) continue;
    std::copy(logits.begin() + m * V, logits.begin() + (m + 1) * V, dref.begin() + m * V);
    lref[(size_t)m] = (float)gm::cross_entropy_forward_backward(dref.data() + m * V, targets.data() + m, 1, V, scale);
  }
  std::vector<S> LG = store<S>(logits);
  Vec loss(M, -1.f);
  const cu::Geometry g = cu::cross_entropy_geometry(M, V);
  run_blocks(g, [&](int bx, int by) {
    const float mx = block_reduce<float>(g, bx, by, cu::MaxOp(), [&](const cu::Thread& th) { return cu::cross_entropy_max_partial(th, LG.data(), targets.data(), V); });
    const float sum = block_reduce<float>(g, bx, by, cu::SumOp(), [&](const cu::Thread& th) { return cu::cross_entropy_sum_partial(th, mx, LG.data(), targets.data(), V); });
    block_threads(g, bx, by, [&](const cu::Thread& th) { cu::cross_entropy_finish(th, mx, sum, LG.data(), targets.data(), loss.data(), V, scale); });
  });
  compare<S>("cross_entropy", cs, "row_loss", loss, lref);
  compare<S>("cross_entropy", cs, "dlogits", load(LG), dref);
}

// ---------------------------------------------------------------- AdamW, global norm
template <typename TP>
static void test_adamw(double wd, bool dev_scale) {
  const i64 n = 1000;
  const std::string cs = std::string("n1000_wd") + (wd ? "0.1" : "0") + (dev_scale ? "_device_scale" : "");
  const Vec p0 = randn(n), g = randn(n), m0 = randn(n, 0.1f);
  Vec v0 = randn(n, 0.01f);
  for (float& v : v0) v = v * v;
  const float dscale = 0.5f;
  gm::AdamWParams o{1e-2, 0.9, 0.999, 1e-8, wd, 3, dev_scale ? 0.7 * 0.5 : 0.7};
  Vec p = p0, m = m0, v = v0;
  gm::adamw_update(p.data(), g.data(), m.data(), v.data(), n, o);
  const cu::AdamWHyper h{1e-2, 0.9, 0.999, 1e-8, wd, 3, 0.7};
  Vec P = p0, Mm = m0, Vv = v0;
  std::vector<TP> copy(n);
  const cu::AdamWScalars k = cu::adamw_scalars(h);
  run_grid(cu::adamw_geometry(n), [&](const cu::Thread& th) {
    cu::adamw_body(th, P.data(), copy.data(), g.data(), Mm.data(), Vv.data(), n, k, dev_scale ? &dscale : nullptr);
  });
  report("adamw", "f32", cs, "master", rel_err(P, p), 1e-5);
  report("adamw", "f32", cs, "m", rel_err(Mm, m), 1e-5);
  report("adamw", "f32", cs, "v", rel_err(Vv, v), 1e-5);
  compare<TP>("adamw", cs, "param_copy", load(copy), p);
}

template <typename S>
static void test_sums() {
  const i64 n = 200003;  // 4 blocks of kNormBlock, the last one partial
  const std::string cs = "n200003";
  const Vec gv = rounded<S>(randn(n));
  const std::vector<S> G = store<S>(gv);
  auto run_sum = [&](bool square) {
    std::vector<double> part(cu::sum_scratch_doubles(n));
    const cu::Geometry gp = cu::sum_partial_geometry(n), gf = cu::sum_final_geometry();
    run_blocks(gp, [&](int bx, int by) {
      part[(size_t)bx] = block_reduce<double>(gp, bx, by, cu::SumOp(), [&](const cu::Thread& th) { return cu::sum_partial(th, G.data(), n, square); });
    });
    return block_reduce<double>(gf, 0, 0, cu::SumOp(), [&](const cu::Thread& th) { return cu::sum_final_partial(th, part.data(), (i64)part.size()); });
  };
  const double ss = run_sum(true), ref = gm::sum_squares(gv.data(), n);
  report("sum_squares", dtype<S>(), cs, "sum", std::fabs(ss - ref) / ref, 1e-12);
  double sv_ref = 0;
  for (float v : gv) sv_ref += v;
  const double sv = run_sum(false);
  double asum = 0;
  for (float v : gv) asum += std::fabs(v);
  report("sum_values", dtype<S>(), cs, "sum", std::fabs(sv - sv_ref) / asum, 1e-12);
  if (sizeof(S) == 4)
    for (double max_norm : {1.0, 1e6, 0.0}) {
      float sc = -1.f;
      cu::clip_scale_body(cu::Thread{{0, 0, 0}, {0, 0, 0}, {32, 1, 1}, {1, 1, 1}}, &sc, &ss, max_norm);
      const double want = gm::clip_scale(std::sqrt(ref), max_norm);
      report("clip_scale", "f32", "max_norm" + std::to_string((long long)max_norm), "scale", std::fabs(sc - want) / want, 1e-6);
    }
}

// Mamba-2's A = -exp(A_log) and dA_log += dA * A (model.cpp step_sizes / mixer_backward), fp32.
static void test_neg_exp() {
  const i64 n = 300;
  const Vec alog = randn(n), dA = randn(n), d0 = randn(n);
  Vec A(n), dl = d0, Ag(n, 0.f), dlg = d0;
  for (i64 i = 0; i < n; i++) {
    A[i] = -std::exp(alog[i]);
    dl[i] += dA[i] * A[i];
  }
  run_grid(cu::neg_exp_geometry(n), [&](const cu::Thread& th) { cu::neg_exp_forward_body(th, Ag.data(), alog.data(), n); });
  run_grid(cu::neg_exp_geometry(n), [&](const cu::Thread& th) { cu::neg_exp_backward_body(th, dlg.data(), dA.data(), Ag.data(), n); });
  report("neg_exp_forward", "f32", "n300", "A", rel_err(Ag, A), 1e-5);
  report("neg_exp_backward", "f32", "n300", "dA_log", rel_err(dlg, dl), 1e-5);
}

static void test_bf16_rounding() {
  // ties to even, ordinary rounding, sign, overflow to infinity, NaN
  const float in[] = {1.f, 1.00390625f, 1.01171875f, 1.005f, -2.5f, 3.4e38f, NAN};
  const float want[] = {1.f, 1.f, 1.015625f, 1.0078125f, -2.5f, INFINITY, NAN};
  double bad = 0;
  for (int i = 0; i < 7; i++) {
    const float got = cu::bf16_to_float(cu::float_to_bf16(in[i]));
    if (!(got == want[i] || (std::isnan(got) && std::isnan(want[i])))) bad = 1;
  }
  report("bf16_host_type", "bf16", "rounding", "values", bad, 0);
}

template <typename S>
static void run_all() {
  test_embedding<S>();
  test_rmsnorm<S>(70, 100);  // 128 threads (4 warps), 3 row blocks in the dw pass
  test_rmsnorm<S>(3, 300);   // 256 threads, two columns for some threads
  test_gated_rmsnorm<S>(70, 100, 130);
  test_gated_rmsnorm<S>(2, 40, 40);
  test_conv1d<S>(false, 2, 9, 40, 4, {});
  test_conv1d<S>(true, 3, 20, 40, 4, {20, 13, 0});  // padded rows, one empty
  test_conv1d<S>(true, 2, 6, 7, 3, {5, 6});
  test_softplus<S>();
  test_scan<S>("mamba2", 2, 11, 3, 8, 5, 4);          // chunk 4 does not divide 11
  test_scan<S>("mamba2", 1, 7, 3, 64, 16, 3);         // 192 channels: 2 thread blocks, the second part idle
  test_scan<S>("mamba2", 2, 9, 2, 4, 64, 5);          // N = 64 (the NM = 64 forward instance)
  test_scan<S>("mamba1", 2, 11, 20, 1, 4, 4);         // 20 channels: lane blocks of 16 and 4
  test_scan<S>("mamba1", 1, 9, 150, 1, 16, 4);        // 2 thread blocks, lane blocks of 16 and 6
  test_scan<S>("mamba1", 1, 8, 5, 1, 20, 6);          // N = 20 (NM = 64), a short last chunk
  test_reverse<S>();
  test_combine<S>();
  test_silu_gate<S>();
  test_argmax<S>(5, 300);   // 256 threads, several values per thread
  test_argmax<S>(3, 20);    // 32 threads, some idle
  test_cross_entropy<S>(300, {3, -100, 299, 0, 150, -100});
  test_cross_entropy<S>(50, {49, 7});
  test_sums<S>();
}

int main() {
  test_bf16_rounding();
  test_neg_exp();
  run_all<float>();
  run_all<bf16>();
  test_adamw<float>(0.1, false);
  test_adamw<float>(0.0, false);
  test_adamw<float>(0.1, true);
  test_adamw<bf16>(0.1, false);
  std::printf("{\"failures\":%d,\"checks\":%d}\n", failures, checks);
  return failures ? 1 : 0;
}

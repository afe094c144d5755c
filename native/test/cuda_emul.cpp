// The CUDA kernels against the CPU ops, through the launchers of native/cuda/kernels.h on buffers of
// native/cuda/device.h (device::alloc, upload / download, free; everything on the null stream, and
// every download synchronises it). Outputs and gradients are compared with the CPU ops of
// native/src/ops/*.h (and, for the reversal, the Mamba-1 gate and the argmax, which the CPU engine
// does inline, with the loops of native/src/model.cpp). One source, two programs:
//   - gm_cuda_emul (GM_CUDA_EMUL, plain g++): linked with native/test/cuda_emul_device.cpp, whose
//     launchers run the kernel bodies of native/cuda/*.cuh over every (block, thread) of their
//     grids in grid order, with the block reductions replaced by the same butterfly tree on the host
//     (native/test/cuda_emul.h), on host memory. No GPU needed; packages/engine/test/cuda-kernels.test.ts
//     runs it.
//   - gm_cuda_kernel_check (the CUDA backend, gm_cuda): the same checks against the real kernels on
//     a GPU; without one it prints {"error": ...} and exits 2.
//
// float32: max |kernel - cpu| / max |cpu| <= 1e-5 per tensor emulated, 1e-4 on a GPU (nvcc contracts
// to FMAs and the CPU op's sums run in another order). bf16 storage: the CPU op runs in float32 on
// the bf16-rounded inputs (rounded by uploading and downloading them); tolerance 1e-2 (a bf16 value is
// within 2^-9 = 2e-3 of its float; the outputs and any accumulated gradient are rounded once more).
// Scratch buffers start as NaN, as garbage would on a GPU.
//
// What the emulation does not cover: the __global__ wrappers' own lines (they only pass
// this_thread() and the arguments on; nvcc compiles them in packages/engine/test/cuda-kernels.test.ts),
// shared-memory races and anything about real GPU speed or memory: gm_cuda_kernel_check does.
// Prints one JSON line per check and a summary; exits 1 on any failure.
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <exception>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../cuda/device.h"
#include "../cuda/kernels.h"
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

namespace cu = gm::cuda;
namespace dev = gm::cuda::device;
using gm::i64;
using Vec = std::vector<float>;
using IVec = std::vector<std::int32_t>;
using cu::bf16;

#if defined(GM_CUDA_EMUL)
constexpr double kF32Tol = 1e-5;
#else
constexpr double kF32Tol = 1e-4;
#endif
constexpr double kBf16Tol = 1e-2;
constexpr cudaStream_t kStream = nullptr;  // every launch and copy: the null stream
constexpr std::int32_t kIgnore = -100;     // cross-entropy's ignored target (cross_entropy.cuh kIgnoreIndex)

// ---------------------------------------------------------------- device buffers
template <typename T>
constexpr bool kStorage = std::is_same<T, float>::value || std::is_same<T, bf16>::value;
template <typename T>
using HostOf = typename std::conditional<kStorage<T>, float, T>::type;

// A device allocation of n T, freed on scope exit. Storage types (float, bf16) go up and down as
// floats through device::upload / download (bf16 rounded to nearest even); other element types (int32
// tokens, lengths, plans and ids, the fp64 sums) as raw bytes. get() synchronises the stream. Converts
// to T*, so a DevBuf is passed to a launcher as is.
template <typename T>
struct DevBuf {
  using H = HostOf<T>;
  T* p;
  i64 n;
  explicit DevBuf(const std::vector<H>& h) : p(static_cast<T*>(dev::alloc(h.size() * sizeof(T)))), n((i64)h.size()) {
    if constexpr (kStorage<T>) dev::upload(p, cu::dtype_of<T>(), h.data(), n, kStream);
    else dev::copy_to_device(p, h.data(), h.size() * sizeof(T), kStream);
  }
  DevBuf(i64 count, H fill) : DevBuf(std::vector<H>((size_t)count, fill)) {}
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() { dev::free(p); }
  std::vector<H> get() const {
    std::vector<H> h((size_t)n);
    if constexpr (kStorage<T>) dev::download(h.data(), p, cu::dtype_of<T>(), n, kStream);
    else dev::copy_to_host(h.data(), p, h.size() * sizeof(T), kStream);
    return h;
  }
  operator T*() const { return p; }
};

// ---------------------------------------------------------------- data and reports
static std::mt19937_64 rng(20240611);
static Vec randn(size_t n, float scale = 1.f, float shift = 0.f) {
  std::normal_distribution<float> nd(0.f, 1.f);
  Vec v(n);
  for (float& x : v) x = shift + scale * nd(rng);
  return v;
}
// What the kernel will see: f stored as S on the device.
template <typename S>
static Vec rounded(const Vec& f) {
  return DevBuf<S>(f).get();
}
template <typename S>
static const char* dtype() {
  return cu::dtype_of<S>() == cu::DType::F32 ? "f32" : "bf16";
}
template <typename S>
static double tol() {
  return cu::dtype_of<S>() == cu::DType::F32 ? kF32Tol : kBf16Tol;
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
  const IVec tok = {3, 1, 3, 0, 6, 3, 1, 2, 6, 6, 3};
  const Vec table = rounded<S>(randn(V * C)), dout = rounded<S>(randn(M * C)), dt0 = randn(V * C);
  const std::string cs = shape({{"V", V}, {"C", C}, {"M", M}});
  Vec ref(M * C), dref = dt0;
  gm::embedding_forward(ref.data(), tok.data(), table.data(), M, C);
  gm::embedding_backward(dref.data(), dout.data(), tok.data(), M, C);

  const cu::EmbeddingPlan plan = cu::embedding_plan(tok.data(), M);
  const DevBuf<std::int32_t> TOK(tok), ORDER(plan.order), SEG(plan.seg_start);
  const DevBuf<S> TAB(table), DO(dout);
  DevBuf<S> O(M * C, 0.f);
  DevBuf<float> DT(dt0);
  cu::embedding_forward<S>(O, TOK, TAB, M, C, kStream);
  cu::embedding_backward<S>(DT, DO, TOK, ORDER, SEG, plan.nseg(), M, C, kStream);
  compare<S>("embedding_forward", cs, "out", O.get(), ref);
  compare<S>("embedding_backward", cs, "dtable", DT.get(), dref);
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

  const DevBuf<S> X(x), W(w), G(g);
  DevBuf<S> O(M * C, 0.f), DX(dx0);
  DevBuf<float> R(M, 0.f), DW(dw0), scratch(cu::rmsnorm_backward_scratch(M, C), NAN);
  cu::rmsnorm_forward<S>(O, R, X, W, M, C, 1e-5f, kStream);
  cu::rmsnorm_backward<S>(DX, DW, G, X, W, R, M, C, scratch, kStream);
  compare<S>("rmsnorm_forward", cs, "out", O.get(), out);
  compare<S>("rmsnorm_forward", cs, "rstd", R.get(), rstd);
  compare<S>("rmsnorm_backward", cs, "dx", DX.get(), dx);
  compare<S>("rmsnorm_backward", cs, "dw", DW.get(), dw);
}

template <typename S>
static void test_gated_rmsnorm(i64 M, i64 C, i64 ldz) {
  const std::string cs = shape({{"M", M}, {"C", C}, {"ldz", ldz}});
  const Vec y = rounded<S>(randn(M * C)), z = rounded<S>(randn(M * ldz)), w = rounded<S>(randn(C, 0.3f, 1.f));
  const Vec g = rounded<S>(randn(M * C)), dy0 = rounded<S>(randn(M * C)), dz0 = rounded<S>(randn(M * ldz)), dw0 = randn(C);
  Vec out(M * C), rstd(M), dy = dy0, dz = dz0, dw = dw0;
  gm::gated_rmsnorm_forward(out.data(), rstd.data(), y.data(), z.data(), ldz, w.data(), M, C, 1e-5f);
  gm::gated_rmsnorm_backward(dy.data(), dz.data(), ldz, dw.data(), g.data(), y.data(), z.data(), ldz, w.data(), rstd.data(), M, C);

  const DevBuf<S> Y(y), Z(z), W(w), G(g);
  DevBuf<S> O(M * C, 0.f), O2(M * C, 0.f), DY(dy0), DZ(dz0);
  DevBuf<float> R(M, 0.f), DW(dw0), scratch(cu::rmsnorm_backward_scratch(M, C), NAN);
  cu::gated_rmsnorm_forward<S>(O, R, Y, Z, ldz, W, M, C, 1e-5f, kStream);
  cu::gated_rmsnorm_forward<S>(O2, nullptr, Y, Z, ldz, W, M, C, 1e-5f, kStream);  // without rstd (the backward's recompute)
  cu::gated_rmsnorm_backward<S>(DY, DZ, ldz, DW, G, Y, Z, ldz, W, R, M, C, scratch, kStream);
  compare<S>("gated_rmsnorm_forward", cs, "out", O.get(), out);
  compare<S>("gated_rmsnorm_forward", cs, "out_without_rstd", O2.get(), out);
  compare<S>("gated_rmsnorm_forward", cs, "rstd", R.get(), rstd);
  compare<S>("gated_rmsnorm_backward", cs, "dy", DY.get(), dy);
  compare<S>("gated_rmsnorm_backward", cs, "dz", DZ.get(), dz);
  compare<S>("gated_rmsnorm_backward", cs, "dw", DW.get(), dw);
}

// ---------------------------------------------------------------- conv1d
// fused = the model's sequence around the op: input masked at pads, SiLU, output masked; backward
// from the gradient of the masked SiLU output, dx left alone at pads.
template <typename S>
static void test_conv1d(bool fused, i64 R, i64 Tn, i64 C, i64 K, IVec lengths) {
  const i64 ldx = C + 5, ldo = C + 3, ldd = C + 5, ldg = C + 3;
  const std::string cs = std::string(fused ? "fused_silu_mask_" : "plain_") + shape({{"R", R}, {"T", Tn}, {"C", C}, {"K", K}});
  const Vec x = rounded<S>(randn(R * Tn * ldx)), w = rounded<S>(randn(C * K)), b = rounded<S>(randn(C));
  const Vec gout = rounded<S>(randn(R * Tn * ldg)), dx0 = rounded<S>(randn(R * Tn * ldd)), dw0 = randn(C * K), db0 = randn(C);
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
  // kernels: the fused form passes the lengths, the SiLU output and (backward) the pre-activation
  const DevBuf<S> X(x), W(w), Bv(b), G(gout);
  const DevBuf<std::int32_t> LEN(lengths);
  DevBuf<S> O(R * Tn * ldo, 0.f), A(R * Tn * C, 0.f), DX(dx0);
  DevBuf<float> DW(dw0), DB(db0), scratch(cu::conv1d_backward_scratch(R, Tn, C, K), NAN);
  const std::int32_t* len = fused ? LEN.p : nullptr;
  cu::conv1d_forward<S>(O, ldo, fused ? A.p : nullptr, C, X, ldx, W, Bv, len, R, Tn, C, K, kStream);
  cu::conv1d_backward<S>(DX, ldd, DW, DB, G, ldg, fused ? O.p : nullptr, ldo, X, ldx, W, len, R, Tn, C, K, scratch, kStream);
  compare<S>("conv1d_forward", cs, "out", O.get(), pre);
  if (fused) compare<S>("conv1d_forward", cs, "silu_out", A.get(), act);
  compare<S>("conv1d_backward", cs, "dx", DX.get(), dxr);
  compare<S>("conv1d_backward", cs, "dw", DW.get(), dw);
  compare<S>("conv1d_backward", cs, "db", DB.get(), db);
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
  const DevBuf<S> X(x), Bv(bias), G(g);
  DevBuf<S> O(M * ldo, 0.f), DX(dx0);
  DevBuf<float> DB(db0), scratch(cu::softplus_backward_scratch(M, C), NAN);
  cu::softplus_forward<S>(O, ldo, X, ldx, Bv, M, C, kStream);
  cu::softplus_backward<S>(DX, ldx, DB, G, ldg, X, ldx, Bv, M, C, scratch, kStream);
  compare<S>("softplus_forward", cs, "out", O.get(), out);
  compare<S>("softplus_backward", cs, "dx", DX.get(), dx);
  compare<S>("softplus_backward", cs, "dbias", DB.get(), db);
}

// ---------------------------------------------------------------- selective scan
template <typename S>
// ssd: Mamba-2 shapes through the chunked SSD launchers (ssd.cu) instead of the recurrent kernels.
static void test_scan(const char* name, i64 R, i64 Tn, i64 H, i64 P, i64 N, i64 Q, bool ssd = false) {
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
  // kernels (B and C interleaved in one buffer, as the model's x_proj output holds them)
  const DevBuf<S> X(x), DT(dtv), BC(bc), GY(gy);
  const DevBuf<float> AA(A), DD(D);
  DevBuf<S> Y(RT * ldy, 0.f), DX(dx0), DDT(ddt0), DBC(dbc0);
  DevBuf<float> ST(d.states_size(), 0.f), DA(dA0), DDv(dD0), scratch(cu::scan_scratch_floats(d, ssd, sizeof(S)), NAN);
  cu::scan_forward_with<S>(ssd, Y, ST, X, DT, AA, BC, BC.p + N, DD, d, scratch, kStream);
  cu::scan_backward_with<S>(ssd, DX, DDT, DA, DBC, DBC.p + N, DDv, GY, ST, X, DT, AA, BC, BC.p + N, DD, d, scratch, kStream);
  const char* fwd = ssd ? "ssd_scan_forward" : "scan_forward";
  const char* bwd = ssd ? "ssd_scan_backward" : "scan_backward";
  compare<S>(fwd, cs, "y", Y.get(), y);
  compare<S>(fwd, cs, "states", ST.get(), st);
  compare<S>(bwd, cs, "dx", DX.get(), dx);
  compare<S>(bwd, cs, "ddt", DDT.get(), ddt);
  compare<S>(bwd, cs, "dA", DA.get(), dA);
  compare<S>(bwd, cs, "dB_dC", DBC.get(), dbc);
  compare<S>(bwd, cs, "dD", DDv.get(), dD);
}

// ---------------------------------------------------------------- reversal and combine
template <typename S>
static void test_reverse() {
  const i64 B = 3, L = 7, C = 5, ldi = 6, ldo = 8;
  const IVec len = {7, 4, 0};
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
  const DevBuf<std::int32_t> LEN(len);
  const DevBuf<S> I(in), G(dout);
  DevBuf<S> O(B * L * ldo, 0.f), DI(din0);
  cu::reverse_forward<S>(O, ldo, I, ldi, LEN, B, L, C, kStream);
  cu::reverse_backward<S>(DI, ldi, G, ldo, LEN, B, L, C, kStream);
  compare<S>("reverse_forward", cs, "out", O.get(), out);
  compare<S>("reverse_backward", cs, "din", DI.get(), din);

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
  const DevBuf<S> MX(mix), XX(x), DFB(dfb);
  DevBuf<S> FB(B * L * 2 * C, 0.f), DX(B * L * C, 0.f), DM(2 * B * L * C, 0.f);
  cu::bidir_merge_forward<S>(FB, MX, XX, LEN, B, L, C, kStream);
  cu::bidir_merge_backward<S>(DX, DM, DFB, LEN, B, L, C, kStream);
  compare<S>("bidir_merge_forward", cs, "fb", FB.get(), fb);
  compare<S>("bidir_merge_backward", cs, "dx", DX.get(), dx);
  compare<S>("bidir_merge_backward", cs, "dmix", DM.get(), dmix);
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
  const DevBuf<S> FB(fb), G(g);
  DevBuf<S> O(M * C, 0.f), SV(pre), DFB(dfb0), DP(M * C, 0.f);
  cu::gate_forward<S>(O, SV, FB, M, C, kStream);
  cu::gate_backward<S>(DFB, DP, G, FB, SV, M, C, kStream);
  compare<S>("gate_forward", cs, "out", O.get(), out);
  compare<S>("gate_forward", cs, "s", SV.get(), sv);
  compare<S>("gate_backward", cs, "dfb", DFB.get(), dfb);
  compare<S>("gate_backward", cs, "dpre", DP.get(), dpre);
  for (int mode = 0; mode < 2; mode++) {
    const float wf = mode ? 1.f : 0.5f, wb = wf;
    const char* mname = mode ? "sum" : "mean";
    Vec bo(M * C), bd = dfb0;
    gm::blend_forward(bo.data(), fb.data(), wf, wb, M, C);
    gm::blend_backward(bd.data(), g.data(), wf, wb, M, C);
    DevBuf<S> BO(M * C, 0.f), BD(dfb0);
    cu::blend_forward<S>(BO, FB, wf, wb, M, C, kStream);
    cu::blend_backward<S>(BD, G, wf, wb, M, C, kStream);
    compare<S>("blend_forward", cs + "_" + mname, "out", BO.get(), bo);
    compare<S>("blend_backward", cs + "_" + mname, "dfb", BD.get(), bd);
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
  const DevBuf<S> Y(y), Z(z), G(g);
  DevBuf<S> O(M * C, 0.f), DY(dy0), DZ(dz0);
  cu::silu_gate_forward<S>(O, Y, Z, ldz, M, C, kStream);
  cu::silu_gate_backward<S>(DY, DZ, ldz, G, Y, Z, ldz, M, C, kStream);
  compare<S>("silu_gate_forward", cs, "out", O.get(), out);
  compare<S>("silu_gate_backward", cs, "dy", DY.get(), dy);
  compare<S>("silu_gate_backward", cs, "dz", DZ.get(), dz);
}
template <typename S>
static void test_argmax(i64 M, i64 V) {
  const std::string cs = shape({{"M", M}, {"V", V}});
  Vec x = rounded<S>(randn(M * V));
  x[1 * V + 5] = x[1 * V + 9] = 50.f;  // a tie: the smallest index wins
  for (i64 v = 0; v < V; v++) x[2 * V + v] = -3.f - (float)(v % 7);  // all negative, several ties at -3
  IVec want(M);
  for (i64 m = 0; m < M; m++) {
    i64 best = 0;
    for (i64 v = 1; v < V; v++)
      if (x[m * V + v] > x[m * V + best]) best = v;
    want[m] = (std::int32_t)best;
  }
  const DevBuf<S> X(x);
  DevBuf<std::int32_t> out(M, -1);
  cu::argmax_rows<S>(out, X, M, V, kStream);
  const IVec got = out.get();
  double bad = 0;
  for (i64 m = 0; m < M; m++) bad += got[m] != want[m];
  report("argmax_rows", dtype<S>(), cs, "index", bad, 0);
}

// ---------------------------------------------------------------- cross-entropy
template <typename S>
static void test_cross_entropy(i64 V, IVec targets) {
  const i64 M = (i64)targets.size();
  const float scale = 0.37f;
  const std::string cs = shape({{"M", M}, {"V", V}});
  const Vec logits = rounded<S>(randn(M * V, 3.f));
  Vec dref(M * V, 0.f), lref(M, 0.f);
  for (i64 m = 0; m < M; m++) {  // the CPU op, row by row (the engine gathers the scored rows; -100 rows stay zero)
    if (targets[(size_t)m] == kIgnore) continue;
    std::copy(logits.begin() + m * V, logits.begin() + (m + 1) * V, dref.begin() + m * V);
    lref[(size_t)m] = (float)gm::cross_entropy_forward_backward(dref.data() + m * V, targets.data() + m, 1, V, scale);
  }
  const DevBuf<std::int32_t> TG(targets);
  DevBuf<S> LG(logits);
  DevBuf<float> loss(M, -1.f);
  cu::cross_entropy_forward_backward<S>(LG, TG, loss, M, V, scale, kStream);
  compare<S>("cross_entropy", cs, "row_loss", loss.get(), lref);
  compare<S>("cross_entropy", cs, "dlogits", LG.get(), dref);
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
  const DevBuf<float> G(g), SCALE(Vec{dscale});
  DevBuf<float> P(p0), Mm(m0), Vv(v0);
  DevBuf<TP> copy(n, 0.f);
  cu::adamw_update<TP>(P, copy, G, Mm, Vv, n, h, dev_scale ? SCALE.p : nullptr, kStream);
  report("adamw", "f32", cs, "master", rel_err(P.get(), p), kF32Tol);
  report("adamw", "f32", cs, "m", rel_err(Mm.get(), m), kF32Tol);
  report("adamw", "f32", cs, "v", rel_err(Vv.get(), v), kF32Tol);
  compare<TP>("adamw", cs, "param_copy", copy.get(), p);
}

template <typename S>
static void test_sums() {
  const i64 n = 200003;  // 4 blocks of kNormBlock, the last one partial
  const std::string cs = "n200003";
  const Vec gv = rounded<S>(randn(n));
  const DevBuf<S> G(gv);
  DevBuf<double> part(cu::sum_scratch_doubles(n), NAN), ss_dev(1, 0.0), sv_dev(1, 0.0);
  cu::sum_squares<S>(ss_dev, G, n, part, kStream);
  const double ss = ss_dev.get()[0], ref = gm::sum_squares(gv.data(), n);
  report("sum_squares", dtype<S>(), cs, "sum", std::fabs(ss - ref) / ref, 1e-12);
  // sum_values has one launcher, fp32 (it sums the per-row losses): the bf16 row sums the same
  // bf16-valued data from an fp32 buffer (the same fp64 sums as a bf16 load would give).
  const DevBuf<float> Gf(gv);
  cu::sum_values(sv_dev, Gf, n, part, kStream);
  const double sv = sv_dev.get()[0];
  double sv_ref = 0, asum = 0;
  for (float v : gv) sv_ref += v;
  for (float v : gv) asum += std::fabs(v);
  report("sum_values", dtype<S>(), cs, "sum", std::fabs(sv - sv_ref) / asum, 1e-12);
  if (cu::dtype_of<S>() == cu::DType::F32)
    for (double max_norm : {1.0, 1e6, 0.0}) {
      DevBuf<float> sc(1, -1.f);
      cu::clip_scale(sc, ss_dev, max_norm, kStream);
      const double want = gm::clip_scale(std::sqrt(ref), max_norm);
      report("clip_scale", "f32", "max_norm" + std::to_string((long long)max_norm), "scale", std::fabs(sc.get()[0] - want) / want, 1e-6);
    }
}

// Mamba-2's A = -exp(A_log) and dA_log += dA * A (model.cpp step_sizes / mixer_backward), fp32.
static void test_neg_exp() {
  const i64 n = 300;
  const Vec alog = randn(n), dA = randn(n), d0 = randn(n);
  Vec A(n), dl = d0;
  for (i64 i = 0; i < n; i++) {
    A[i] = -std::exp(alog[i]);
    dl[i] += dA[i] * A[i];
  }
  const DevBuf<float> ALOG(alog), DAv(dA);
  DevBuf<float> AG(n, 0.f), DL(d0);
  cu::neg_exp_forward(AG, ALOG, n, kStream);
  cu::neg_exp_backward(DL, DAv, AG, n, kStream);
  report("neg_exp_forward", "f32", "n300", "A", rel_err(AG.get(), A), kF32Tol);
  report("neg_exp_backward", "f32", "n300", "dA_log", rel_err(DL.get(), dl), kF32Tol);
}

// The bf16 conversion of device::upload / download (emulated: common.cuh's host bf16 type; on a GPU,
// device_cuda.cpp's staging conversion): ties to even, ordinary rounding, sign, overflow to
// infinity, NaN.
static void test_bf16_rounding() {
  const Vec in = {1.f, 1.00390625f, 1.01171875f, 1.005f, -2.5f, 3.4e38f, NAN};
  const Vec want = {1.f, 1.f, 1.015625f, 1.0078125f, -2.5f, INFINITY, NAN};
  const Vec got = rounded<bf16>(in);
  double bad = 0;
  for (size_t i = 0; i < in.size(); i++)
    if (!(got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i])))) bad = 1;
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
  test_scan<S>("mamba2", 2, 11, 3, 8, 5, 4, true);    // SSD: a short last chunk
  test_scan<S>("mamba2", 3, 16, 2, 16, 8, 8, true);   // SSD: chunks divide T
  test_scan<S>("mamba2", 1, 9, 2, 4, 64, 5, true);    // SSD: N = 64
  test_scan<S>("mamba1", 2, 11, 20, 1, 4, 4);         // 20 channels: lane blocks of 16 and 4
  test_scan<S>("mamba1", 1, 9, 150, 1, 16, 4);        // 2 thread blocks, lane blocks of 16 and 6
  test_scan<S>("mamba1", 1, 8, 5, 1, 20, 6);          // N = 20 (NM = 64), a short last chunk
  test_reverse<S>();
  test_combine<S>();
  test_silu_gate<S>();
  test_argmax<S>(5, 300);   // 256 threads, several values per thread
  test_argmax<S>(3, 20);    // 32 threads, some idle
  test_cross_entropy<S>(300, {3, kIgnore, 299, 0, 150, kIgnore});
  test_cross_entropy<S>(50, {49, 7});
  test_sums<S>();
}

static void run_checks() {
  test_bf16_rounding();
  test_neg_exp();
  run_all<float>();
  run_all<bf16>();
  test_adamw<float>(0.1, false);
  test_adamw<float>(0.0, false);
  test_adamw<float>(0.1, true);
  test_adamw<bf16>(0.1, false);
}

int main() {
#if !defined(GM_CUDA_EMUL)
  const int ndev = dev::device_count();
  if (ndev == 0) {
    std::printf("{\"error\":\"no CUDA GPU visible: gm_cuda_kernel_check needs one (gm_cuda_emul runs the same checks emulated)\"}\n");
    return 2;
  }
  const dev::DeviceProps props = dev::device_props(0);
  std::printf("{\"device\":\"%s\",\"cc\":\"%d.%d\"}\n", props.name.c_str(), props.cc_major, props.cc_minor);
#endif
  try {
    run_checks();
  } catch (const std::exception& e) {  // a launch or copy error: report it, with the checks so far
    std::string msg;
    for (const char* c = e.what(); *c; c++) msg += (*c == '"' || *c == '\\') ? '\'' : *c;
    std::printf("{\"error\":\"%s\"}\n", msg.c_str());
    std::printf("{\"failures\":%d,\"checks\":%d}\n", failures + 1, checks);
    return 1;
  }
  std::printf("{\"failures\":%d,\"checks\":%d}\n", failures, checks);
  return failures ? 1 : 0;
}

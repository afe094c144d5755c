// Gradient checks of every op against float64 central finite differences (llm.c style: the ops are
// templates, instantiated here in double). Each check draws random inputs, takes the scalar loss
// sum(w . out) with random w, runs the op's backward and compares every input gradient with
// (loss(v + h) - loss(v - h)) / 2h. Prints one JSON line per (op, input) with the max relative error
// (max |numeric - analytic| / max |numeric|); packages/engine/test/ops.test.ts runs it and checks them.
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ops/adamw.h"
#include "ops/batchnorm.h"
#include "ops/class_cross_entropy.h"
#include "ops/dropout.h"
#include "ops/leaky_relu.h"
#include "ops/combine.h"
#include "ops/conv1d.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/gated_rmsnorm.h"
#include "ops/global_norm.h"
#include "ops/linear.h"
#include "ops/rmsnorm.h"
#include "ops/scan.h"
#include "ops/silu.h"
#include "ops/softplus.h"

using namespace gm;
using Vec = std::vector<double>;

static std::mt19937_64 rng(12345);
static Vec randn(size_t n, double scale = 1.0, double shift = 0.0) {
  std::normal_distribution<double> nd(0.0, 1.0);
  Vec v(n);
  for (double& x : v) x = shift + scale * nd(rng);
  return v;
}
static double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

struct Var {
  Var(std::string n, Vec* v) : name(std::move(n)), value(v) {}
  std::string name;
  Vec* value;
  Vec grad;
};

static int failures = 0;
static void report(const char* op, const std::string& input, double err, double tol) {
  std::printf("{\"op\":\"%s\",\"input\":\"%s\",\"max_rel_err\":%.3e,\"tol\":%.1e}\n", op, input.c_str(), err, tol);
  if (!(err <= tol)) failures++;
}

// loss(): forward + weighted sum; backward(): fills each var's grad (zeroed before the call).
static void check(const char* op, std::vector<Var*> vars, const std::function<double()>& loss,
                  const std::function<void()>& backward, double tol = 1e-6) {
  for (Var* v : vars) v->grad.assign(v->value->size(), 0.0);
  backward();
  for (Var* v : vars) {
    double max_diff = 0, max_num = 0;
    for (size_t i = 0; i < v->value->size(); i++) {
      const double keep = (*v->value)[i];
      const double h = 1e-5 * (1.0 + std::fabs(keep));
      (*v->value)[i] = keep + h;
      const double lp = loss();
      (*v->value)[i] = keep - h;
      const double lm = loss();
      (*v->value)[i] = keep;
      const double num = (lp - lm) / (2 * h);
      max_diff = std::max(max_diff, std::fabs(num - v->grad[i]));
      max_num = std::max(max_num, std::fabs(num));
    }
    report(op, v->name, max_diff / (max_num + 1e-300), tol);
  }
}

int main() {
  {  // linear, with a strided input slice and a strided output
    const i64 M = 5, I = 4, O = 3, ldi = 6, ldo = 5;
    Vec x = randn(M * ldi), W = randn(O * I), b = randn(O), w = randn(M * ldo);
    Var vx{"inp", &x}, vW{"weight", &W}, vb{"bias", &b};
    auto fwd = [&](Vec& out) {
      out.assign(M * ldo, 0.0);
      linear_forward(out.data(), ldo, x.data(), ldi, W.data(), b.data(), M, I, O);
    };
    check("linear", {&vx, &vW, &vb}, [&] { Vec o; fwd(o); return dot(o, w); },
          [&] { linear_backward(vx.grad.data(), ldi, vW.grad.data(), vb.grad.data(), w.data(), ldo, x.data(), ldi, W.data(), M, I, O); });
  }
  {  // embedding (a repeated token checks accumulation)
    const i64 V = 6, C = 4, M = 5;
    std::vector<std::int32_t> tok = {1, 4, 1, 0, 5};
    Vec table = randn(V * C), w = randn(M * C);
    Var vt{"table", &table};
    check("embedding", {&vt}, [&] { Vec o(M * C); embedding_forward(o.data(), tok.data(), table.data(), M, C); return dot(o, w); },
          [&] { embedding_backward(vt.grad.data(), w.data(), tok.data(), M, C); });
  }
  {  // rmsnorm
    const i64 M = 4, C = 7;
    Vec x = randn(M * C), g = randn(C, 0.3, 1.0), w = randn(M * C);
    Var vx{"x", &x}, vg{"weight", &g};
    auto fwd = [&](Vec& o, Vec& r) { o.assign(M * C, 0); r.assign(M, 0); rmsnorm_forward(o.data(), r.data(), x.data(), g.data(), M, C, 1e-5); };
    check("rmsnorm", {&vx, &vg}, [&] { Vec o, r; fwd(o, r); return dot(o, w); },
          [&] { Vec o, r; fwd(o, r); rmsnorm_backward(vx.grad.data(), vg.grad.data(), w.data(), x.data(), g.data(), r.data(), M, C); });
  }
  {  // gated rmsnorm, z as a strided slice
    const i64 M = 4, C = 6, ldz = 9;
    Vec y = randn(M * C), z = randn(M * ldz), g = randn(C, 0.3, 1.0), w = randn(M * C);
    Var vy{"y", &y}, vz{"z", &z}, vg{"weight", &g};
    auto fwd = [&](Vec& o, Vec& r) { o.assign(M * C, 0); r.assign(M, 0); gated_rmsnorm_forward(o.data(), r.data(), y.data(), z.data(), ldz, g.data(), M, C, 1e-5); };
    check("gated_rmsnorm", {&vy, &vz, &vg}, [&] { Vec o, r; fwd(o, r); return dot(o, w); },
          [&] { Vec o, r; fwd(o, r); gated_rmsnorm_backward(vy.grad.data(), vz.grad.data(), ldz, vg.grad.data(), w.data(), y.data(), z.data(), ldz, g.data(), r.data(), M, C); });
  }
  {  // causal depthwise conv1d
    const i64 R = 2, T = 6, C = 3, K = 4, ldx = 5, ldo = 4;
    Vec x = randn(R * T * ldx), wt = randn(C * K), b = randn(C), w = randn(R * T * ldo);
    Var vx{"x", &x}, vw{"weight", &wt}, vb{"bias", &b};
    check("conv1d", {&vx, &vw, &vb},
          [&] { Vec o(R * T * ldo, 0.0); conv1d_forward(o.data(), ldo, x.data(), ldx, wt.data(), b.data(), R, T, C, K); return dot(o, w); },
          [&] { conv1d_backward(vx.grad.data(), ldx, vw.grad.data(), vb.grad.data(), w.data(), ldo, x.data(), ldx, wt.data(), R, T, C, K); });
  }
  {  // silu
    const i64 M = 3, C = 5;
    Vec x = randn(M * C, 2.0), w = randn(M * C);
    Var vx{"x", &x};
    check("silu", {&vx}, [&] { Vec o(M * C); silu_forward(o.data(), C, x.data(), C, M, C); return dot(o, w); },
          [&] { silu_backward(vx.grad.data(), C, w.data(), C, x.data(), C, M, C); });
  }
  {  // softplus with bias (values on both sides of the threshold of 20)
    const i64 M = 4, C = 3;
    Vec x = randn(M * C, 2.0), bias = randn(C), w = randn(M * C);
    x[1] = 25.0;
    Var vx{"x", &x}, vb{"bias", &bias};
    check("softplus", {&vx, &vb},
          [&] { Vec o(M * C); softplus_forward(o.data(), C, x.data(), C, bias.data(), M, C); return dot(o, w); },
          [&] { softplus_backward(vx.grad.data(), C, vb.grad.data(), w.data(), C, x.data(), C, bias.data(), M, C); });
  }
  // Selective scan in both shapes: Mamba-2 (heads of P channels, one A per head expanded to [H, N])
  // and Mamba-1 (P = 1, A per channel and state), with a chunk that does not divide T.
  // Variant 2 runs the recurrence on the Mamba-2 shape (the op itself takes the chunked form there).
  for (int variant = 0; variant < 3; variant++) {
    const bool m2 = variant != 1, recurrent = variant == 2;
    const i64 R = 2, T = 7, H = m2 ? 3 : 20, P = m2 ? 2 : 1, N = 3, Q = 3;
    const i64 ldx = H * P + 1, lddt = H, ldbc = 2 * N + 1, ldy = H * P;
    ScanShape s{R, T, H, P, N, Q, ldx, lddt, ldbc, ldy};
    Vec x = randn(R * T * ldx), dtv = randn(R * T * lddt, 0.2, 0.5), Ah = randn(m2 ? H : H * N, 0.3, -1.0);
    Vec Bc = randn(R * T * ldbc), D = randn(H), w = randn(R * T * ldy);
    Var vx{"x", &x}, vdt{"dt", &dtv}, vA{"A", &Ah}, vBC{"B_and_C", &Bc}, vD{"D", &D};
    auto fwd = [&](Vec& y, Vec& st) {
      y.assign(R * T * ldy, 0);
      st.assign(s.states_size(), 0);
      if (recurrent) scan_forward_recurrent(y.data(), st.data(), x.data(), dtv.data(), Ah.data(), Bc.data(), Bc.data() + N, D.data(), s);
      else scan_forward(y.data(), st.data(), x.data(), dtv.data(), Ah.data(), Bc.data(), Bc.data() + N, D.data(), s);
    };
    check(recurrent ? "scan_mamba2_recurrent" : m2 ? "scan_mamba2" : "scan_mamba1", {&vx, &vdt, &vA, &vBC, &vD}, [&] { Vec y, st; fwd(y, st); return dot(y, w); },
          [&] {
            Vec y, st;
            fwd(y, st);
            (recurrent ? scan_backward_recurrent<double> : scan_backward<double>)(
                vx.grad.data(), vdt.grad.data(), vA.grad.data(), vBC.grad.data(), vBC.grad.data() + N, vD.grad.data(), w.data(),
                st.data(), x.data(), dtv.data(), Ah.data(), Bc.data(), Bc.data() + N, D.data(), s);
          });
  }
  {  // Mamba-2 shape: the chunked form and the recurrence agree (outputs, saved states, gradients)
    const i64 R = 2, T = 45, H = 3, P = 8, N = 5, Q = 16;
    ScanShape s{R, T, H, P, N, Q, H * P, H, 2 * N, H * P};
    Vec x = randn(R * T * H * P), dtv = randn(R * T * H, 0.2, 0.5), A = randn(H, 0.3, -1.0), Bc = randn(R * T * 2 * N);
    Vec D = randn(H), dy = randn(R * T * H * P);
    double worst = 0;
    auto cmp = [&](const Vec& a, const Vec& b) {
      double m = 0, sc = 0;
      for (size_t i = 0; i < a.size(); i++) m = std::max(m, std::fabs(a[i] - b[i])), sc = std::max(sc, std::fabs(b[i]));
      worst = std::max(worst, m / (sc + 1e-300));
    };
    Vec y1(R * T * H * P), y2 = y1, st1(s.states_size()), st2 = st1;
    scan_forward(y1.data(), st1.data(), x.data(), dtv.data(), A.data(), Bc.data(), Bc.data() + N, D.data(), s);
    scan_forward_recurrent(y2.data(), st2.data(), x.data(), dtv.data(), A.data(), Bc.data(), Bc.data() + N, D.data(), s);
    cmp(y1, y2), cmp(st1, st2);
    Vec g1[5], g2[5];
    for (Vec* g : {g1, g2}) {
      g[0].assign(x.size(), 0), g[1].assign(dtv.size(), 0), g[2].assign(H, 0), g[3].assign(Bc.size(), 0), g[4].assign(H, 0);
      (g == g1 ? scan_backward<double> : scan_backward_recurrent<double>)(g[0].data(), g[1].data(), g[2].data(), g[3].data(),
          g[3].data() + N, g[4].data(), dy.data(), st1.data(), x.data(), dtv.data(), A.data(), Bc.data(), Bc.data() + N, D.data(), s);
    }
    for (int i = 0; i < 5; i++) cmp(g1[i], g2[i]);
    report("scan_chunked_vs_recurrent", "y_states_grads", worst, 1e-11);
  }
  {  // combine gate (pointwise part) and mean/sum blends
    const i64 M = 3, C = 4;
    Vec fb = randn(M * 2 * C), pre = randn(M * C), w = randn(M * C);
    Var vfb{"fb", &fb}, vpre{"pre", &pre};
    check("combine_gate", {&vfb, &vpre},
          [&] { Vec o(M * C), s = pre; gate_forward(o.data(), s.data(), fb.data(), M, C); return dot(o, w); },
          [&] {
            Vec o(M * C), s = pre, dpre(M * C);
            gate_forward(o.data(), s.data(), fb.data(), M, C);
            gate_backward(vfb.grad.data(), dpre.data(), w.data(), fb.data(), s.data(), M, C);
            vpre.grad = dpre;
          });
    check("combine_mean", {&vfb}, [&] { Vec o(M * C); blend_forward(o.data(), fb.data(), 0.5, 0.5, M, C); return dot(o, w); },
          [&] { blend_backward(vfb.grad.data(), w.data(), 0.5, 0.5, M, C); });
  }
  {  // fused softmax cross-entropy (loss = mean over rows)
    const i64 M = 4, V = 6;
    Vec logits = randn(M * V, 2.0);
    std::vector<std::int32_t> tgt = {0, 5, 2, 2};
    Var vl{"logits", &logits};
    check("cross_entropy", {&vl}, [&] { Vec l = logits; return cross_entropy_forward_backward(l.data(), tgt.data(), M, V, 1.0 / M) / M; },
          [&] { Vec l = logits; cross_entropy_forward_backward(l.data(), tgt.data(), M, V, 1.0 / M); vl.grad = l; });
  }
  {  // AdamW against the textbook form of torch.optim.AdamW (different order of operations)
    const i64 n = 50;
    Vec p = randn(n), g = randn(n), m(n, 0.0), v(n, 0.0);
    Vec p2 = p, m2 = m, v2 = v;
    AdamWParams o{1e-2, 0.9, 0.999, 1e-8, 0.1, 1, 0.5};
    double err = 0;
    for (long step = 1; step <= 5; step++) {
      o.step = step;
      for (i64 i = 0; i < n; i++) g[i] = std::sin(0.3 * (double)(i + 7 * step));
      adamw_update(p.data(), g.data(), m.data(), v.data(), n, o);
      for (i64 i = 0; i < n; i++) {
        const double gi = g[i] * o.grad_scale;
        p2[i] -= o.lr * o.weight_decay * p2[i];
        m2[i] = o.beta1 * m2[i] + (1 - o.beta1) * gi;
        v2[i] = o.beta2 * v2[i] + (1 - o.beta2) * gi * gi;
        const double mh = m2[i] / (1 - std::pow(o.beta1, step)), vh = v2[i] / (1 - std::pow(o.beta2, step));
        p2[i] -= o.lr * mh / (std::sqrt(vh) + o.eps);
      }
    }
    for (i64 i = 0; i < n; i++) err = std::max(err, std::fabs(p[i] - p2[i]) / (std::fabs(p2[i]) + 1e-12));
    report("adamw", "params", err, 1e-9);
  }
  {  // BatchNorm1d, training mode (batch statistics)
    const i64 B = 6, C = 5;
    Vec x = randn(B * C, 1.5, 0.3), g = randn(C, 0.3, 1.0), bb = randn(C), w = randn(B * C);
    Var vx{"x", &x}, vg{"weight", &g}, vb{"bias", &bb};
    auto fwd = [&](Vec& o, Vec& xh, Vec& r) {
      o.assign(B * C, 0); xh.assign(B * C, 0); r.assign(C, 0);
      batchnorm_forward_train<double>(o.data(), xh.data(), r.data(), x.data(), g.data(), bb.data(), nullptr, nullptr, B, C, 1e-5, 0.1);
    };
    check("batchnorm", {&vx, &vg, &vb}, [&] { Vec o, xh, r; fwd(o, xh, r); return dot(o, w); },
          [&] { Vec o, xh, r; fwd(o, xh, r); batchnorm_backward(vx.grad.data(), vg.grad.data(), vb.grad.data(), w.data(), xh.data(), r.data(), g.data(), B, C); });
  }
  {  // LeakyReLU (inputs kept away from the kink) and inverted dropout with a fixed seed
    const i64 n = 40;
    Vec x = randn(n), w = randn(n);
    for (double& v : x) v += v > 0 ? 0.1 : -0.1;
    Var vx{"x", &x};
    check("leaky_relu", {&vx}, [&] { Vec o(n); leaky_relu_forward(o.data(), x.data(), n, 0.1); return dot(o, w); },
          [&] { leaky_relu_backward(vx.grad.data(), w.data(), x.data(), n, 0.1); });
    Vec keep(n);
    check("dropout", {&vx}, [&] { Vec o(n); dropout_forward(o.data(), keep.data(), x.data(), n, 0.5, 77); return dot(o, w); },
          [&] { Vec o(n); dropout_forward(o.data(), keep.data(), x.data(), n, 0.5, 77); dropout_backward(vx.grad.data(), w.data(), keep.data(), n); });
    i64 kept = 0;
    for (double k : keep) kept += k != 0;
    report("dropout_rate", "keep", std::fabs((double)kept / n - 0.5) > 0.25 ? 1.0 : 0.0, 0.0);
  }
  {  // class cross-entropy with per-class weights
    const i64 B = 5, C = 4;
    Vec z = randn(B * C), cw = {0.5, 2.0, 1.0, 1.5};
    std::vector<std::int32_t> t = {0, 3, 1, 1, 2};
    Var vz{"logits", &z};
    check("class_cross_entropy", {&vz},
          [&] { Vec p(B * C); return class_cross_entropy<double>(nullptr, p.data(), z.data(), t.data(), cw.data(), B, C, 1.0); },
          [&] { Vec p(B * C); class_cross_entropy<double>(vz.grad.data(), p.data(), z.data(), t.data(), cw.data(), B, C, 1.0); });
  }
  {  // global norm and the clipping factor
    Vec g = randn(200001);
    double naive = 0;
    for (double x : g) naive += x * x;
    report("global_norm", "grads", std::fabs(sum_squares(g.data(), (i64)g.size()) - naive) / naive, 1e-12);
    const double c = clip_scale(std::sqrt(naive), 1.0);
    report("clip_scale", "grads", std::fabs(c - 1.0 / (std::sqrt(naive) + 1e-6)), 1e-15);
  }
  {  // the vectorisable float exp against libm over the clamped range
    double worst = 0;
    for (float x = -87.f; x < 88.f; x += 0.00137f) {
      const double e = std::exp((double)x);
      worst = std::max(worst, std::fabs((double)vexp(x) - e) / e);
    }
    report("vexp_float", "x", worst, 2.4e-7);
  }
  std::printf("{\"failures\":%d}\n", failures);
  return failures == 0 ? 0 : 1;
}

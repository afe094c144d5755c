#include "model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "ops/adamw.h"
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
#include "profile.h"
#include "rng.h"

namespace gm {

void Config::validate() const {
  auto fail = [](const std::string& m) { throw std::invalid_argument("model config: " + m); };
  if (vocab_size < 3) fail("vocab_size must be at least 3");
  if (d_model < 1 || n_layer < 1) fail("d_model and n_layer must be positive");
  if (expand < 1 || d_state < 1) fail("expand and d_state must be positive");
  if (d_conv < 1 || d_conv > 8) fail("d_conv must be between 1 and 8");
  if (mixer == Mixer::Mamba2 && (headdim < 1 || d_inner() % headdim != 0))
    fail("d_inner (expand * d_model = " + std::to_string(d_inner()) + ") must be a multiple of headdim (" +
         std::to_string(headdim) + ")");
  if (mixer == Mixer::Mamba1 && dt_rank < 1) fail("dt_rank must be positive for the mamba1 mixer");
  if (chunk_size < 1) fail("chunk_size must be positive");
  if (pad_token_id < 0 || pad_token_id >= vocab_size) fail("pad_token_id must be a token id");
}

i64 Model::add_tensor(const std::string& name, std::vector<i64> shape, bool decay) {
  TensorInfo t;
  t.name = name;
  t.shape = std::move(shape);
  t.numel = 1;
  for (i64 s : t.shape) t.numel *= s;
  t.offset = tensors.empty() ? 0 : tensors.back().offset + tensors.back().numel;
  t.decay = decay;
  tensors.push_back(t);
  return t.offset;
}

Model::Model(const Config& c) : cfg(c) {
  cfg.validate();
  const ModelOffsets m = lay_out_tensors(cfg, cfg.mixer == Mixer::Mamba2, [this](const std::string& name, std::vector<i64> shape, bool decay) { return add_tensor(name, std::move(shape), decay); });
  layer_ = m.layers;
  emb_ = m.emb, aggr_w_ = m.aggr_w, aggr_b_ = m.aggr_b, norm_f_ = m.norm_f, head_w_ = m.head_w, head_b_ = m.head_b;
  const i64 n = tensors.back().offset + tensors.back().numel;
  params.assign(n, 0.f);
  grads.assign(n, 0.f);
  adam_m.assign(n, 0.f);
  adam_v.assign(n, 0.f);
}

// Initialisation as the reference model gets it: PyTorch defaults for Embedding (N(0,1)), Linear and
// Conv1d (U(+-1/sqrt(fan_in))), and the Mamba-2 / Mamba-1 recipes for dt_bias, A_log, D and norms.
void Model::init(std::uint64_t seed) {
  Rng rng(seed);
  float* P = params.data();
  auto uniform = [&](i64 off, i64 n, double bound) {
    for (i64 i = 0; i < n; i++) P[off + i] = (float)rng.uniform(-bound, bound);
  };
  auto fill = [&](i64 off, i64 n, float v) { std::fill(P + off, P + off + n, v); };
  auto dt_bias = [&](i64 off, i64 n) {
    for (i64 i = 0; i < n; i++) {
      double dt = std::exp(rng.uniform(std::log(1e-3), std::log(0.1)));
      dt = std::max(dt, 1e-4);
      P[off + i] = (float)(dt + std::log(-std::expm1(-dt)));  // softplus^-1(dt)
    }
  };
  const i64 d = cfg.d_model, V = cfg.vocab_size, E = cfg.d_inner(), H = cfg.nheads(), N = cfg.d_state;
  for (i64 i = 0; i < V * d; i++) P[emb_ + i] = (float)rng.normal();
  for (const LayerOffsets& o : layer_) {
    uniform(o.in_proj, cfg.d_in_proj() * d, 1.0 / std::sqrt((double)d));
    uniform(o.conv_w, cfg.conv_dim() * cfg.d_conv, 1.0 / std::sqrt((double)cfg.d_conv));
    uniform(o.conv_b, cfg.conv_dim(), 1.0 / std::sqrt((double)cfg.d_conv));
    if (cfg.mixer == Mixer::Mamba2) {
      dt_bias(o.dt_bias, H);
      for (i64 h = 0; h < H; h++) P[o.A_log + h] = (float)std::log(rng.uniform(1.0, 16.0));
      fill(o.D, H, 1.f);
      fill(o.norm_w, E, 1.f);
    } else {
      uniform(o.x_proj, cfg.xproj_dim() * E, 1.0 / std::sqrt((double)E));
      uniform(o.dt_proj_w, E * cfg.dt_rank, 1.0 / std::sqrt((double)cfg.dt_rank));
      dt_bias(o.dt_proj_b, E);
      for (i64 c = 0; c < E; c++)
        for (i64 n = 0; n < N; n++) P[o.A_log + c * N + n] = (float)std::log((double)(n + 1));  // S4D-real
      fill(o.D, E, 1.f);
    }
    uniform(o.out_proj, d * E, 1.0 / std::sqrt((double)E));
  }
  if (cfg.has_aggr()) {
    uniform(aggr_w_, 2 * d * d, 1.0 / std::sqrt(2.0 * d));
    uniform(aggr_b_, d, 1.0 / std::sqrt(2.0 * d));
  }
  fill(norm_f_, d, 1.f);
  uniform(head_w_, V * d, 1.0 / std::sqrt((double)d));
  uniform(head_b_, V, 1.0 / std::sqrt((double)d));
  std::fill(adam_m.begin(), adam_m.end(), 0.f);
  std::fill(adam_v.begin(), adam_v.end(), 0.f);
}

void Model::zero_grad() { std::fill(grads.begin(), grads.end(), 0.f); }

static void resize(std::vector<float>& v, i64 n) {
  if ((i64)v.size() != n) v.assign((size_t)n, 0.f);
}

void Model::ensure_buffers(i64 B, i64 L) {
  const i64 d = cfg.d_model, E = cfg.d_inner(), Dp = cfg.d_in_proj(), Cc = cfg.conv_dim();
  const i64 M = B * L, R = cfg.bidirectional() ? 2 * B : B, Mr = R * L;
  const i64 Hd = cfg.mixer == Mixer::Mamba2 ? cfg.nheads() : E;
  ScanShape ss{R, L, cfg.nheads(), cfg.head_channels(), cfg.d_state, cfg.chunk_size, 0, 0, 0, 0};
  resize(xs_, (cfg.n_layer + 1) * M * d);
  acts_.resize(cfg.n_layer);
  for (LayerActs& a : acts_) {
    resize(a.proj, Mr * Dp);
    resize(a.convpre, Mr * Cc);
    if (cfg.mixer == Mixer::Mamba1) {
      resize(a.xdbl, Mr * cfg.xproj_dim());
      resize(a.dtpre, Mr * E);
    } else {
      resize(a.rstd, Mr);
    }
    resize(a.y, Mr * E);
    resize(a.states, ss.states_size());
    if (cfg.has_aggr()) resize(a.fb, M * 2 * d);
    if (cfg.combine == Combine::Gate) resize(a.gate, M * d);
  }
  resize(hidden_, M * d);
  resize(rstd_f_, M);
  resize(u_, Mr * d);
  resize(convin_, Mr * Cc);
  resize(xc_, Mr * Cc);
  resize(dtv_, Mr * Hd);
  resize(aexp_, cfg.nheads() * cfg.d_state);
  resize(o_, Mr * E);
  resize(mixout_, Mr * d);
  B_ = B;
  L_ = L;
}

void Model::build_mixer_input(const float* x, float* u) const {
  const i64 d = cfg.d_model, L = L_;
  std::copy(x, x + B_ * L * d, u);
  if (!cfg.bidirectional()) return;
#pragma omp parallel for collapse(2) schedule(static)
  for (i64 b = 0; b < B_; b++) {
    for (i64 t = 0; t < L; t++) {
      const i64 len = lengths_[b];
      const i64 src = t < len ? len - 1 - t : t;  // reverse the valid prefix; pads stay in place
      std::copy(x + (b * L + src) * d, x + (b * L + src + 1) * d, u + ((B_ + b) * L + t) * d);
    }
  }
}

void Model::mask_rows(float* buf, i64 ld, i64 cols) const {
  const i64 R = rows(), L = L_;
#pragma omp parallel for collapse(2) schedule(static)
  for (i64 r = 0; r < R; r++)
    for (i64 t = 0; t < L; t++)
      if (t >= row_length(r)) std::fill(buf + (r * L + t) * ld, buf + (r * L + t) * ld + cols, 0.f);
}

// What the scan needs that is cheaper to recompute than to store, in three steps the forward pass
// interleaves with the conv and (Mamba-1) x_proj/dt_proj, and the backward pass runs back to back.
// 1. The conv input: in_proj's xBC (Mamba-2) or x (Mamba-1) columns with pads zeroed.
void Model::conv_input(i64 l) {
  const LayerActs& a = acts_[l];
  const i64 Mr = rows() * L_, Dp = cfg.d_in_proj(), Cc = cfg.conv_dim();
  const i64 xbc_col = cfg.mixer == Mixer::Mamba2 ? cfg.d_inner() : 0;
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < Mr; m++) std::copy(&a.proj[m * Dp + xbc_col], &a.proj[m * Dp + xbc_col + Cc], &convin_[m * Cc]);
  mask_rows(convin_.data(), Cc, Cc);  // pads never reach a state, whatever the layout
}

// 2. The activated conv output (SiLU, pads zeroed again: SiLU(bias) is not 0).
void Model::conv_activation(i64 l) {
  const i64 Mr = rows() * L_, Cc = cfg.conv_dim();
  silu_forward(xc_.data(), Cc, acts_[l].convpre.data(), Cc, Mr, Cc);
  mask_rows(xc_.data(), Cc, Cc);
}

// 3. Step sizes dt = softplus(. + bias) and A = -exp(A_log).
void Model::step_sizes(i64 l) {
  const LayerOffsets& o = layer_[l];
  const LayerActs& a = acts_[l];
  const float* P = params.data();
  const i64 Mr = rows() * L_, E = cfg.d_inner(), Dp = cfg.d_in_proj(), Cc = cfg.conv_dim();
  const i64 H = cfg.nheads(), N = cfg.d_state;
  if (cfg.mixer == Mixer::Mamba2) {
    softplus_forward(dtv_.data(), H, a.proj.data() + E + Cc, Dp, P + o.dt_bias, Mr, H);
    for (i64 h = 0; h < H; h++) aexp_[h] = -std::exp(P[o.A_log + h]);  // one scalar per head
  } else {
    softplus_forward(dtv_.data(), E, a.dtpre.data(), E, P + o.dt_proj_b, Mr, E);
    for (i64 i = 0; i < E * N; i++) aexp_[i] = -std::exp(P[o.A_log + i]);
  }
}

// Mamba-1's mixer output before out_proj: o = y * SiLU(z).
void Model::mamba1_gate(i64 l) {
  const LayerActs& a = acts_[l];
  const i64 Mr = rows() * L_, E = cfg.d_inner(), Dp = cfg.d_in_proj();
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < Mr; m++)
    for (i64 c = 0; c < E; c++) o_[m * E + c] = a.y[m * E + c] * silu(a.proj[m * Dp + E + c]);
}

static ScanShape scan_shape(const Config& c, i64 R, i64 L) {
  const i64 E = c.d_inner();
  if (c.mixer == Mixer::Mamba2)
    return ScanShape{R, L, c.nheads(), c.headdim, c.d_state, c.chunk_size, c.conv_dim(), c.nheads(), c.conv_dim(), E};
  return ScanShape{R, L, E, 1, c.d_state, c.chunk_size, E, E, c.xproj_dim(), E};
}

// Runs the mixer of layer l on u_ (all mixer rows), writing mixout_.
void Model::mixer_forward(i64 l) {
  const LayerOffsets& o = layer_[l];
  LayerActs& a = acts_[l];
  const float* P = params.data();
  const i64 R = rows(), L = L_, Mr = R * L, d = cfg.d_model, E = cfg.d_inner(), Dp = cfg.d_in_proj();
  const i64 Cc = cfg.conv_dim(), N = cfg.d_state;
  const ScanShape ss = scan_shape(cfg, R, L);
  {
    Section _s("fwd.in_proj");
    linear_forward(a.proj.data(), Dp, u_.data(), d, P + o.in_proj, (const float*)nullptr, Mr, d, Dp);
  }
  {
    Section _s("fwd.conv");
    conv_input(l);
    conv1d_forward(a.convpre.data(), Cc, convin_.data(), Cc, P + o.conv_w, P + o.conv_b, R, L, Cc, cfg.d_conv);
    conv_activation(l);
  }
  if (cfg.mixer == Mixer::Mamba1) {
    const i64 X = cfg.xproj_dim();
    linear_forward(a.xdbl.data(), X, xc_.data(), E, P + o.x_proj, (const float*)nullptr, Mr, E, X);
    linear_forward(a.dtpre.data(), E, a.xdbl.data(), X, P + o.dt_proj_w, (const float*)nullptr, Mr, cfg.dt_rank, E);
  }
  {
    Section _s("fwd.pointwise");
    step_sizes(l);
  }
  if (cfg.mixer == Mixer::Mamba2) {
    Section _s("fwd.scan+norm");
    scan_forward(a.y.data(), a.states.data(), xc_.data(), dtv_.data(), aexp_.data(), xc_.data() + E,
                 xc_.data() + E + N, P + o.D, ss);
    gated_rmsnorm_forward(o_.data(), a.rstd.data(), a.y.data(), a.proj.data(), Dp, P + o.norm_w, Mr, E, 1e-5f);
  } else {
    const i64 Rk = cfg.dt_rank;
    scan_forward(a.y.data(), a.states.data(), xc_.data(), dtv_.data(), aexp_.data(), a.xdbl.data() + Rk,
                 a.xdbl.data() + Rk + N, P + o.D, ss);
    mamba1_gate(l);
  }
  Section _s("fwd.out_proj");
  linear_forward(mixout_.data(), d, o_.data(), E, P + o.out_proj, (const float*)nullptr, Mr, E, d);
}

void Model::forward(const std::int32_t* tokens, const std::int32_t* lengths, i64 B, i64 L) {
  if (B < 1 || L < 1) throw std::invalid_argument("forward: batch and length must be positive");
  for (i64 b = 0; b < B; b++)
    if (lengths[b] < 0 || lengths[b] > L)
      throw std::invalid_argument("forward: lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]) +
                                  " is outside 0.." + std::to_string(L));
  for (i64 i = 0; i < B * L; i++)
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size)
      throw std::invalid_argument("forward: token id " + std::to_string(tokens[i]) + " at row " +
                                  std::to_string(i / L) + ", position " + std::to_string(i % L) +
                                  " is outside the vocabulary (0.." + std::to_string(cfg.vocab_size - 1) + ")");
  flush_denormals();
  ensure_buffers(B, L);
  tokens_.assign(tokens, tokens + B * L);
  lengths_.assign(lengths, lengths + B);
  const i64 d = cfg.d_model, M = B * L;
  const float* P = params.data();
  embedding_forward(xs_.data(), tokens, P + emb_, M, d);
  for (i64 l = 0; l < cfg.n_layer; l++) {
    const float* x = xs_.data() + l * M * d;
    float* out = xs_.data() + (l + 1) * M * d;
    build_mixer_input(x, u_.data());
    mixer_forward(l);
    if (!cfg.bidirectional()) {
#pragma omp parallel for schedule(static)
      for (i64 i = 0; i < M * d; i++) out[i] = mixout_[i] + x[i];
      continue;
    }
    // f = mixer(x) + x;  b = rev(mixer(rev x)) + x, stored side by side as [f | b] rows.
    Section _s("fwd.combine");
    std::vector<float>& fb = cfg.has_aggr() ? acts_[l].fb : dfb_;
    resize(fb, M * 2 * d);
#pragma omp parallel for collapse(2) schedule(static)
    for (i64 b = 0; b < B; b++) {
      for (i64 t = 0; t < L; t++) {
        const i64 len = lengths_[b];
        const i64 src = t < len ? len - 1 - t : t;
        const float* xf = x + (b * L + t) * d;
        const float* mf = mixout_.data() + (b * L + t) * d;
        const float* mb = mixout_.data() + ((B + b) * L + src) * d;
        float* row = fb.data() + (b * L + t) * 2 * d;
        for (i64 c = 0; c < d; c++) {
          row[c] = mf[c] + xf[c];
          row[d + c] = mb[c] + xf[c];
        }
      }
    }
    switch (cfg.combine) {
      case Combine::Gate: {
        float* s = acts_[l].gate.data();
        linear_forward(s, d, fb.data(), 2 * d, P + aggr_w_, P + aggr_b_, M, 2 * d, d);
        gate_forward(out, s, fb.data(), M, d);
        break;
      }
      case Combine::Concat:
        linear_forward(out, d, fb.data(), 2 * d, P + aggr_w_, P + aggr_b_, M, 2 * d, d);
        break;
      case Combine::Mean: blend_forward(out, fb.data(), 0.5f, 0.5f, M, d); break;
      case Combine::Sum: blend_forward(out, fb.data(), 1.f, 1.f, M, d); break;
      case Combine::Unidirectional: break;
    }
  }
  rmsnorm_forward(hidden_.data(), rstd_f_.data(), xs_.data() + cfg.n_layer * M * d, P + norm_f_, M, d,
                  (float)cfg.norm_eps);
}

void Model::logits(float* out) const {
  const i64 M = B_ * L_;
  linear_forward(out, cfg.vocab_size, hidden_.data(), cfg.d_model, params.data() + head_w_, params.data() + head_b_,
                 M, cfg.d_model, cfg.vocab_size);
}

void Model::argmax_logits(std::int32_t* out) const {
  const i64 M = B_ * L_, V = cfg.vocab_size, d = cfg.d_model;
  const i64 block = 256;  // rows per GEMM: bounds the logits buffer to block x V
  std::vector<float> buf((size_t)(std::min(block, M) * V));
  for (i64 r0 = 0; r0 < M; r0 += block) {
    const i64 nr = std::min(block, M - r0);
    linear_forward(buf.data(), V, hidden_.data() + r0 * d, d, params.data() + head_w_, params.data() + head_b_, nr, d, V);
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < nr; r++) {
      const float* row = &buf[r * V];
      i64 best = 0;
      for (i64 v = 1; v < V; v++)
        if (row[v] > row[best]) best = v;
      out[r0 + r] = (std::int32_t)best;
    }
  }
}

Model::LossResult Model::loss(const std::int32_t* targets, double scale, bool backward, const float* hidden_grad) {
  if (B_ == 0) throw std::logic_error("loss: call forward first");
  const i64 d = cfg.d_model, V = cfg.vocab_size, M = B_ * L_;
  std::vector<i64> pos;
  std::vector<std::int32_t> tgt;
  for (i64 i = 0; i < M; i++) {
    const std::int32_t t = targets[i];
    if (t == -100) continue;
    if (t < 0 || t >= V)
      throw std::invalid_argument("loss: target " + std::to_string(t) + " at row " + std::to_string(i / L_) +
                                  ", position " + std::to_string(i % L_) + " is neither -100 nor a token id");
    if (i % L_ >= lengths_[i / L_])
      throw std::invalid_argument("loss: target at padding position " + std::to_string(i % L_) + " of row " +
                                  std::to_string(i / L_) + " (use -100 there)");
    pos.push_back(i);
    tgt.push_back(t);
  }
  const i64 K = (i64)pos.size();
  if (K == 0 && !(backward && hidden_grad)) return {0.0, 0};
  flush_denormals();
  const float* P = params.data();
  float* G = grads.data();
  // The LM head in blocks of rows, so memory stays at block x V whatever the batch.
  const i64 block = 1024;
  std::vector<float> hsel, lg, dh;
  std::vector<float> dhidden;
  if (backward) {
    if (hidden_grad) {
      for (i64 i = 0; i < M * d; i++)
        if (!std::isfinite(hidden_grad[i]))
          throw std::invalid_argument("loss: hidden_grad is not finite at row " + std::to_string(i / d / L_) +
                                      ", position " + std::to_string(i / d % L_));
      dhidden.assign(hidden_grad, hidden_grad + M * d);
    } else {
      dhidden.assign((size_t)(M * d), 0.f);
    }
  }
  double total = 0;
  const float gscale = (float)(scale / (double)K);
  for (i64 k0 = 0; k0 < K; k0 += block) {
    const i64 nk = std::min(block, K - k0);
    hsel.resize(nk * d);
    lg.resize(nk * V);
    for (i64 k = 0; k < nk; k++) std::copy(&hidden_[pos[k0 + k] * d], &hidden_[(pos[k0 + k] + 1) * d], &hsel[k * d]);
    {
      Section _s("head.fwd");
      linear_forward(lg.data(), V, hsel.data(), d, P + head_w_, P + head_b_, nk, d, V);
    }
    {
      Section _s("head.ce");
      total += cross_entropy_forward_backward(lg.data(), tgt.data() + k0, nk, V, gscale);
    }
    if (backward) {
      dh.assign(nk * d, 0.f);
      Section _s("head.bwd");
      linear_backward(dh.data(), d, G + head_w_, G + head_b_, lg.data(), V, hsel.data(), d, P + head_w_, nk, d, V);
      for (i64 k = 0; k < nk; k++)
        for (i64 c = 0; c < d; c++) dhidden[pos[k0 + k] * d + c] += dh[k * d + c];
    }
  }
  const double mean = K ? total / (double)K : 0.0;
  if (!std::isfinite(mean))
    throw std::runtime_error("loss is not finite (" + std::to_string(mean) +
                             "): the parameters or activations contain NaN or Inf");
  if (!backward) return {mean, K};

  // Backward through the final norm, the layers (last to first) and the embedding.
  resize(dx_, M * d);
  std::fill(dx_.begin(), dx_.end(), 0.f);
  rmsnorm_backward(dx_.data(), G + norm_f_, dhidden.data(), xs_.data() + cfg.n_layer * M * d, P + norm_f_,
                   rstd_f_.data(), M, d);
  std::vector<float> dout(M * d);
  for (i64 l = cfg.n_layer - 1; l >= 0; l--) {
    dout.swap(dx_);  // dout = gradient w.r.t. this layer's output
    std::fill(dx_.begin(), dx_.end(), 0.f);
    const i64 R = rows(), Mr = R * L_;
    resize(dm_, Mr * d);
    const float* x = xs_.data() + l * M * d;
    if (!cfg.bidirectional()) {
      std::copy(dout.begin(), dout.end(), dm_.begin());
      std::copy(dout.begin(), dout.end(), dx_.begin());
    } else {
      Section _s("bwd.combine");
      resize(dfb_, M * 2 * d);
      std::fill(dfb_.begin(), dfb_.end(), 0.f);
      const std::vector<float>* fbp = cfg.has_aggr() ? &acts_[l].fb : nullptr;
      switch (cfg.combine) {
        case Combine::Gate: {
          resize(dpre_, M * d);
          gate_backward(dfb_.data(), dpre_.data(), dout.data(), fbp->data(), acts_[l].gate.data(), M, d);
          linear_backward(dfb_.data(), 2 * d, G + aggr_w_, G + aggr_b_, dpre_.data(), d, fbp->data(), 2 * d,
                          P + aggr_w_, M, 2 * d, d);
          break;
        }
        case Combine::Concat:
          linear_backward(dfb_.data(), 2 * d, G + aggr_w_, G + aggr_b_, dout.data(), d, fbp->data(), 2 * d,
                          P + aggr_w_, M, 2 * d, d);
          break;
        case Combine::Mean: blend_backward(dfb_.data(), dout.data(), 0.5f, 0.5f, M, d); break;
        case Combine::Sum: blend_backward(dfb_.data(), dout.data(), 1.f, 1.f, M, d); break;
        case Combine::Unidirectional: break;
      }
      // Residuals: dx = df + db; mixer rows: forward rows get df, reversed rows get rev(db).
#pragma omp parallel for collapse(2) schedule(static)
      for (i64 b = 0; b < B_; b++) {
        for (i64 t = 0; t < L_; t++) {
          const i64 len = lengths_[b];
          const i64 src = t < len ? len - 1 - t : t;
          const float* g = dfb_.data() + (b * L_ + t) * 2 * d;
          const float* gb_src = dfb_.data() + (b * L_ + src) * 2 * d + d;
          float* dxr = dx_.data() + (b * L_ + t) * d;
          float* dmf = dm_.data() + (b * L_ + t) * d;
          float* dmb = dm_.data() + ((B_ + b) * L_ + t) * d;
          for (i64 c = 0; c < d; c++) {
            dxr[c] = g[c] + g[d + c];
            dmf[c] = g[c];
            dmb[c] = gb_src[c];
          }
        }
      }
    }
    build_mixer_input(x, u_.data());
    mixer_backward(l);
    // dx += du[forward rows] + rev(du[reversed rows])
#pragma omp parallel for collapse(2) schedule(static)
    for (i64 b = 0; b < B_; b++) {
      for (i64 t = 0; t < L_; t++) {
        float* dxr = dx_.data() + (b * L_ + t) * d;
        const float* f = du_.data() + (b * L_ + t) * d;
        for (i64 c = 0; c < d; c++) dxr[c] += f[c];
        if (cfg.bidirectional()) {
          const i64 len = lengths_[b];
          const i64 src = t < len ? len - 1 - t : t;
          const float* r = du_.data() + ((B_ + b) * L_ + src) * d;
          for (i64 c = 0; c < d; c++) dxr[c] += r[c];
        }
      }
    }
  }
  Section _s("bwd.embedding");
  embedding_backward(G + emb_, dx_.data(), tokens_.data(), M, d);
  return {mean, K};
}

// Backward of layer l's mixer: dm_ (all mixer rows) -> du_, accumulating parameter gradients.
void Model::mixer_backward(i64 l) {
  const LayerOffsets& o = layer_[l];
  LayerActs& a = acts_[l];
  const float* P = params.data();
  float* G = grads.data();
  const i64 R = rows(), L = L_, Mr = R * L, d = cfg.d_model, E = cfg.d_inner(), Dp = cfg.d_in_proj();
  const i64 Cc = cfg.conv_dim(), N = cfg.d_state, H = cfg.nheads();
  const ScanShape ss = scan_shape(cfg, R, L);
  auto zeroed = [](std::vector<float>& v, i64 n) {
    resize(v, n);
    std::fill(v.begin(), v.end(), 0.f);
  };
  {
    Section _s("bwd.recompute");
    conv_input(l);
    conv_activation(l);
    step_sizes(l);
  }
  zeroed(dproj_, Mr * Dp);
  resize(do_, Mr * E);  // written by out_proj's backward
  zeroed(dy_, Mr * E);
  zeroed(dxc_, Mr * Cc);
  zeroed(daexp_, cfg.nheads() * N);
  if (cfg.mixer == Mixer::Mamba2) {
    gated_rmsnorm_forward(o_.data(), (float*)nullptr, a.y.data(), a.proj.data(), Dp, P + o.norm_w, Mr, E, 1e-5f);
    {
      Section _s("bwd.out_proj");
      linear_backward(do_.data(), E, G + o.out_proj, (float*)nullptr, dm_.data(), d, o_.data(), E, P + o.out_proj, Mr,
                      E, d, true);
    }
    {
      Section _s("bwd.gated_norm");
      gated_rmsnorm_backward(dy_.data(), dproj_.data(), Dp, G + o.norm_w, do_.data(), a.y.data(), a.proj.data(), Dp,
                             P + o.norm_w, a.rstd.data(), Mr, E);
    }
    zeroed(ddt_, Mr * H);
    {
      Section _s("bwd.scan");
      scan_backward(dxc_.data(), ddt_.data(), daexp_.data(), dxc_.data() + E, dxc_.data() + E + N, G + o.D, dy_.data(),
                    a.states.data(), xc_.data(), dtv_.data(), aexp_.data(), xc_.data() + E, xc_.data() + E + N, P + o.D,
                    ss);
    }
    for (i64 h = 0; h < H; h++) G[o.A_log + h] += daexp_[h] * aexp_[h];  // dA_log = dA * A
    softplus_backward(dproj_.data() + E + Cc, Dp, G + o.dt_bias, ddt_.data(), H, a.proj.data() + E + Cc, Dp,
                      P + o.dt_bias, Mr, H);
  } else {
    const i64 X = cfg.xproj_dim(), Rk = cfg.dt_rank;
    mamba1_gate(l);
    linear_backward(do_.data(), E, G + o.out_proj, (float*)nullptr, dm_.data(), d, o_.data(), E, P + o.out_proj, Mr, E,
                    d, true);
#pragma omp parallel for schedule(static)
    for (i64 m = 0; m < Mr; m++) {
      for (i64 c = 0; c < E; c++) {
        const float z = a.proj[m * Dp + E + c], g = do_[m * E + c];
        dy_[m * E + c] = g * silu(z);
        dproj_[m * Dp + E + c] = g * a.y[m * E + c] * silu_grad(z);
      }
    }
    zeroed(ddt_, Mr * E);
    zeroed(dxdbl_, Mr * X);
    scan_backward(dxc_.data(), ddt_.data(), daexp_.data(), dxdbl_.data() + Rk, dxdbl_.data() + Rk + N, G + o.D,
                  dy_.data(), a.states.data(), xc_.data(), dtv_.data(), aexp_.data(), a.xdbl.data() + Rk,
                  a.xdbl.data() + Rk + N, P + o.D, ss);
    for (i64 i = 0; i < E * N; i++) G[o.A_log + i] += daexp_[i] * aexp_[i];
    zeroed(ddtpre_, Mr * E);
    softplus_backward(ddtpre_.data(), E, G + o.dt_proj_b, ddt_.data(), E, a.dtpre.data(), E, P + o.dt_proj_b, Mr, E);
    linear_backward(dxdbl_.data(), X, G + o.dt_proj_w, (float*)nullptr, ddtpre_.data(), E, a.xdbl.data(), X,
                    P + o.dt_proj_w, Mr, Rk, E);
    linear_backward(dxc_.data(), E, G + o.x_proj, (float*)nullptr, dxdbl_.data(), X, xc_.data(), E, P + o.x_proj, Mr,
                    E, X);
  }
  // Through the output mask, SiLU, the conv and the input mask, into in_proj's xBC (or x) columns.
  mask_rows(dxc_.data(), Cc, Cc);
  zeroed(dconv_, Mr * Cc);
  silu_backward(dconv_.data(), Cc, dxc_.data(), Cc, a.convpre.data(), Cc, Mr, Cc);
  const i64 xbc_col = cfg.mixer == Mixer::Mamba2 ? E : 0;
  {
    Section _s("bwd.conv");
    conv1d_backward(dproj_.data() + xbc_col, Dp, G + o.conv_w, G + o.conv_b, dconv_.data(), Cc, convin_.data(), Cc,
                    P + o.conv_w, R, L, Cc, cfg.d_conv);
  }
  mask_rows(dproj_.data() + xbc_col, Dp, Cc);
  resize(du_, Mr * d);
  Section _s("bwd.in_proj");
  linear_backward(du_.data(), d, G + o.in_proj, (float*)nullptr, dproj_.data(), Dp, u_.data(), d, P + o.in_proj, Mr, d,
                  Dp, true);
}

double Model::grad_norm() const { return std::sqrt(sum_squares(grads.data(), (i64)grads.size())); }

void Model::adamw(const AdamWOptions& o) {
  Section _s("adamw");
  for (const TensorInfo& t : tensors) {
    AdamWParams p{o.lr, o.beta1, o.beta2, o.eps, t.decay ? o.weight_decay : 0.0, o.step, o.grad_scale};
    adamw_update(params.data() + t.offset, grads.data() + t.offset, adam_m.data() + t.offset,
                 adam_v.data() + t.offset, t.numel, p);
  }
}

i64 Model::activation_bytes() const {
  i64 n = (i64)(xs_.size() + hidden_.size() + rstd_f_.size() + u_.size() + convin_.size() + xc_.size() + dtv_.size() +
                o_.size() + mixout_.size());
  for (const LayerActs& a : acts_)
    n += (i64)(a.proj.size() + a.convpre.size() + a.xdbl.size() + a.dtpre.size() + a.y.size() + a.rstd.size() +
               a.states.size() + a.fb.size() + a.gate.size());
  return n * (i64)sizeof(float);
}

}  // namespace gm

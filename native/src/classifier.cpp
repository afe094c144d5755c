#include "classifier.h"

#include <cmath>
#include <stdexcept>

#include "ops/adamw.h"
#include "ops/batchnorm.h"
#include "ops/class_cross_entropy.h"
#include "ops/dropout.h"
#include "ops/global_norm.h"
#include "ops/leaky_relu.h"
#include "ops/linear.h"
#include "rng.h"

namespace gm {

void ClassifierConfig::validate() const {
  if (d_in < 1) throw std::invalid_argument("classifier: d_in must be >= 1");
  if (n_classes < 2) throw std::invalid_argument("classifier: needs at least 2 classes, got " + std::to_string(n_classes));
  if (hidden < 1) throw std::invalid_argument("classifier: hidden must be >= 1");
  if (n_layers < 1) throw std::invalid_argument("classifier: n_layers must be >= 1");
  if (!(dropout >= 0 && dropout < 1)) throw std::invalid_argument("classifier: dropout must be in [0, 1)");
}

i64 Classifier::add_tensor(std::vector<TensorInfo>& table, i64& size, const std::string& name, std::vector<i64> shape,
                           bool decay) {
  TensorInfo t;
  t.name = name;
  t.shape = std::move(shape);
  t.numel = 1;
  for (i64 s : t.shape) t.numel *= s;
  t.offset = size;
  t.decay = decay;
  size += t.numel;
  table.push_back(t);
  return t.offset;
}

Classifier::Classifier(const ClassifierConfig& c) : cfg(c) {
  cfg.validate();
  i64 np = 0, nb = 0;
  i64 in = cfg.d_in;
  for (i64 l = 0; l + 1 < cfg.n_layers; l++) {
    Block b;
    b.in = in;
    const std::string p = "classifier.layers." + std::to_string(l) + ".";
    b.w = add_tensor(tensors, np, p + "linear.weight", {cfg.hidden, in}, true);
    b.b = add_tensor(tensors, np, p + "linear.bias", {cfg.hidden}, false);
    b.bn_w = add_tensor(tensors, np, p + "norm.weight", {cfg.hidden}, false);
    b.bn_b = add_tensor(tensors, np, p + "norm.bias", {cfg.hidden}, false);
    b.rm = add_tensor(buffer_tensors, nb, p + "norm.running_mean", {cfg.hidden}, false);
    b.rv = add_tensor(buffer_tensors, nb, p + "norm.running_var", {cfg.hidden}, false);
    blocks_.push_back(std::move(b));
    in = cfg.hidden;
  }
  out_w_ = add_tensor(tensors, np, "classifier.out.weight", {cfg.n_classes, in}, true);
  out_b_ = add_tensor(tensors, np, "classifier.out.bias", {cfg.n_classes}, false);
  params.assign((size_t)np, 0.f);
  grads.assign((size_t)np, 0.f);
  adam_m.assign((size_t)np, 0.f);
  adam_v.assign((size_t)np, 0.f);
  buffers.assign((size_t)nb, 0.f);
  for (auto& b : blocks_) std::fill(buffers.begin() + b.rv, buffers.begin() + b.rv + cfg.hidden, 1.f);
}

void Classifier::init(std::uint64_t seed) {
  Rng rng(seed);
  auto uniform = [&](i64 off, i64 n, double bound) {
    for (i64 i = 0; i < n; i++) params[off + i] = (float)rng.uniform(-bound, bound);
  };
  for (auto& b : blocks_) {
    const double bound = 1.0 / std::sqrt((double)b.in);
    uniform(b.w, cfg.hidden * b.in, bound);
    uniform(b.b, cfg.hidden, bound);
    std::fill(params.begin() + b.bn_w, params.begin() + b.bn_w + cfg.hidden, 1.f);
    std::fill(params.begin() + b.bn_b, params.begin() + b.bn_b + cfg.hidden, 0.f);
    std::fill(buffers.begin() + b.rm, buffers.begin() + b.rm + cfg.hidden, 0.f);
    std::fill(buffers.begin() + b.rv, buffers.begin() + b.rv + cfg.hidden, 1.f);
  }
  const i64 in = blocks_.empty() ? cfg.d_in : cfg.hidden;
  const double bound = 1.0 / std::sqrt((double)in);
  uniform(out_w_, cfg.n_classes * in, bound);
  uniform(out_b_, cfg.n_classes, bound);
}

void Classifier::zero_grad() { std::fill(grads.begin(), grads.end(), 0.f); }

const float* Classifier::forward(const float* x, i64 B, bool train, std::uint64_t seed) {
  if (B < 1) throw std::invalid_argument("classifier forward: empty batch");
  if (train && B < 2 && !blocks_.empty())
    throw std::invalid_argument("classifier forward: BatchNorm in training mode needs at least 2 cells per batch");
  B_ = B;
  train_ = train;
  const i64 H = cfg.hidden;
  std::vector<float> cur(x, x + B * cfg.d_in);
  for (size_t l = 0; l < blocks_.size(); l++) {
    Block& b = blocks_[l];
    b.input.swap(cur);
    b.lin.resize((size_t)(B * H));
    b.bn.resize((size_t)(B * H));
    b.drop.resize((size_t)(B * H));
    linear_forward(b.lin.data(), H, b.input.data(), b.in, &params[b.w], &params[b.b], B, b.in, H);
    if (train) {
      b.xhat.resize((size_t)(B * H));
      b.rstd.resize((size_t)H);
      b.keep.resize((size_t)(B * H));
      batchnorm_forward_train(b.bn.data(), b.xhat.data(), b.rstd.data(), b.lin.data(), &params[b.bn_w], &params[b.bn_b],
                              &buffers[b.rm], &buffers[b.rv], B, H, cfg.bn_eps, cfg.bn_momentum);
      // one independent mask per layer and step
      dropout_forward(b.drop.data(), b.keep.data(), b.bn.data(), B * H, cfg.dropout, seed * 0x100000001B3ull + l);
    } else {
      batchnorm_forward_eval(b.bn.data(), b.lin.data(), &params[b.bn_w], &params[b.bn_b], &buffers[b.rm], &buffers[b.rv], B,
                             H, cfg.bn_eps);
      b.drop = b.bn;
    }
    cur.resize((size_t)(B * H));
    leaky_relu_forward(cur.data(), b.drop.data(), B * H, (float)cfg.negative_slope);
  }
  last_in_.swap(cur);
  const float* in = last_in_.data();
  const i64 in_dim = blocks_.empty() ? cfg.d_in : H;
  logits_.resize((size_t)(B * cfg.n_classes));
  linear_forward(logits_.data(), cfg.n_classes, in, in_dim, &params[out_w_], &params[out_b_], B, in_dim, cfg.n_classes);
  return logits_.data();
}

double Classifier::loss(const std::int32_t* targets, const float* class_weight, double scale, bool backward) {
  if (B_ == 0) throw std::logic_error("classifier loss: call forward first");
  for (i64 b = 0; b < B_; b++)
    if (targets[b] < 0 || targets[b] >= cfg.n_classes)
      throw std::invalid_argument("classifier loss: target " + std::to_string(targets[b]) + " out of range [0, " + std::to_string(cfg.n_classes) + ")");
  probs_.resize((size_t)(B_ * cfg.n_classes));
  dlogits_.resize((size_t)(B_ * cfg.n_classes));
  const double l = class_cross_entropy(backward ? dlogits_.data() : (float*)nullptr, probs_.data(), logits_.data(), targets,
                                       class_weight, B_, cfg.n_classes, scale);
  if (backward) this->backward(dlogits_.data());
  return l;
}

void Classifier::backward(const float* dlogits) {
  if (B_ == 0) throw std::logic_error("classifier backward: call forward first");
  if (!train_ && !blocks_.empty()) throw std::logic_error("classifier backward: the last forward was in eval mode");
  const i64 B = B_, H = cfg.hidden, C = cfg.n_classes;
  const i64 in_dim = blocks_.empty() ? cfg.d_in : H;
  // d(input of the output layer)
  std::vector<float>& dcur = dbuf_a_;
  dcur.assign((size_t)(B * in_dim), 0.f);
  linear_backward(dcur.data(), in_dim, &grads[out_w_], &grads[out_b_], dlogits, C, last_in_.data(), in_dim, &params[out_w_], B,
                  in_dim, C);
  for (size_t li = blocks_.size(); li-- > 0;) {
    Block& b = blocks_[li];
    // LeakyReLU -> dropout -> BatchNorm -> Linear, each accumulating into a zeroed buffer
    dbuf_b_.assign((size_t)(B * H), 0.f);
    leaky_relu_backward(dbuf_b_.data(), dcur.data(), b.drop.data(), B * H, (float)cfg.negative_slope);
    dcur.assign((size_t)(B * H), 0.f);
    dropout_backward(dcur.data(), dbuf_b_.data(), b.keep.data(), B * H);
    dbuf_b_.assign((size_t)(B * H), 0.f);
    batchnorm_backward(dbuf_b_.data(), &grads[b.bn_w], &grads[b.bn_b], dcur.data(), b.xhat.data(), b.rstd.data(), &params[b.bn_w],
                       B, H);
    dcur.assign((size_t)(B * b.in), 0.f);
    linear_backward(dcur.data(), b.in, &grads[b.w], &grads[b.b], dbuf_b_.data(), H, b.input.data(), b.in, &params[b.w], B, b.in, H);
  }
  dx_ = dcur;
}

double Classifier::grad_norm() const { return std::sqrt(sum_squares(grads.data(), (i64)grads.size())); }

void Classifier::adamw(const AdamWOptions& o) {
  AdamWParams p{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.step, o.grad_scale};
  for (const auto& t : tensors) {
    AdamWParams q = p;
    if (!t.decay) q.weight_decay = 0;
    adamw_update(&params[t.offset], &grads[t.offset], &adam_m[t.offset], &adam_v[t.offset], t.numel, q);
  }
}

}  // namespace gm

// The reference fine-tuning head (GeneMamba's Classifier(d, C, hidden=512, num_layers=4)): blocks of
// Linear -> BatchNorm1d -> Dropout -> LeakyReLU, then Linear(hidden, C). It reads one vector per
// cell (the CLS state) and has its own flat parameter/gradient/moment buffers with a tensor table,
// like Model; BatchNorm running statistics live in a separate non-trained buffer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model.h"

namespace gm {

struct ClassifierConfig {
  i64 d_in = 0, n_classes = 0, hidden = 512, n_layers = 4;
  double dropout = 0.5, negative_slope = 0.1, bn_eps = 1e-5, bn_momentum = 0.1;
  void validate() const;
};

class Classifier {
 public:
  explicit Classifier(const ClassifierConfig& cfg);

  const ClassifierConfig cfg;
  std::vector<TensorInfo> tensors, buffer_tensors;  // parameters; running statistics
  std::vector<float> params, grads, adam_m, adam_v, buffers;

  void init(std::uint64_t seed);  // torch defaults: Linear U(+-1/sqrt(fan_in)), BN weight 1 bias 0
  void zero_grad();
  // x: [B, d_in]. train: batch statistics + dropout with the given seed (running stats move);
  // otherwise running statistics and no dropout. Returns logits [B, C] (owned by the classifier).
  const float* forward(const float* x, i64 B, bool train, std::uint64_t seed);
  // Cross-entropy of the last forward against targets (class_weight optional, [C]). With
  // backward=true, accumulates the gradient of scale*loss into grads and writes d loss / d x into
  // dx() ([B, d_in]). probs() holds the softmax of the last call.
  double loss(const std::int32_t* targets, const float* class_weight, double scale, bool backward);
  // Backward from a given dlogits [B, C] (tests and callers with their own loss).
  void backward(const float* dlogits);
  const float* dx() const { return dx_.data(); }
  const float* probs() const { return probs_.data(); }
  i64 batch() const { return B_; }

  double grad_norm() const;
  void adamw(const AdamWOptions& o);

 private:
  i64 add_tensor(std::vector<TensorInfo>& table, i64& size, const std::string& name, std::vector<i64> shape, bool decay);
  struct Block {
    i64 in = 0, w = -1, b = -1, bn_w = -1, bn_b = -1, rm = -1, rv = -1;
    std::vector<float> input, lin, xhat, rstd, bn, keep, drop;  // activations of the last forward
  };
  std::vector<Block> blocks_;
  i64 out_w_ = -1, out_b_ = -1;
  i64 B_ = 0;
  bool train_ = false;
  std::vector<float> last_in_, logits_, probs_, dlogits_, dx_, dbuf_a_, dbuf_b_;
};

}  // namespace gm

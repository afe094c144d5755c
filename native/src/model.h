// The GeneMamba model on the CPU: embedding -> n_layer BiMamba layers -> RMSNorm -> LM head.
// Parameters, gradients and AdamW moments are flat float buffers described by a tensor table whose
// names and shapes are the reference PyTorch state-dict's, so checkpoints map one to one.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/common.h"
#include "tensor_layout.h"

namespace gm {

enum class Mixer { Mamba2, Mamba1 };
enum class Combine { Gate, Mean, Sum, Concat, Unidirectional };

struct Config {
  i64 vocab_size = 0, d_model = 0, n_layer = 0;
  Mixer mixer = Mixer::Mamba2;
  Combine combine = Combine::Gate;
  i64 d_state = 64, headdim = 64, expand = 2, d_conv = 4, dt_rank = 0;
  double norm_eps = 1e-5;
  std::int32_t pad_token_id = 1;
  i64 chunk_size = 64;  // scan chunk: checkpoint interval and SSD block (speed/memory; results differ by rounding only)

  i64 d_inner() const { return expand * d_model; }
  i64 nheads() const { return mixer == Mixer::Mamba2 ? d_inner() / headdim : d_inner(); }
  i64 head_channels() const { return mixer == Mixer::Mamba2 ? headdim : 1; }
  i64 d_in_proj() const { return mixer == Mixer::Mamba2 ? 2 * d_inner() + 2 * d_state + nheads() : 2 * d_inner(); }
  i64 conv_dim() const { return mixer == Mixer::Mamba2 ? d_inner() + 2 * d_state : d_inner(); }
  i64 xproj_dim() const { return dt_rank + 2 * d_state; }  // Mamba-1 only
  bool bidirectional() const { return combine != Combine::Unidirectional; }
  bool has_aggr() const { return combine == Combine::Gate || combine == Combine::Concat; }
  void validate() const;  // throws std::invalid_argument with a readable message
};

struct TensorInfo {
  std::string name;
  std::vector<i64> shape;
  i64 offset = 0, numel = 0;
  bool decay = false;  // weight decay applies (matrices other than the embedding)
};

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  long step = 1;
  double grad_scale = 1.0;
};

class Model {
 public:
  explicit Model(const Config& cfg);

  const Config cfg;
  std::vector<TensorInfo> tensors;
  std::vector<float> params, grads, adam_m, adam_v;

  void init(std::uint64_t seed);
  void zero_grad();

  // Runs the layers on a right-padded batch [B, L] and keeps what backward needs.
  void forward(const std::int32_t* tokens, const std::int32_t* lengths, i64 B, i64 L);
  // Post-norm hidden states [B, L, d] of the last forward.
  const float* hidden() const { return hidden_.data(); }
  // Logits [B, L, V] of the last forward (computed on demand, in row blocks).
  void logits(float* out) const;
  // argmax over the vocabulary of every position's logits [B, L], without materialising them.
  void argmax_logits(std::int32_t* out) const;
  // Mean cross-entropy over targets != -100 of the last forward; with backward=true, accumulates
  // the gradient of scale * loss into grads. LM-head work is done only at target positions.
  // hidden_grad (optional, [B, L, d]) is the gradient of any further loss with respect to the
  // post-norm hidden states (a contrastive term, a classifier on the CLS state, ...): it is added
  // before the backward pass, so one pass serves both. All targets may be -100 when it is given.
  struct LossResult {
    double loss;
    i64 count;
  };
  LossResult loss(const std::int32_t* targets, double scale, bool backward, const float* hidden_grad = nullptr);

  double grad_norm() const;
  void adamw(const AdamWOptions& o);
  i64 activation_bytes() const;

 private:
  std::vector<LayerOffsets> layer_;
  i64 emb_ = -1, aggr_w_ = -1, aggr_b_ = -1, norm_f_ = -1, head_w_ = -1, head_b_ = -1;
  i64 add_tensor(const std::string& name, std::vector<i64> shape, bool decay);

  // Activations of the last forward.
  i64 B_ = 0, L_ = 0;
  std::vector<std::int32_t> tokens_, lengths_;
  std::vector<float> xs_;  // layer inputs: (n_layer + 1) x [B*L, d]
  struct LayerActs {
    std::vector<float> proj, convpre, xdbl, dtpre, y, rstd, states, fb, gate;
  };
  std::vector<LayerActs> acts_;
  std::vector<float> hidden_, rstd_f_;
  // Scratch shared by the layers.
  std::vector<float> u_, convin_, xc_, dtv_, aexp_, o_, mixout_;
  std::vector<float> dx_, dfb_, dpre_, du_, dm_, do_, dy_, dproj_, dxc_, dconv_, ddt_, dxdbl_, ddtpre_, daexp_;

  void ensure_buffers(i64 B, i64 L);
  void build_mixer_input(const float* x, float* u) const;           // [x; rev(x)]
  void mixer_forward(i64 l);
  void mixer_backward(i64 l);
  void conv_input(i64 l);
  void conv_activation(i64 l);
  void step_sizes(i64 l);
  void mamba1_gate(i64 l);
  void mask_rows(float* buf, i64 ld, i64 cols) const;  // zero pad positions of every mixer row
  i64 rows() const { return cfg.bidirectional() ? 2 * B_ : B_; }
  i64 row_length(i64 r) const { return lengths_[r % B_]; }
};

}  // namespace gm

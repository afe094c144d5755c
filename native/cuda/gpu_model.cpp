// The GeneMamba training step on the GPU (see gpu_model.h): native/src/model.cpp's Model, op for op,
// over the launchers of kernels.h and the device interface of device.h. Nothing here touches device
// memory directly, so it compiles with g++ or nvcc and runs unchanged on the emulated backend.
#include "gpu_model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <type_traits>

namespace gm {
namespace cuda {

namespace dev = device;

template <typename T>
i64 GpuModel<T>::add_tensor(const std::string& name, std::vector<i64> shape, bool decay) {
  GpuTensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.numel = 1;
  for (i64 s : t.shape) t.numel *= s;
  t.offset = tensors.empty() ? 0 : tensors.back().offset + tensors.back().numel;
  t.decay = decay;
  tensors.push_back(t);
  return t.offset;
}

// The tensor table, in Model's order (model.cpp Model::Model).
template <typename T>
GpuModel<T>::GpuModel(const GpuConfig& c, cudaStream_t stream) : cfg(c), s_(stream) {
  if (cfg.d_state < 1 || cfg.d_state > kScanMaxN) throw std::invalid_argument("gpu model: d_state must be 1..64");
  if (!mamba1() && (cfg.headdim < 1 || cfg.d_inner() % cfg.headdim))
    throw std::invalid_argument("gpu model: headdim must divide d_inner");
  if (mamba1() && cfg.dt_rank < 1) throw std::invalid_argument("gpu model: dt_rank must be positive for mamba1");
  if (ssd() && cfg.headdim < 2) throw std::invalid_argument("gpu model: the SSD scan needs headdim > 1");
  const ModelOffsets m = lay_out_tensors(cfg, !mamba1(), [this](const std::string& name, std::vector<i64> shape, bool decay) { return add_tensor(name, std::move(shape), decay); });
  layer_ = m.layers;
  emb_ = m.emb, aggr_w_ = m.aggr_w, aggr_b_ = m.aggr_b, norm_f_ = m.norm_f, head_w_ = m.head_w, head_b_ = m.head_b;
  n_ = tensors.back().offset + tensors.back().numel;
  // The reduction ranges in the table's order (tensor_layout.h: embedding | layer 0 ... layer n-1 |
  // aggr | norm_f, lm_head), reduced as backward finishes them: norm_f + LM head, layers n-1 ... 0,
  // then the shared gate and the embedding.
  reduce_order_.emplace_back(norm_f_, n_ - norm_f_);
  for (i64 l = cfg.n_layer - 1; l >= 0; l--) {
    const i64 begin = layer_[(size_t)l].in_proj;
    const i64 end = l + 1 < cfg.n_layer ? layer_[(size_t)l + 1].in_proj : (aggr_w_ >= 0 ? aggr_w_ : norm_f_);
    reduce_order_.emplace_back(begin, end - begin);
  }
  if (aggr_w_ >= 0) reduce_order_.emplace_back(aggr_w_, norm_f_ - aggr_w_);
  reduce_order_.emplace_back(emb_, (layer_.empty() ? (aggr_w_ >= 0 ? aggr_w_ : norm_f_) : layer_[0].in_proj) - emb_);
  const std::size_t bytes = (std::size_t)n_ * sizeof(float);
  master_ = (float*)dev::alloc(bytes);
  grad_ = (float*)dev::alloc(bytes);
  m_ = (float*)dev::alloc(bytes);
  v_ = (float*)dev::alloc(bytes);
  if (!std::is_same<T, float>::value) copy_ = (T*)dev::alloc((std::size_t)n_ * sizeof(T));
  for (float* p : {master_, grad_, m_, v_}) dev::memset_zero(p, bytes, s_);
  if (copy_) dev::memset_zero(copy_, (std::size_t)n_ * sizeof(T), s_);
  clip_ = (float*)dev::alloc(sizeof(float));
  dsum_ = (double*)dev::alloc(sizeof(double));
  sum_scratch_ = (double*)dev::alloc((std::size_t)sum_scratch_doubles(n_) * sizeof(double));
}

template <typename T>
GpuModel<T>::~GpuModel() {
  if (reduce_pending_) {
    try {  // a reduction may still read the gradients: let it finish (or fail) before freeing them
      wait_grads();
    } catch (...) {
    }
  }
  if (ready_) dev::event_destroy(ready_);
  if (reduced_) dev::event_destroy(reduced_);
  if (cs_) dev::stream_destroy(cs_);
  release();
  for (void* p : {(void*)master_, (void*)grad_, (void*)m_, (void*)v_, (void*)copy_, (void*)clip_, (void*)dsum_,
                  (void*)sum_scratch_})
    dev::free(p);
}

template <typename T>
const T* GpuModel<T>::P(i64 off) const {
  if constexpr (std::is_same<T, float>::value) return master_ + off;
  else return copy_ + off;
}

template <typename T>
void GpuModel<T>::set_params(const float* host) {
  dev::copy_to_device(master_, host, (std::size_t)n_ * sizeof(float), s_);
  if (copy_) dev::upload(copy_, dtype_of<T>(), host, n_, s_);
}
template <typename T>
void GpuModel<T>::get_params(float* host) const {
  dev::copy_to_host(host, master_, (std::size_t)n_ * sizeof(float), s_);
}
template <typename T>
void GpuModel<T>::set_moments(const float* m, const float* v) {
  dev::copy_to_device(m_, m, (std::size_t)n_ * sizeof(float), s_);
  dev::copy_to_device(v_, v, (std::size_t)n_ * sizeof(float), s_);
}
template <typename T>
void GpuModel<T>::get_moments(float* m, float* v) const {
  dev::copy_to_host(m, m_, (std::size_t)n_ * sizeof(float), s_);
  dev::copy_to_host(v, v_, (std::size_t)n_ * sizeof(float), s_);
}
template <typename T>
void GpuModel<T>::set_grads(const float* host) {
  wait_grads();
  dev::copy_to_device(grad_, host, (std::size_t)n_ * sizeof(float), s_);
}
template <typename T>
void GpuModel<T>::get_grads(float* host) const {
  const_cast<GpuModel*>(this)->wait_grads();
  dev::copy_to_host(host, grad_, (std::size_t)n_ * sizeof(float), s_);
}
template <typename T>
void GpuModel<T>::zero_grad() {
  wait_grads();
  dev::memset_zero(grad_, (std::size_t)n_ * sizeof(float), s_);
}

template <typename T>
template <typename U>
U* GpuModel<T>::buf(i64 n) {
  void* p = dev::alloc((std::size_t)std::max<i64>(n, 1) * sizeof(U));
  owned_.push_back(p);
  return (U*)p;
}
template <typename T>
void GpuModel<T>::release() {
  for (void* p : owned_) dev::free(p);
  owned_.clear();
  acts_.clear();
  B_ = L_ = 0;
}

template <typename T>
ScanDims GpuModel<T>::scan_dims(i64 R, i64 L) const {
  const i64 Cc = cfg.conv_dim(), E = cfg.d_inner();
  if (mamba1())  // model.cpp scan_shape: every channel its own lane, dt and A[c, :]; B, C in x_proj's output
    return ScanDims{R, L, E, 1, cfg.d_state, cfg.chunk_size, E, E, cfg.xproj_dim(), E};
  return ScanDims{R, L, cfg.nheads(), cfg.headdim, cfg.d_state, cfg.chunk_size, Cc, cfg.nheads(), Cc, E};
}

// Every buffer of a [B, L] batch (model.cpp ensure_buffers, plus the backward's scratch and the LM
// head's row blocks), each through get(slot, count): allocate into the slot, or only count.
template <typename T>
template <class Get>
void GpuModel<T>::lay_out_buffers(i64 B, i64 L, std::vector<Acts>& acts, i64& head_rows, Get&& get) {
  const i64 d = cfg.d_model, E = cfg.d_inner(), Dp = cfg.d_in_proj(), Cc = cfg.conv_dim(), H = cfg.nheads();
  const i64 M = B * L, R = cfg.bidirectional() ? 2 * B : B, Mr = R * L, V = cfg.vocab_size, X = cfg.xproj_dim();
  const i64 Hd = mamba1() ? E : H;  // step sizes per (row, step): one per head, or per channel
  const ScanDims sd = scan_dims(R, L);
  head_rows = std::min<i64>(1024, M);
  acts.assign((size_t)cfg.n_layer, Acts{});
  for (Acts& a : acts) {
    get(a.proj, Mr * Dp);
    get(a.convpre, Mr * Cc);
    get(a.y, Mr * E);
    if (!mamba1()) get(a.rstd, Mr);
    if (mamba1()) get(a.xdbl, Mr * X), get(a.dtpre, Mr * E);
    get(a.states, sd.states_size());
    if (cfg.has_aggr()) get(a.fb, M * 2 * d);
    if (cfg.combine == GpuCombine::Gate) get(a.gate, M * d);
  }
  get(xs_, (cfg.n_layer + 1) * M * d);
  get(hidden_, M * d);
  get(rstd_f_, M);
  get(u_, Mr * d);
  get(xc_, Mr * Cc);
  get(dtv_, Mr * Hd);
  get(aexp_, sd.a_size());
  get(daexp_, sd.a_size());
  get(o_, Mr * E);
  get(mixout_, Mr * d);
  get(fb_tmp_, M * 2 * d);
  get(dx_, M * d);
  get(dout_, M * d);
  get(dfb_, M * 2 * d);
  get(dpre_, M * d);
  get(dm_, Mr * d);
  get(du_, Mr * d);
  get(do_, Mr * E);
  get(dy_, Mr * E);
  get(dproj_, Mr * Dp);
  get(dxc_, Mr * Cc);
  get(ddt_, Mr * Hd);
  if (mamba1()) get(dxdbl_, Mr * X), get(ddtpre_, Mr * E);
  get(argmax_, head_rows);
  get(dhidden_, M * d);
  get(logits_, head_rows * V);
  get(ones_, std::max(Mr, head_rows));
  get(colsum_, std::max({rmsnorm_backward_scratch(Mr, E), rmsnorm_backward_scratch(M, d), softplus_backward_scratch(Mr, Hd),
                         conv1d_backward_scratch(R, L, Cc, cfg.d_conv)}));
  get(scan_scratch_, scan_scratch_floats(sd, ssd(), sizeof(T)));
  get(row_loss_, M);
  get(tokens_, M);
  get(targets_, M);
  get(lengths_, B);
  get(row_lengths_, R);
  get(zeros_, B);
  get(order_, M);
  get(seg_start_, M + 1);
}

template <typename T>
void GpuModel<T>::ensure_buffers(i64 B, i64 L) {
  if (B == B_ && L == L_) return;
  release();
  B_ = B;
  L_ = L;
  lay_out_buffers(B, L, acts_, head_rows_, [this](auto*& slot, i64 n) { slot = buf<std::remove_reference_t<decltype(*slot)>>(n); });
  const i64 M = B * L, nones = std::max(rows() * L, head_rows_);
  {
    const std::vector<float> one((size_t)nones, 1.f);
    dev::upload(ones_, dtype_of<T>(), one.data(), nones, s_);
  }
  dev::memset_zero(zeros_, (std::size_t)B * sizeof(std::int32_t), s_);
  dev::free(sum_scratch_);
  sum_scratch_ = (double*)dev::alloc((std::size_t)sum_scratch_doubles(std::max(n_, M)) * sizeof(double));
}

template <typename T>
std::size_t GpuModel<T>::activation_bytes(i64 B, i64 L) const {
  if (B < 1 || L < 1) throw std::invalid_argument("activation_bytes: batch and length must be positive");
  std::size_t bytes = 0;
  std::vector<Acts> acts;
  i64 head_rows = 0;
  // Counting writes no slot, so the const_cast leaves this model as it was.
  const_cast<GpuModel*>(this)->lay_out_buffers(B, L, acts, head_rows, [&bytes](auto*& slot, i64 n) {
    bytes += (std::size_t)std::max<i64>(n, 1) * sizeof(*slot);
  });
  const i64 grow = sum_scratch_doubles(std::max(n_, B * L)) - sum_scratch_doubles(n_);
  return bytes + (std::size_t)grow * sizeof(double);
}

template <typename T>
std::size_t GpuModel<T>::param_bytes() const {
  return (std::size_t)n_ * (4 * sizeof(float) + (copy_ ? sizeof(T) : 0)) + sizeof(float) + sizeof(double) +
         (std::size_t)sum_scratch_doubles(n_) * sizeof(double);
}

// out[M, O] = inp[M, I] W[O, I]^T (+ bias): the bias rows first (ones[M, 1] bias[1, O]), then the
// product added (beta = 1); without a bias, beta as given.
template <typename T>
void GpuModel<T>::linear_forward(T* out, i64 ld_out, const T* inp, i64 ld_inp, i64 w, i64 b, i64 M, i64 I, i64 O,
                                 float beta) const {
  const DType t = dtype_of<T>();
  if (b >= 0) {
    dev::gemm(false, false, M, O, 1, 1.f, ones_, t, 1, P(b), t, O, 0.f, out, t, ld_out, s_);
    beta = 1.f;
  }
  dev::gemm(false, true, M, O, I, 1.f, inp, t, ld_inp, P(w), t, I, beta, out, t, ld_out, s_);
}
// dinp = dout W (beta_dinp * dinp +), dW += dout^T inp (fp32), db += dout^T ones (fp32).
template <typename T>
void GpuModel<T>::linear_backward(T* dinp, i64 ld_dinp, i64 w, i64 b, const T* dout, i64 ld_dout, const T* inp,
                                  i64 ld_inp, i64 M, i64 I, i64 O, float beta_dinp) {
  if (M == 0) return;
  const DType t = dtype_of<T>();
  if (dinp) dev::gemm(false, false, M, I, O, 1.f, dout, t, ld_dout, P(w), t, I, beta_dinp, dinp, t, ld_dinp, s_);
  dev::gemm(true, false, O, I, M, 1.f, dout, t, ld_dout, inp, t, ld_inp, 1.f, G(w), DType::F32, I, s_);
  if (b >= 0) dev::gemm(true, false, O, 1, M, 1.f, dout, t, ld_dout, ones_, t, 1, 1.f, G(b), DType::F32, 1, s_);
}

// u = [x; rev(x)] (model.cpp build_mixer_input), or x alone.
template <typename T>
void GpuModel<T>::build_mixer_input(const T* x) {
  const i64 d = cfg.d_model, M = B_ * L_;
  dev::copy_device(u_, x, (std::size_t)(M * d) * sizeof(T), s_);
  if (cfg.bidirectional()) reverse_forward(u_ + M * d, d, x, d, lengths_, B_, L_, d, s_);
}

// The conv (input masked at pads, SiLU, output masked: one fused kernel) over in_proj's xBC (Mamba-2)
// or x (Mamba-1) columns (model.cpp conv_input, conv_activation).
template <typename T>
void GpuModel<T>::recompute_conv(i64 l) {
  const LayerOffsets& o = layer_[(size_t)l];
  const Acts& a = acts_[(size_t)l];
  const i64 R = rows(), Dp = cfg.d_in_proj(), Cc = cfg.conv_dim();
  const i64 xbc_col = mamba1() ? 0 : cfg.d_inner();
  conv1d_forward(a.convpre, Cc, xc_, Cc, a.proj + xbc_col, Dp, P(o.conv_w), P(o.conv_b), row_lengths_, R, L_, Cc,
                 cfg.d_conv, s_);
}
// dt = softplus(. + bias) and A = -exp(A_log) (model.cpp step_sizes): Mamba-2 from in_proj's dt
// columns and one A per head; Mamba-1 from dt_proj's stored output and A[c, :] per channel.
template <typename T>
void GpuModel<T>::step_sizes(i64 l) {
  const LayerOffsets& o = layer_[(size_t)l];
  const Acts& a = acts_[(size_t)l];
  const i64 Mr = rows() * L_, E = cfg.d_inner(), Dp = cfg.d_in_proj(), Cc = cfg.conv_dim(), H = cfg.nheads();
  if (mamba1()) {
    softplus_forward(dtv_, E, a.dtpre, E, P(o.dt_proj_b), Mr, E, s_);
    neg_exp_forward(aexp_, F(o.A_log), E * cfg.d_state, s_);
  } else {
    softplus_forward(dtv_, H, a.proj + E + Cc, Dp, P(o.dt_bias), Mr, H, s_);
    neg_exp_forward(aexp_, F(o.A_log), H, s_);
  }
}
template <typename T>
void GpuModel<T>::recompute(i64 l) {
  recompute_conv(l);
  step_sizes(l);
}

template <typename T>
void GpuModel<T>::mixer_forward(i64 l) {
  const LayerOffsets& o = layer_[(size_t)l];
  Acts& a = acts_[(size_t)l];
  const i64 Mr = rows() * L_, d = cfg.d_model, E = cfg.d_inner(), Dp = cfg.d_in_proj(), N = cfg.d_state;
  linear_forward(a.proj, Dp, u_, d, o.in_proj, -1, Mr, d, Dp, 0.f);
  if (mamba1()) {
    const i64 X = cfg.xproj_dim(), Rk = cfg.dt_rank;
    recompute_conv(l);
    linear_forward(a.xdbl, X, xc_, E, o.x_proj, -1, Mr, E, X, 0.f);
    linear_forward(a.dtpre, E, a.xdbl, X, o.dt_proj_w, -1, Mr, Rk, E, 0.f);
    step_sizes(l);
    scan_forward(a.y, a.states, xc_, dtv_, aexp_, a.xdbl + Rk, a.xdbl + Rk + N, F(o.D), scan_dims(), s_);
    silu_gate_forward(o_, a.y, a.proj + E, Dp, Mr, E, s_);
  } else {
    recompute(l);
    scan_forward_with(ssd(), a.y, a.states, xc_, dtv_, aexp_, xc_ + E, xc_ + E + N, F(o.D), scan_dims(), scan_scratch_, s_);
    gated_rmsnorm_forward(o_, a.rstd, a.y, a.proj, Dp, P(o.norm_w), Mr, E, 1e-5f, s_);
  }
  linear_forward(mixout_, d, o_, E, o.out_proj, -1, Mr, E, d, 0.f);
}

template <typename T>
void GpuModel<T>::forward(const std::int32_t* tokens, const std::int32_t* lengths, i64 B, i64 L) {
  if (B < 1 || L < 1) throw std::invalid_argument("forward: batch and length must be positive");
  for (i64 b = 0; b < B; b++)
    if (lengths[b] < 0 || lengths[b] > L) throw std::invalid_argument("forward: a length is outside 0..L");
  for (i64 i = 0; i < B * L; i++)
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size) throw std::invalid_argument("forward: token id outside the vocabulary");
  ensure_buffers(B, L);
  const i64 d = cfg.d_model, M = B * L;
  tokens_h_.assign(tokens, tokens + M);
  lengths_h_.assign(lengths, lengths + B);
  std::vector<std::int32_t> rl(lengths, lengths + B);
  if (cfg.bidirectional()) rl.insert(rl.end(), lengths, lengths + B);  // mixer row r has length lengths[r % B]
  dev::copy_to_device(tokens_, tokens, (std::size_t)M * sizeof(std::int32_t), s_);
  dev::copy_to_device(lengths_, lengths, (std::size_t)B * sizeof(std::int32_t), s_);
  dev::copy_to_device(row_lengths_, rl.data(), rl.size() * sizeof(std::int32_t), s_);
  embedding_forward(xs_, tokens_, P(emb_), M, d, s_);
  for (i64 l = 0; l < cfg.n_layer; l++) {
    const T* x = xs_ + l * M * d;
    T* out = xs_ + (l + 1) * M * d;
    build_mixer_input(x);
    mixer_forward(l);
    if (!cfg.bidirectional()) {  // out = x + mixer(x): reverse_backward with zero lengths is a plain add
      dev::copy_device(out, x, (std::size_t)(M * d) * sizeof(T), s_);
      reverse_backward(out, d, mixout_, d, zeros_, B, L, d, s_);
      continue;
    }
    T* fb = cfg.has_aggr() ? acts_[(size_t)l].fb : fb_tmp_;
    bidir_merge_forward(fb, mixout_, x, lengths_, B, L, d, s_);
    switch (cfg.combine) {
      case GpuCombine::Gate: {
        T* sg = acts_[(size_t)l].gate;
        linear_forward(sg, d, fb, 2 * d, aggr_w_, aggr_b_, M, 2 * d, d, 0.f);
        gate_forward(out, sg, fb, M, d, s_);
        break;
      }
      case GpuCombine::Concat: linear_forward(out, d, fb, 2 * d, aggr_w_, aggr_b_, M, 2 * d, d, 0.f); break;
      case GpuCombine::Mean: blend_forward(out, fb, 0.5f, 0.5f, M, d, s_); break;
      case GpuCombine::Sum: blend_forward(out, fb, 1.f, 1.f, M, d, s_); break;
      case GpuCombine::Unidirectional: break;
    }
  }
  rmsnorm_forward(hidden_, rstd_f_, xs_ + cfg.n_layer * M * d, P(norm_f_), M, d, (float)cfg.norm_eps, s_);
}

template <typename T>
void GpuModel<T>::get_hidden(float* host) const {
  dev::download(host, hidden_, dtype_of<T>(), B_ * L_ * cfg.d_model, s_);
}

// The LM head in blocks of head_rows_ rows (model.cpp logits / argmax_logits).
template <typename T>
void GpuModel<T>::logits(float* host) const {
  if (B_ == 0) throw std::logic_error("logits: call forward first");
  const i64 d = cfg.d_model, V = cfg.vocab_size, M = B_ * L_;
  for (i64 r0 = 0; r0 < M; r0 += head_rows_) {
    const i64 nb = std::min(head_rows_, M - r0);
    linear_forward(logits_, V, hidden_ + r0 * d, d, head_w_, head_b_, nb, d, V, 0.f);
    dev::download(host + r0 * V, logits_, dtype_of<T>(), nb * V, s_);
  }
}
template <typename T>
void GpuModel<T>::argmax_logits(std::int32_t* host) const {
  if (B_ == 0) throw std::logic_error("argmax_logits: call forward first");
  const i64 d = cfg.d_model, V = cfg.vocab_size, M = B_ * L_;
  for (i64 r0 = 0; r0 < M; r0 += head_rows_) {
    const i64 nb = std::min(head_rows_, M - r0);
    linear_forward(logits_, V, hidden_ + r0 * d, d, head_w_, head_b_, nb, d, V, 0.f);
    argmax_rows(argmax_, logits_, nb, V, s_);
    dev::copy_to_host(host + r0, argmax_, (std::size_t)nb * sizeof(std::int32_t), s_);
  }
}

template <typename T>
typename GpuModel<T>::LossResult GpuModel<T>::loss(const std::int32_t* targets, double scale, bool backward,
                                                    const float* hidden_grad) {
  if (B_ == 0) throw std::logic_error("loss: call forward first");
  const i64 d = cfg.d_model, V = cfg.vocab_size, M = B_ * L_;
  i64 K = 0;
  for (i64 i = 0; i < M; i++) {
    const std::int32_t t = targets[i];
    if (t == -100) continue;
    if (t < 0 || t >= V) throw std::invalid_argument("loss: a target is neither -100 nor a token id");
    if (i % L_ >= lengths_h_[(size_t)(i / L_)]) throw std::invalid_argument("loss: target at a padding position (use -100 there)");
    K++;
  }
  if (K == 0 && !(backward && hidden_grad)) return {0.0, 0};
  if (backward) {
    if (hidden_grad) dev::upload(dhidden_, dtype_of<T>(), hidden_grad, M * d, s_);
    else dev::memset_zero(dhidden_, (std::size_t)(M * d) * sizeof(T), s_);
  }
  double mean = 0;
  if (K > 0) {
    // The LM head over every position in blocks of rows; rows whose target is -100 get a zero
    // gradient from the cross-entropy kernel (the CPU path gathers the scored rows instead).
    dev::copy_to_device(targets_, targets, (std::size_t)M * sizeof(std::int32_t), s_);
    const float gscale = (float)(scale / (double)K);
    for (i64 r0 = 0; r0 < M; r0 += head_rows_) {
      const i64 nb = std::min(head_rows_, M - r0);
      linear_forward(logits_, V, hidden_ + r0 * d, d, head_w_, head_b_, nb, d, V, 0.f);
      cross_entropy_forward_backward(logits_, targets_ + r0, row_loss_ + r0, nb, V, gscale, s_);
      if (backward)
        linear_backward(dhidden_ + r0 * d, d, head_w_, head_b_, logits_, V, hidden_ + r0 * d, d, nb, d, V, 1.f);
    }
    sum_values(dsum_, row_loss_, M, sum_scratch_, s_);
    double total = 0;
    dev::copy_to_host(&total, dsum_, sizeof(double), s_);
    mean = total / (double)K;
    if (!std::isfinite(mean)) throw std::runtime_error("loss is not finite: the parameters or activations contain NaN or Inf");
  }
  if (!backward) return {mean, K};
  const bool reduce = comm_ && reduce_armed_;
  reduce_armed_ = false;

  const i64 R = rows(), Mr = R * L_;
  dev::memset_zero(dx_, (std::size_t)(M * d) * sizeof(T), s_);
  rmsnorm_backward(dx_, G(norm_f_), dhidden_, xs_ + cfg.n_layer * M * d, P(norm_f_), rstd_f_, M, d, colsum_, s_);
  if (reduce) reduce_tail_head();  // the LM head and norm_f are final
  for (i64 l = cfg.n_layer - 1; l >= 0; l--) {
    std::swap(dout_, dx_);  // dout = gradient w.r.t. this layer's output
    const T* x = xs_ + l * M * d;
    if (!cfg.bidirectional()) {
      dev::copy_device(dm_, dout_, (std::size_t)(M * d) * sizeof(T), s_);
      dev::copy_device(dx_, dout_, (std::size_t)(M * d) * sizeof(T), s_);
    } else {
      dev::memset_zero(dfb_, (std::size_t)(M * 2 * d) * sizeof(T), s_);
      const Acts& a = acts_[(size_t)l];
      switch (cfg.combine) {
        case GpuCombine::Gate:
          gate_backward(dfb_, dpre_, dout_, a.fb, a.gate, M, d, s_);
          linear_backward(dfb_, 2 * d, aggr_w_, aggr_b_, dpre_, d, a.fb, 2 * d, M, 2 * d, d, 1.f);
          break;
        case GpuCombine::Concat:
          linear_backward(dfb_, 2 * d, aggr_w_, aggr_b_, dout_, d, a.fb, 2 * d, M, 2 * d, d, 1.f);
          break;
        case GpuCombine::Mean: blend_backward(dfb_, dout_, 0.5f, 0.5f, M, d, s_); break;
        case GpuCombine::Sum: blend_backward(dfb_, dout_, 1.f, 1.f, M, d, s_); break;
        case GpuCombine::Unidirectional: break;
      }
      bidir_merge_backward(dx_, dm_, dfb_, lengths_, B_, L_, d, s_);  // writes dx = df + db and dm
    }
    build_mixer_input(x);
    mixer_backward(l);
    // dx += du[forward rows] (zero lengths: no reversal) + rev(du[reversed rows])
    reverse_backward(dx_, d, du_, d, zeros_, B_, L_, d, s_);
    if (cfg.bidirectional()) reverse_backward(dx_, d, du_ + M * d, d, lengths_, B_, L_, d, s_);
    if (reduce) reduce_layer(l);
  }
  (void)Mr;
  const EmbeddingPlan plan = embedding_plan(tokens_h_.data(), M);
  dev::copy_to_device(order_, plan.order.data(), plan.order.size() * sizeof(std::int32_t), s_);
  dev::copy_to_device(seg_start_, plan.seg_start.data(), plan.seg_start.size() * sizeof(std::int32_t), s_);
  embedding_backward(G(emb_), dx_, tokens_, order_, seg_start_, plan.nseg(), M, d, s_);
  if (reduce) reduce_rest();
  return {mean, K};
}

// Backward of layer l's mixer: dm_ (all mixer rows) -> du_ (written), parameter gradients accumulated.
template <typename T>
void GpuModel<T>::mixer_backward(i64 l) {
  const LayerOffsets& o = layer_[(size_t)l];
  const Acts& a = acts_[(size_t)l];
  const i64 R = rows(), L = L_, Mr = R * L, d = cfg.d_model, E = cfg.d_inner(), Dp = cfg.d_in_proj();
  const i64 Cc = cfg.conv_dim(), N = cfg.d_state, H = cfg.nheads();
  recompute(l);
  dev::memset_zero(dproj_, (std::size_t)(Mr * Dp) * sizeof(T), s_);
  dev::memset_zero(dy_, (std::size_t)(Mr * E) * sizeof(T), s_);
  dev::memset_zero(dxc_, (std::size_t)(Mr * Cc) * sizeof(T), s_);
  const ScanDims sd = scan_dims();
  dev::memset_zero(daexp_, (std::size_t)sd.a_size() * sizeof(float), s_);
  if (mamba1()) {
    const i64 X = cfg.xproj_dim(), Rk = cfg.dt_rank;
    dev::memset_zero(ddt_, (std::size_t)(Mr * E) * sizeof(T), s_);
    dev::memset_zero(dxdbl_, (std::size_t)(Mr * X) * sizeof(T), s_);
    dev::memset_zero(ddtpre_, (std::size_t)(Mr * E) * sizeof(T), s_);
    silu_gate_forward(o_, a.y, a.proj + E, Dp, Mr, E, s_);
    linear_backward(do_, E, o.out_proj, -1, dm_, d, o_, E, Mr, E, d, 0.f);
    silu_gate_backward(dy_, dproj_ + E, Dp, do_, a.y, a.proj + E, Dp, Mr, E, s_);  // dy, and dz into in_proj's z
    scan_backward(dxc_, ddt_, daexp_, dxdbl_ + Rk, dxdbl_ + Rk + N, G(o.D), dy_, a.states, xc_, dtv_, aexp_,
                  a.xdbl + Rk, a.xdbl + Rk + N, F(o.D), sd, scan_scratch_, s_);
    neg_exp_backward(G(o.A_log), daexp_, aexp_, E * N, s_);
    softplus_backward(ddtpre_, E, G(o.dt_proj_b), ddt_, E, a.dtpre, E, P(o.dt_proj_b), Mr, E, colsum_, s_);
    linear_backward(dxdbl_, X, o.dt_proj_w, -1, ddtpre_, E, a.xdbl, X, Mr, Rk, E, 1.f);  // dt_lr columns
    linear_backward(dxc_, E, o.x_proj, -1, dxdbl_, X, xc_, E, Mr, E, X, 1.f);             // dxc += dxdbl W_x
    conv1d_backward(dproj_, Dp, G(o.conv_w), G(o.conv_b), dxc_, Cc, a.convpre, Cc, a.proj, Dp, P(o.conv_w),
                    row_lengths_, R, L, Cc, cfg.d_conv, colsum_, s_);
    linear_backward(du_, d, o.in_proj, -1, dproj_, Dp, u_, d, Mr, d, Dp, 0.f);
    return;
  }
  dev::memset_zero(ddt_, (std::size_t)(Mr * H) * sizeof(T), s_);
  gated_rmsnorm_forward(o_, (float*)nullptr, a.y, a.proj, Dp, P(o.norm_w), Mr, E, 1e-5f, s_);
  linear_backward(do_, E, o.out_proj, -1, dm_, d, o_, E, Mr, E, d, 0.f);
  gated_rmsnorm_backward(dy_, dproj_, Dp, G(o.norm_w), do_, a.y, a.proj, Dp, P(o.norm_w), a.rstd, Mr, E, colsum_, s_);
  scan_backward_with(ssd(), dxc_, ddt_, daexp_, dxc_ + E, dxc_ + E + N, G(o.D), dy_, a.states, xc_, dtv_, aexp_,
                     xc_ + E, xc_ + E + N, F(o.D), sd, scan_scratch_, s_);
  neg_exp_backward(G(o.A_log), daexp_, aexp_, H, s_);
  softplus_backward(dproj_ + E + Cc, Dp, G(o.dt_bias), ddt_, H, a.proj + E + Cc, Dp, P(o.dt_bias), Mr, H, colsum_, s_);
  // Through the output mask, SiLU, the conv and the input mask (fused), into in_proj's xBC columns.
  conv1d_backward(dproj_ + E, Dp, G(o.conv_w), G(o.conv_b), dxc_, Cc, a.convpre, Cc, a.proj + E, Dp, P(o.conv_w),
                  row_lengths_, R, L, Cc, cfg.d_conv, colsum_, s_);
  linear_backward(du_, d, o.in_proj, -1, dproj_, Dp, u_, d, Mr, d, Dp, 0.f);
}

template <typename T>
void GpuModel<T>::set_comm(GradComm* comm, double timeout_s) {
  wait_grads();
  if (comm && !cs_) {
    cs_ = dev::stream_create();
    ready_ = dev::event_create();
    reduced_ = dev::event_create();
  }
  comm_ = comm;
  comm_timeout_s_ = timeout_s;
  reduce_armed_ = false;
}
template <typename T>
void GpuModel<T>::reduce_next_backward() {
  if (!comm_) throw std::logic_error("reduce_next_backward: no communicator (set_comm)");
  reduce_armed_ = true;
}

// [offset, offset + n) of the gradients, averaged on the comm stream once the main stream's work so
// far (which finished that range) is done. Recording one event again is fine: stream_wait_event
// takes the state it has when called.
template <typename T>
void GpuModel<T>::reduce_range(i64 off, i64 n) {
  if (n <= 0) return;
  dev::event_record(ready_, s_);
  dev::stream_wait_event(cs_, ready_);
  comm_->all_reduce_mean(grad_ + off, n, cs_);
  reduce_pending_ = true;
}
template <typename T>
void GpuModel<T>::reduce_tail_head() {
  reduce_range(reduce_order_[0].first, reduce_order_[0].second);
}
template <typename T>
void GpuModel<T>::reduce_layer(i64 l) {
  const auto& x = reduce_order_[(size_t)(cfg.n_layer - l)];
  reduce_range(x.first, x.second);
}
template <typename T>
void GpuModel<T>::reduce_rest() {
  for (size_t i = (size_t)cfg.n_layer + 1; i < reduce_order_.size(); i++) reduce_range(reduce_order_[i].first, reduce_order_[i].second);
}
template <typename T>
void GpuModel<T>::finish_reduction() {
  if (reduce_armed_) {  // no backward ran the reductions (no loss positions here): same calls, now
    reduce_armed_ = false;
    for (const auto& r : reduce_order_) reduce_range(r.first, r.second);
  }
  wait_grads();
}
template <typename T>
void GpuModel<T>::wait_grads() {
  if (reduce_armed_) throw std::logic_error("gradients read while a reduction is armed: call finish_reduction() first");
  if (!reduce_pending_) return;
  reduce_pending_ = false;
  dev::event_record(reduced_, cs_);
  dev::stream_wait_event(s_, reduced_);
  comm_->wait(cs_, comm_timeout_s_);
}

template <typename T>
double GpuModel<T>::grad_norm() const {
  const_cast<GpuModel*>(this)->wait_grads();
  sum_squares(dsum_, grad_, n_, sum_scratch_, s_);
  double ss = 0;
  dev::copy_to_host(&ss, dsum_, sizeof(double), s_);
  return std::sqrt(ss);
}

// AdamW per tensor (weight decay by the table's flag), clipped on the device when max_norm > 0; with
// T = bf16 the update also rewrites the bf16 copy the next forward reads.
template <typename T>
void GpuModel<T>::adamw(const GpuAdamW& o) {
  wait_grads();
  const float* scale = nullptr;
  if (o.max_norm > 0) {
    sum_squares(dsum_, grad_, n_, sum_scratch_, s_);
    clip_scale(clip_, dsum_, o.max_norm, s_);
    scale = clip_;
  }
  for (const GpuTensor& t : tensors) {
    const AdamWHyper h{o.lr, o.beta1, o.beta2, o.eps, t.decay ? o.weight_decay : 0.0, o.step, o.grad_scale};
    adamw_update(master_ + t.offset, copy_ ? copy_ + t.offset : (T*)nullptr, grad_ + t.offset, m_ + t.offset,
                 v_ + t.offset, t.numel, h, scale, s_);
  }
}

template class GpuModel<float>;
template class GpuModel<bf16>;

}  // namespace cuda
}  // namespace gm

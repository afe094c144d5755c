// The GeneMamba training step on the GPU: native/src/model.cpp's Model (embedding -> n_layer BiMamba
// layers -> RMSNorm -> LM head, the loss and its backward, clipped AdamW), written over the kernel
// launchers of kernels.h and the device interface of device.h only, so the same code runs on a GPU
// and, with the emulated backend (native/test/cuda_emul_device.cpp), on the CPU (gm_gpu_model_emul
// checks it against Model).
//
// Plain C++: no CUDA or BLAS headers beyond what kernels.h includes, and not model.h (which pulls in
// cblas.h), hence GpuConfig, a copy of gm::Config's fields with the same enum orders.
//
// Storage: fp32 master weights, gradients and AdamW moments in four flat device buffers with
// Model's tensor table (same names, shapes, offsets and order, so checkpoints map one to one).
// T (float or bf16) is the storage type of the activations and of the parameter copy the forward
// and backward passes read: with T = float that copy is the master itself; with T = bf16 it is a
// separate buffer that AdamW rewrites from the master at every step. A, D of the scan are read from
// the fp32 master.
//
// Supported: both mixers (Mamba-2; Mamba-1 with x_proj, dt_proj, per-channel A[c, :], D and the
// y * SiLU(z) gate) with every combine mode (gate, concat, mean, sum, unidirectional), logits() and
// argmax_logits().
//
// Memory: besides the inputs of every layer, a layer keeps only in_proj's output, the conv's
// pre-activation, the scan output and its chunk-start states (and the combine's [f | b] and gate);
// the conv output, the step sizes dt, A and the gated-norm / SiLU-gate output are recomputed in
// backward from those (cheap pointwise work next to the GEMMs). activation_bytes() says what a batch
// shape costs before anything is allocated.
//
// Data parallel (set_comm): each layer's gradient range is averaged across the ranks on a second
// stream as soon as backward has finished it, while backward goes on with the layers below (the
// llm.c / DDP-bucket pattern). The ranges follow the tensor table: the LM head and final norm first
// (final right after the loss), then layer n-1 ... 0, then the shared combine gate and the
// embedding (final only at the end).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "comm.h"
#include "device.h"
#include "../src/tensor_layout.h"

namespace gm {
namespace cuda {

enum class GpuMixer { Mamba2, Mamba1 };                               // as gm::Mixer
enum class GpuCombine { Gate, Mean, Sum, Concat, Unidirectional };  // as gm::Combine

struct GpuConfig {
  i64 vocab_size = 0, d_model = 0, n_layer = 0;
  GpuMixer mixer = GpuMixer::Mamba2;
  GpuCombine combine = GpuCombine::Gate;
  i64 d_state = 64, headdim = 64, expand = 2, d_conv = 4, dt_rank = 0;
  double norm_eps = 1e-5;
  std::int32_t pad_token_id = 1;
  i64 chunk_size = 64;
  // Mamba-2's scan: false, the recurrent kernels (scan.cu: one thread per channel walks the
  // sequence); true, the chunked SSD form (ssd.cu: batched tensor-core GEMMs). Same results and saved
  // states; which is faster on a given GPU is bench:gpu's to say. Mamba-1 always runs the recurrence.
  bool ssd_scan = false;

  i64 d_inner() const { return expand * d_model; }
  i64 nheads() const { return mixer == GpuMixer::Mamba2 ? d_inner() / headdim : d_inner(); }
  i64 d_in_proj() const { return mixer == GpuMixer::Mamba2 ? 2 * d_inner() + 2 * d_state + nheads() : 2 * d_inner(); }
  i64 conv_dim() const { return mixer == GpuMixer::Mamba2 ? d_inner() + 2 * d_state : d_inner(); }
  i64 xproj_dim() const { return dt_rank + 2 * d_state; }
  bool bidirectional() const { return combine != GpuCombine::Unidirectional; }
  bool has_aggr() const { return combine == GpuCombine::Gate || combine == GpuCombine::Concat; }
};

struct GpuTensor {
  std::string name;
  std::vector<i64> shape;
  i64 offset = 0, numel = 0;
  bool decay = false;
};

struct GpuAdamW {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  long step = 1;
  double grad_scale = 1.0;
  double max_norm = 0.0;  // > 0: clip_grad_norm_ on the device (no host round trip) before the update
};

template <typename T>
class GpuModel {
 public:
  explicit GpuModel(const GpuConfig& cfg, cudaStream_t stream = nullptr);
  ~GpuModel();
  GpuModel(const GpuModel&) = delete;
  GpuModel& operator=(const GpuModel&) = delete;

  const GpuConfig cfg;
  std::vector<GpuTensor> tensors;
  i64 num_params() const { return n_; }

  // Host <-> device: fp32 parameters (and the T copy), AdamW moments, gradients.
  void set_params(const float* host);
  void get_params(float* host) const;
  void set_moments(const float* m, const float* v);
  void get_moments(float* m, float* v) const;
  void get_grads(float* host) const;
  void set_grads(const float* host);  // e.g. after a host-side all-reduce
  void zero_grad();

  void forward(const std::int32_t* tokens, const std::int32_t* lengths, i64 B, i64 L);  // host arrays
  void get_hidden(float* host) const;  // post-norm hidden states [B, L, d] of the last forward
  // As Model::logits / argmax_logits, for the last forward: the LM head over every position, in
  // blocks of rows through the device GEMM. logits: host [B*L, V] floats; argmax: host [B*L] ids,
  // computed on the device (argmax_rows), so only the indices come back.
  void logits(float* host) const;
  void argmax_logits(std::int32_t* host) const;
  struct LossResult {
    double loss;
    i64 count;
  };
  // As Model::loss: mean cross-entropy over targets != -100, gradient of scale * loss accumulated.
  LossResult loss(const std::int32_t* targets, double scale, bool backward, const float* hidden_grad = nullptr);
  double grad_norm() const;
  void adamw(const GpuAdamW& o);

  // Device bytes the activations and scratch of a forward + backward on a [B, L] batch take (the
  // parameters, gradients and moments not included: param_bytes()). Allocates nothing.
  std::size_t activation_bytes(i64 B, i64 L) const;
  std::size_t param_bytes() const;

  // Data parallel. comm (not owned; null: one rank) averages gradients across the ranks; call
  // reduce_next_backward() before the backward of a step's last micro-batch (that backward enqueues
  // the reductions, overlapped), then finish_reduction() after it: it runs the reductions itself when
  // no backward did (this rank had no loss positions or no micro-batch: every rank must make the same
  // calls), and blocks until they are done, throwing when a peer died or hangs for timeout_s.
  // grad_norm, adamw, get_grads and zero_grad wait for pending reductions themselves.
  void set_comm(GradComm* comm, double timeout_s = 600);
  void reduce_next_backward();
  void finish_reduction();
  void wait_grads();
  // The gradient ranges [offset, offset + n) in the order one reducing backward reduces them.
  const std::vector<std::pair<i64, i64>>& reduce_order() const { return reduce_order_; }

 private:
  cudaStream_t s_;
  GradComm* comm_ = nullptr;
  double comm_timeout_s_ = 600;
  cudaStream_t cs_ = nullptr;       // the communication stream
  cudaEvent_t ready_ = nullptr;     // main -> comm: a gradient range is final
  cudaEvent_t reduced_ = nullptr;   // comm -> main: every reduction of the step is done
  bool reduce_armed_ = false, reduce_pending_ = false;
  std::vector<std::pair<i64, i64>> reduce_order_;  // from the tensor table, set in the constructor
  void reduce_range(i64 off, i64 n);
  void reduce_tail_head();
  void reduce_layer(i64 l);
  void reduce_rest();
  i64 n_ = 0;
  std::vector<LayerOffsets> layer_;
  i64 emb_ = -1, aggr_w_ = -1, aggr_b_ = -1, norm_f_ = -1, head_w_ = -1, head_b_ = -1;
  i64 add_tensor(const std::string& name, std::vector<i64> shape, bool decay);

  float *master_ = nullptr, *grad_ = nullptr, *m_ = nullptr, *v_ = nullptr;
  T* copy_ = nullptr;  // bf16 parameter copy (null for T = float: the master is read directly)
  const T* P(i64 off) const;
  float* G(i64 off) const { return grad_ + off; }
  const float* F(i64 off) const { return master_ + off; }

  // Activations of the last forward and scratch, (re)allocated for a batch shape.
  i64 B_ = 0, L_ = 0;
  std::vector<std::int32_t> tokens_h_, lengths_h_;
  std::vector<void*> owned_;
  struct Acts {
    T *proj, *convpre, *y, *fb, *gate;
    T *xdbl, *dtpre;  // Mamba-1: x_proj's output [dt_lr | B | C] and dt_proj's (before softplus)
    float *rstd, *states;
  };
  std::vector<Acts> acts_;
  T *xs_, *hidden_, *u_, *xc_, *dtv_, *o_, *mixout_, *fb_tmp_;
  T *dx_, *dout_, *dfb_, *dpre_, *dm_, *du_, *do_, *dy_, *dproj_, *dxc_, *ddt_, *dhidden_, *logits_, *ones_;
  T *dxdbl_ = nullptr, *ddtpre_ = nullptr;  // Mamba-1
  std::int32_t* argmax_;
  float *rstd_f_, *aexp_, *daexp_, *colsum_, *scan_scratch_, *row_loss_, *clip_;
  double *dsum_, *sum_scratch_;
  std::int32_t *tokens_, *targets_, *lengths_, *row_lengths_, *zeros_, *order_, *seg_start_;
  i64 head_rows_ = 0;
  template <typename U>
  U* buf(i64 n);
  void release();
  void ensure_buffers(i64 B, i64 L);
  // The buffers of a [B, L] batch, each through get(bytes) -> pointer (allocating, or counting).
  template <class Get>
  void lay_out_buffers(i64 B, i64 L, std::vector<Acts>& acts, i64& head_rows, Get&& get);

  i64 rows() const { return cfg.bidirectional() ? 2 * B_ : B_; }
  ScanDims scan_dims() const { return scan_dims(rows(), L_); }
  ScanDims scan_dims(i64 R, i64 L) const;
  void build_mixer_input(const T* x);
  void recompute_conv(i64 l);
  void step_sizes(i64 l);
  void recompute(i64 l);
  void mixer_forward(i64 l);
  void mixer_backward(i64 l);
  bool mamba1() const { return cfg.mixer == GpuMixer::Mamba1; }
  bool ssd() const { return cfg.ssd_scan && !mamba1(); }  // the Mamba-2 scan in the SSD form
  void linear_forward(T* out, i64 ld_out, const T* inp, i64 ld_inp, i64 w, i64 b, i64 M, i64 I, i64 O,
                      float beta) const;
  void linear_backward(T* dinp, i64 ld_dinp, i64 w, i64 b, const T* dout, i64 ld_dout, const T* inp, i64 ld_inp, i64 M,
                       i64 I, i64 O, float beta_dinp);
};

extern template class GpuModel<float>;
extern template class GpuModel<bf16>;

}  // namespace cuda
}  // namespace gm

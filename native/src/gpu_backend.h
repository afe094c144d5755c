// The GPU model (native/cuda/gpu_model.h) behind the same surface as the CPU Model, for the addon's
// engine binding (addon.cpp EngineBinding<GpuBackend>): the CPU Model's config and tensor table,
// host mirrors of the flat buffers (params, grads, adam_m, adam_v) that download()/upload() move
// to and from the device, fp32 or bf16 storage, and NCCL data parallelism.
//
// Built into the addon when the CUDA backend is (GM_HAVE_GPU), and into the emulated addon
// (gm_native_emul.node, GM_CUDA_EMUL: the kernels run on the CPU) that the tests drive.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cuda/comm.h"
#include "../cuda/gpu_model.h"
#include "model.h"

namespace gm {

// gm::Config -> the GPU model's copy of its fields (gpu_model.h says why there is a copy).
inline cuda::GpuConfig to_gpu_config(const Config& c) {
  cuda::GpuConfig g;
  g.vocab_size = c.vocab_size;
  g.d_model = c.d_model;
  g.n_layer = c.n_layer;
  g.mixer = (cuda::GpuMixer)(int)c.mixer;  // same enum orders
  g.combine = (cuda::GpuCombine)(int)c.combine;
  g.d_state = c.d_state;
  g.headdim = c.headdim;
  g.expand = c.expand;
  g.d_conv = c.d_conv;
  g.dt_rank = c.dt_rank;
  g.norm_eps = c.norm_eps;
  g.pad_token_id = c.pad_token_id;
  g.chunk_size = c.chunk_size;
  return g;
}

struct GpuOptions {
  int device = 0;     // CUDA ordinal (one process per GPU)
  bool bf16 = true;   // bf16 activations and parameter copy (fp32 master weights); false: fp32 throughout
  bool ssd_scan = false;  // Mamba-2's scan in the chunked SSD form (GpuConfig::ssd_scan)
};

// GM_GPU_SCAN=recurrent|ssd (unset: recurrent): the default of GpuOptions::ssd_scan, so `gm pretrain`
// workers and gm_gpu_train_bench pick the scan without a flag. A bad value throws.
inline bool ssd_scan_from_env() {
  const char* v = std::getenv("GM_GPU_SCAN");
  if (!v || !*v || std::string(v) == "recurrent") return false;
  if (std::string(v) == "ssd") return true;
  throw std::invalid_argument(std::string("GM_GPU_SCAN must be 'recurrent' or 'ssd', got '") + v + "'");
}

class GpuBackend {
 public:
  static constexpr bool kGpu = true;
  GpuBackend(const Config& cfg, const GpuOptions& o);
  ~GpuBackend();

  const Config cfg;
  const GpuOptions options;
  std::vector<TensorInfo> tensors;
  std::vector<float> params, grads, adam_m, adam_v;  // host mirrors

  std::vector<float>* buffer(const std::string& name);
  void download(const std::string& name);  // device -> mirror
  void upload(const std::string& name);    // mirror -> device

  void init(std::uint64_t seed);  // the CPU Model's initialisation, uploaded: same weights as on CPU
  void forward(const std::int32_t* tokens, const std::int32_t* lengths, i64 B, i64 L);
  void logits(float* out) const;
  void argmax_logits(std::int32_t* out) const;
  void hidden_copy(float* out, std::size_t n) const;  // n: batch x length x d_model of the last forward
  Model::LossResult loss(const std::int32_t* targets, double scale, bool backward, const float* hidden_grad);
  void zero_grad();
  double grad_norm() const;
  void adamw(const AdamWOptions& o);
  i64 activation_bytes() const;  // of the last forward's batch shape (0 before any)
  std::size_t activation_bytes_for(i64 B, i64 L) const;
  std::size_t param_bytes() const;

  // Data parallel through NCCL (unique_id from NcclComm::create_unique_id on rank 0).
  void join_nccl(const std::vector<std::uint8_t>& unique_id, int rank, int world_size, double timeout_s);
  bool has_comm() const { return comm_ != nullptr; }
  void reduce_next_backward();
  void finish_reduction();

 private:
  std::unique_ptr<cuda::GpuModel<float>> f32_;
  std::unique_ptr<cuda::GpuModel<cuda::bf16>> b16_;
  std::unique_ptr<cuda::GradComm> comm_;
  i64 B_ = 0, L_ = 0;
  template <class F>
  decltype(auto) with(F&& f) const {
    if (f32_) return f(*f32_);
    return f(*b16_);
  }
};

// The CUDA runtime as this process sees it, as JSON (devices, driver, cuBLASLt and NCCL found at run
// time or why not); never throws.
std::string gpu_report_json();
int gpu_count();
std::vector<std::uint8_t> nccl_unique_id();

}  // namespace gm

// GpuBackend (gpu_backend.h): host mirrors and dtype dispatch around GpuModel.
#include "gpu_backend.h"

#include <stdexcept>

#if defined(GM_CUDA_EMUL)
#include "../test/emul_nccl.h"
#else
#include "../cuda/nccl_comm.h"
#include "../cuda/probe.h"
#endif

namespace gm {

namespace dev = cuda::device;

GpuBackend::GpuBackend(const Config& c, const GpuOptions& o) : cfg(c), options(o) {
  const int n = dev::device_count();
  if (n == 0) throw std::runtime_error("no CUDA GPU is visible to this process (gm doctor shows what the CUDA runtime reports)");
  if (o.device < 0 || o.device >= n)
    throw std::invalid_argument("GPU " + std::to_string(o.device) + " does not exist: this process sees " + std::to_string(n) + " GPU(s)");
  dev::set_device(o.device);
  cuda::GpuConfig g = to_gpu_config(c);
  g.ssd_scan = o.ssd_scan;
  if (o.bf16) b16_.reset(new cuda::GpuModel<cuda::bf16>(g));
  else f32_.reset(new cuda::GpuModel<float>(g));
  with([this](auto& m) {
    for (const auto& t : m.tensors) tensors.push_back(TensorInfo{t.name, t.shape, t.offset, t.numel, t.decay});
    const std::size_t n = (std::size_t)m.num_params();
    params.assign(n, 0.f);
    grads.assign(n, 0.f);
    adam_m.assign(n, 0.f);
    adam_v.assign(n, 0.f);
  });
}

GpuBackend::~GpuBackend() {
  // The model's buffers first (a pending reduction may still use the communicator), then NCCL.
  f32_.reset();
  b16_.reset();
  comm_.reset();
}

std::vector<float>* GpuBackend::buffer(const std::string& name) {
  return name == "params" ? &params : name == "grads" ? &grads : name == "adam_m" ? &adam_m : name == "adam_v" ? &adam_v : nullptr;
}

void GpuBackend::download(const std::string& name) {
  with([&](auto& m) {
    if (name == "params") m.get_params(params.data());
    else if (name == "grads") m.get_grads(grads.data());
    else if (name == "adam_m" || name == "adam_v") m.get_moments(adam_m.data(), adam_v.data());
    else throw std::invalid_argument("download(name): unknown buffer \"" + name + "\"");
  });
}

void GpuBackend::upload(const std::string& name) {
  with([&](auto& m) {
    if (name == "params") m.set_params(params.data());
    else if (name == "grads") m.set_grads(grads.data());
    else if (name == "adam_m" || name == "adam_v") m.set_moments(adam_m.data(), adam_v.data());
    else throw std::invalid_argument("upload(name): unknown buffer \"" + name + "\"");
  });
}

void GpuBackend::init(std::uint64_t seed) {
  Model cpu(cfg);
  cpu.init(seed);
  params = cpu.params;
  std::fill(adam_m.begin(), adam_m.end(), 0.f);
  std::fill(adam_v.begin(), adam_v.end(), 0.f);
  upload("params");
  upload("adam_m");
  zero_grad();
}

void GpuBackend::forward(const std::int32_t* tokens, const std::int32_t* lengths, i64 B, i64 L) {
  with([&](auto& m) {
    m.forward(tokens, lengths, B, L);
  });
  B_ = B;
  L_ = L;
}
void GpuBackend::logits(float* out) const {
  with([&](auto& m) {
    m.logits(out);
  });
}
void GpuBackend::argmax_logits(std::int32_t* out) const {
  with([&](auto& m) {
    m.argmax_logits(out);
  });
}
void GpuBackend::hidden_copy(float* out, std::size_t) const {
  with([&](auto& m) {
    m.get_hidden(out);
  });
}
Model::LossResult GpuBackend::loss(const std::int32_t* targets, double scale, bool backward, const float* hidden_grad) {
  return with([&](auto& m) {
    const auto r = m.loss(targets, scale, backward, hidden_grad);
    return Model::LossResult{r.loss, r.count};
  });
}
void GpuBackend::zero_grad() {
  with([](auto& m) {
    m.zero_grad();
  });
}
double GpuBackend::grad_norm() const {
  return with([](auto& m) { return m.grad_norm(); });
}
void GpuBackend::adamw(const AdamWOptions& o) {
  cuda::GpuAdamW h;
  h.lr = o.lr;
  h.beta1 = o.beta1;
  h.beta2 = o.beta2;
  h.eps = o.eps;
  h.weight_decay = o.weight_decay;
  h.step = o.step;
  h.grad_scale = o.grad_scale;
  with([&](auto& m) {
    m.adamw(h);
  });
}
i64 GpuBackend::activation_bytes() const { return B_ ? (i64)activation_bytes_for(B_, L_) : 0; }
std::size_t GpuBackend::activation_bytes_for(i64 B, i64 L) const {
  return with([&](auto& m) { return m.activation_bytes(B, L); });
}
std::size_t GpuBackend::param_bytes() const {
  return with([](auto& m) { return m.param_bytes(); });
}

void GpuBackend::join_nccl(const std::vector<std::uint8_t>& id, int rank, int world_size, double timeout_s) {
  if (comm_) throw std::logic_error("join_nccl: this engine already belongs to a group");
  dev::set_device(options.device);
#if defined(GM_CUDA_EMUL)
  comm_.reset(new cuda::EmulNcclComm(id, rank, world_size, timeout_s));
#else
  comm_.reset(new cuda::NcclComm(id, rank, world_size, timeout_s));
#endif
  with([&](auto& m) {
    m.set_comm(comm_.get(), timeout_s);
  });
}
void GpuBackend::reduce_next_backward() {
  with([](auto& m) {
    m.reduce_next_backward();
  });
}
void GpuBackend::finish_reduction() {
  with([](auto& m) {
    m.finish_reduction();
  });
}

int gpu_count() { return dev::device_count(); }

#if defined(GM_CUDA_EMUL)
std::string gpu_report_json() {
  const std::string nccl = cuda::emul_nccl_enabled()
                               ? "{\"found\":true,\"path\":\"emulated: loopback sockets (native/test/emul_nccl.h)\",\"version\":\"emulated\",\"error\":null}"
                               : "{\"found\":false,\"path\":null,\"version\":null,\"error\":\"disabled on the emulated backend (GM_EMUL_NCCL=0)\"}";
  return "{\"emulated\":true,\"devices\":[{\"ordinal\":0,\"name\":\"emulated (host memory, kernel bodies on the CPU)\"}],"
         "\"cublaslt\":{\"found\":false,\"error\":\"not used: the emulated backend's GEMM is a host loop\"},"
         "\"nccl\":" + nccl + ",\"error\":null}";
}
std::vector<std::uint8_t> nccl_unique_id() {
  if (!cuda::emul_nccl_enabled()) throw std::runtime_error("NCCL is disabled on the emulated GPU backend (GM_EMUL_NCCL=0)");
  return cuda::emul_nccl_unique_id();
}
#else
std::string gpu_report_json() { return cuda::cuda_runtime_report_json(); }
std::vector<std::uint8_t> nccl_unique_id() { return cuda::NcclComm::create_unique_id(); }
#endif

}  // namespace gm

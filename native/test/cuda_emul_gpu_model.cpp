// gm_gpu_model_emul (and, linked with the real CUDA backend, gm_gpu_model_check: the same checks on
// a GPU, except the emulation-only data-parallel and exact-memory ones): the GPU model (native/cuda/gpu_model.cpp) on the emulated backend
// (native/test/cuda_emul_device.cpp: every kernel body run over its launcher's grid on the CPU, host
// memory, a loop GEMM) against the CPU engine (native/src/model.cpp Model) with the same parameters:
// the tensor table, the loss, the post-norm hidden states and every parameter gradient (fp32 within
// 1e-4 relative: max |gpu - cpu| / max |cpu| per tensor), two clipped AdamW steps (parameters within
// 1e-5), and the bf16 working-copy mode (bf16 activations and parameter copy, fp32 master) within
// looser tolerances: hidden states and loss 2e-2, gradients and the parameters after two AdamW steps
// 1e-1 (observed <= 7.1e-3, <= 6.3e-2 and <= 2.1e-2: a bf16 value is within 2e-3 of its float, and
// Adam's sign-like first steps turn a flipped tiny gradient into a 2 lr parameter difference). Also
// logits() (same tolerances as the hidden states) and argmax_logits() (fp32: identical ids; bf16: the
// GPU's pick scores within 2e-2 of the CPU's best). Small models (vocab 40, d 16, 2 layers, d_state 8,
// chunk 4; Mamba-2 with headdim 8, Mamba-1 with dt_rank 3) on a padded batch (lengths 11, 8, 4), both
// mixers, every combine mode. One JSON line per check and a
// summary; exits 1 on any failure. packages/engine/test/cuda-kernels.test.ts runs it.
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../cuda/gpu_model.h"
#include "gpu_backend.h"
#if !defined(GM_CUDA_EMUL)
#include <chrono>
#include <thread>

#include "../cuda/nccl_comm.h"
#endif
#include "model.h"
#include "ops/global_norm.h"

namespace cu = gm::cuda;
using gm::i64;
using Vec = std::vector<float>;

static int failures = 0, checks = 0;
// The second pass of the Mamba-2 checks runs the chunked SSD scan (GpuConfig::ssd_scan); its lines
// carry mode "ssd_...".
static bool g_ssd = false;
static void report(const char* check, const std::string& mode, const char* dt, const std::string& output, double err,
                   double tol) {
  checks++;
  const bool ok = err <= tol;
  if (!ok) failures++;
  std::printf("{\"check\":\"%s\",\"mode\":\"%s\",\"dtype\":\"%s\",\"output\":\"%s\",\"max_rel_err\":%.3e,\"tol\":%.0e,\"ok\":%s}\n",
              check, ((g_ssd ? "ssd_" : "") + mode).c_str(), dt, output.c_str(), err, tol, ok ? "true" : "false");
}
static double rel_err(const float* a, const float* b, i64 n) {
  double md = 0, mb = 0;
  for (i64 i = 0; i < n; i++) {
    const double d = std::fabs((double)a[i] - (double)b[i]);
    if (std::isnan(d)) return NAN;
    md = std::max(md, d);
    mb = std::max(mb, std::fabs((double)b[i]));
  }
  return mb > 0 ? md / mb : md;
}

static const char* mode_name(gm::Combine c) {
  switch (c) {
    case gm::Combine::Gate: return "gate";
    case gm::Combine::Mean: return "mean";
    case gm::Combine::Sum: return "sum";
    case gm::Combine::Concat: return "concat";
    default: return "unidirectional";
  }
}

static gm::Config small_config(gm::Mixer mx, gm::Combine c) {
  gm::Config g;
  g.vocab_size = 40;
  g.d_model = 16;
  g.n_layer = 2;
  g.mixer = mx;
  g.combine = c;
  g.d_state = 8;
  g.headdim = 8;
  g.chunk_size = 4;
  if (mx == gm::Mixer::Mamba1) g.dt_rank = 3;  // E = 32 channels: scan lane blocks of 16; X = 3 + 2 * 8
  return g;
}
static cu::GpuConfig gpu_config(const gm::Config& c) {
  cu::GpuConfig g = gm::to_gpu_config(c);
  g.ssd_scan = g_ssd;
  return g;
}

struct Batch {
  i64 B = 3, L = 11;
  std::vector<std::int32_t> lengths{11, 8, 4}, tokens, targets;
};
static Batch make_batch(int V, std::uint64_t seed) {
  Batch b;
  std::mt19937_64 rng(seed);
  b.tokens.assign((size_t)(b.B * b.L), 1);
  b.targets.assign((size_t)(b.B * b.L), -100);
  for (i64 r = 0; r < b.B; r++)
    for (i64 t = 0; t < b.lengths[(size_t)r]; t++) {
      b.tokens[(size_t)(r * b.L + t)] = (std::int32_t)(rng() % (std::uint64_t)V);
      if (t % 3 != 1) b.targets[(size_t)(r * b.L + t)] = (std::int32_t)(rng() % (std::uint64_t)V);  // some -100 inside
    }
  return b;
}

template <typename T>
static void check_mode(gm::Mixer mx, gm::Combine comb, bool adam, double tol_out, double tol_grad) {
  const std::string mode = std::string(mx == gm::Mixer::Mamba1 ? "mamba1_" : "") + mode_name(comb);
  const char* dt = sizeof(T) == 4 ? "f32" : "bf16";
  const gm::Config cfg = small_config(mx, comb);
  gm::Model cpu(cfg);
  cpu.init(1234);
  // Mamba-1 at init: y * SiLU(z) is small next to the residual, so f - b (the gate's weight gradient
  // is proportional to it) cancels when f and b are stored in bf16: aggr's gradient then differs by
  // 0.17 of its max (fp32: 1e-7). out_proj x 4 makes the mixer output count (bf16: 2.1e-2).
  if (mx == gm::Mixer::Mamba1)
    for (const auto& t : cpu.tensors)
      if (t.name.find("out_proj") != std::string::npos)
        for (i64 i = 0; i < t.numel; i++) cpu.params[(size_t)(t.offset + i)] *= 4.f;
  cu::GpuModel<T> gpu(gpu_config(cfg));
  // the tensor table, one to one
  bool same = gpu.tensors.size() == cpu.tensors.size() && gpu.num_params() == (i64)cpu.params.size();
  for (size_t i = 0; same && i < cpu.tensors.size(); i++) {
    const auto &a = gpu.tensors[i], &b = cpu.tensors[i];
    same = a.name == b.name && a.shape == b.shape && a.offset == b.offset && a.numel == b.numel && a.decay == b.decay;
  }
  if (sizeof(T) == 4) report("tensor_table", mode, dt, "names_shapes_offsets_decay", same ? 0 : 1, 0);
  if (!same) return;
  gpu.set_params(cpu.params.data());
  const Batch bt = make_batch((int)cfg.vocab_size, 99);
  const i64 M = bt.B * bt.L, d = cfg.d_model, n = (i64)cpu.params.size();

  cpu.zero_grad();
  gpu.zero_grad();
  cpu.forward(bt.tokens.data(), bt.lengths.data(), bt.B, bt.L);
  gpu.forward(bt.tokens.data(), bt.lengths.data(), bt.B, bt.L);
  Vec hid((size_t)(M * d));
  gpu.get_hidden(hid.data());
  report("hidden", mode, dt, "hidden", rel_err(hid.data(), cpu.hidden(), M * d), tol_out);
  {  // logits() and argmax_logits() of the same forward
    const i64 V = cfg.vocab_size;
    Vec lc((size_t)(M * V)), lgv((size_t)(M * V));
    cpu.logits(lc.data());
    gpu.logits(lgv.data());
    report("logits", mode, dt, "logits", rel_err(lgv.data(), lc.data(), M * V), tol_out);
    std::vector<std::int32_t> ac((size_t)M), ag((size_t)M, -1);
    cpu.argmax_logits(ac.data());
    gpu.argmax_logits(ag.data());
    if (sizeof(T) == 4) {  // exact in fp32
      double bad = 0;
      for (i64 i = 0; i < M; i++) bad += ac[(size_t)i] != ag[(size_t)i];
      report("argmax", mode, dt, "mismatches", bad, 0);
    } else {  // bf16 may flip near-ties: the GPU's pick must score within tol_out of the CPU's best
      double worst = 0, mx = 0;
      for (i64 i = 0; i < M * V; i++) mx = std::max(mx, (double)std::fabs(lc[(size_t)i]));
      for (i64 i = 0; i < M; i++)
        worst = std::max(worst, (double)(lc[(size_t)(i * V + ac[(size_t)i])] - lc[(size_t)(i * V + ag[(size_t)i])]));
      report("argmax", mode, dt, "score_gap", worst / mx, tol_out);
    }
  }
  const auto lc = cpu.loss(bt.targets.data(), 1.0, true);
  const auto lg = gpu.loss(bt.targets.data(), 1.0, true);
  report("loss", mode, dt, "loss", std::fabs(lg.loss - lc.loss) / std::fabs(lc.loss) + (lg.count != lc.count), tol_out);
  Vec g((size_t)n);
  gpu.get_grads(g.data());
  for (const auto& t : cpu.tensors)
    report("grad", mode, dt, t.name, rel_err(g.data() + t.offset, cpu.grads.data() + t.offset, t.numel), tol_grad);
  report("grad_norm", mode, dt, "norm", std::fabs(gpu.grad_norm() - cpu.grad_norm()) / cpu.grad_norm(), tol_grad);
  if (!adam) return;

  // Two clipped AdamW steps (the first clips: max_norm below the gradient norm), then the parameters.
  const double max_norm = 0.5 * cpu.grad_norm();
  for (long step = 1; step <= 2; step++) {
    if (step > 1) {
      cpu.zero_grad();
      gpu.zero_grad();
      cpu.forward(bt.tokens.data(), bt.lengths.data(), bt.B, bt.L);
      gpu.forward(bt.tokens.data(), bt.lengths.data(), bt.B, bt.L);
      cpu.loss(bt.targets.data(), 1.0, true);
      gpu.loss(bt.targets.data(), 1.0, true);
    }
    gm::AdamWOptions o;
    o.lr = 1e-3;
    o.weight_decay = 0.1;
    o.step = step;
    o.grad_scale = gm::clip_scale(cpu.grad_norm(), max_norm);
    cpu.adamw(o);
    cu::GpuAdamW h;
    h.lr = 1e-3;
    h.weight_decay = 0.1;
    h.step = step;
    h.max_norm = max_norm;
    gpu.adamw(h);
  }
  Vec p((size_t)n);
  gpu.get_params(p.data());
  double worst = 0;
  for (const auto& t : cpu.tensors) worst = std::max(worst, rel_err(p.data() + t.offset, cpu.params.data() + t.offset, t.numel));
  report("adamw_2_steps", mode, dt, "params", worst, sizeof(T) == 4 ? 1e-5 : tol_grad);
}

// ---- determinism: the same seed and batch twice (two models, then one model twice) give bitwise
// equal losses, gradients and parameters after an AdamW step (no atomics in any reduction).
template <typename T>
static void check_determinism(gm::Mixer mx) {
  const std::string mode = mx == gm::Mixer::Mamba1 ? "mamba1_gate" : "gate";
  const char* dt = sizeof(T) == 4 ? "f32" : "bf16";
  const gm::Config cfg = small_config(mx, gm::Combine::Gate);
  gm::Model init(cfg);
  init.init(11);
  const Batch bt = make_batch((int)cfg.vocab_size, 12);
  const i64 n = (i64)init.params.size();
  std::vector<Vec> grads, params;
  std::vector<double> losses;
  cu::GpuModel<T> a(gpu_config(cfg)), b(gpu_config(cfg));
  for (cu::GpuModel<T>* m : {&a, &b, &a}) {
    m->set_params(init.params.data());
    m->set_moments(Vec((size_t)n, 0.f).data(), Vec((size_t)n, 0.f).data());
    m->zero_grad();
    m->forward(bt.tokens.data(), bt.lengths.data(), bt.B, bt.L);
    losses.push_back(m->loss(bt.targets.data(), 1.0, true).loss);
    grads.emplace_back((size_t)n);
    m->get_grads(grads.back().data());
    cu::GpuAdamW h;
    h.lr = 1e-3;
    h.max_norm = 1.0;
    m->adamw(h);
    params.emplace_back((size_t)n);
    m->get_params(params.back().data());
  }
  double differ = 0;
  for (size_t r = 1; r < 3; r++) {
    differ += losses[r] != losses[0];
    for (i64 i = 0; i < n; i++) differ += grads[r][(size_t)i] != grads[0][(size_t)i] || params[r][(size_t)i] != params[0][(size_t)i];
  }
  report("determinism", mode, dt, "bitwise_differences", differ, 0);
}

// ---- resume across CPU <-> GPU: the weights and AdamW moments after 2 steps on one side, moved to
// the other (what a checkpoint carries), then a 3rd step on both sides: the same parameters (fp32
// within 1e-5 of max |p|, the two AdamW tolerance). Both directions.
static void check_resume(gm::Mixer mx) {
  const std::string mode = mx == gm::Mixer::Mamba1 ? "mamba1_gate" : "gate";
  const gm::Config cfg = small_config(mx, gm::Combine::Gate);
  const Batch bt = make_batch((int)cfg.vocab_size, 21);
  auto cpu_step = [&](gm::Model& m, long step) {
    m.zero_grad();
    m.forward(bt.tokens.data(), bt.lengths.data(), bt.B, bt.L);
    m.loss(bt.targets.data(), 1.0, true);
    gm::AdamWOptions o;
    o.lr = 1e-3;
    o.weight_decay = 0.1;
    o.step = step;
    o.grad_scale = gm::clip_scale(m.grad_norm(), 1.0);
    m.adamw(o);
  };
  auto gpu_step = [&](cu::GpuModel<float>& m, long step) {
    m.zero_grad();
    m.forward(bt.tokens.data(), bt.lengths.data(), bt.B, bt.L);
    m.loss(bt.targets.data(), 1.0, true);
    cu::GpuAdamW h;
    h.lr = 1e-3;
    h.weight_decay = 0.1;
    h.step = step;
    h.max_norm = 1.0;
    m.adamw(h);
  };
  for (bool from_gpu : {true, false}) {
    gm::Model cpu(cfg);
    cpu.init(31);
    cu::GpuModel<float> gpu(gpu_config(cfg));
    gpu.set_params(cpu.params.data());
    gpu.set_moments(cpu.adam_m.data(), cpu.adam_v.data());
    for (long step = 1; step <= 2; step++) {
      if (from_gpu) gpu_step(gpu, step);
      else cpu_step(cpu, step);
    }
    if (from_gpu) {  // GPU -> CPU
      gpu.get_params(cpu.params.data());
      gpu.get_moments(cpu.adam_m.data(), cpu.adam_v.data());
    } else {  // CPU -> GPU
      gpu.set_params(cpu.params.data());
      gpu.set_moments(cpu.adam_m.data(), cpu.adam_v.data());
    }
    cpu_step(cpu, 3);
    gpu_step(gpu, 3);
    Vec p(cpu.params.size());
    gpu.get_params(p.data());
    double worst = 0;
    for (const auto& t : cpu.tensors) worst = std::max(worst, rel_err(p.data() + t.offset, cpu.params.data() + t.offset, t.numel));
    report("resume", mode, "f32", from_gpu ? "gpu_2_steps_then_both" : "cpu_2_steps_then_both", worst, 1e-5);
  }
}

// ---- data parallel: R ranks x b rows = 1 rank x R*b rows, the ranks as models in this process.
// The group averages at finish(), after every rank has enqueued its reductions: each call copies its
// range to the host when the comm stream reaches it (copy_to_host synchronises that stream, which
// waits for backward to have finished the range), and finish() fails if a range changed after its
// call (a reduction enqueued before backward was done with it: a race on a real comm stream). Runs
// on the emulated device and, in gm_gpu_model_check, on a GPU (two models sharing it).
struct EmulGroup;
struct EmulComm : cu::GradComm {
  EmulGroup* group;
  int r;
  struct Call {
    float* p;  // device memory
    i64 n;
    Vec snapshot;
  };
  std::vector<Call> calls;
  EmulComm(EmulGroup* g, int rank) : group(g), r(rank) {}
  int rank() const override { return r; }
  int world_size() const override;
  void all_reduce_mean(float* p, i64 n, cudaStream_t s) override {
    Call c{p, n, Vec((size_t)n)};
    cu::device::copy_to_host(c.snapshot.data(), p, (size_t)n * sizeof(float), s);
    calls.push_back(std::move(c));
  }
  void wait(cudaStream_t s, double) override { cu::device::stream_sync(s); }
};
struct EmulGroup {
  std::vector<EmulComm> comms;
  explicit EmulGroup(int R) {
    for (int r = 0; r < R; r++) comms.emplace_back(this, r);
  }
  // Averages call i of every rank; returns the number of problems (sequence mismatch, late writes).
  int finish() {
    int bad = 0;
    for (auto& c : comms) bad += c.calls.size() != comms[0].calls.size();
    if (bad) return bad;
    for (size_t i = 0; i < comms[0].calls.size(); i++) {
      const i64 n = comms[0].calls[i].n;
      Vec mean((size_t)n, 0.f), now((size_t)n);
      for (auto& c : comms) {
        const auto& k = c.calls[i];
        if (k.n != n) return bad + 1;
        cu::device::copy_to_host(now.data(), k.p, (size_t)n * sizeof(float), nullptr);
        for (i64 j = 0; j < n; j++) {
          if (now[(size_t)j] != k.snapshot[(size_t)j]) bad++;  // written after its reduction was enqueued
          mean[(size_t)j] += k.snapshot[(size_t)j];
        }
      }
      for (float& m : mean) m /= (float)comms.size();
      for (auto& c : comms) cu::device::copy_to_device(c.calls[i].p, mean.data(), (size_t)n * sizeof(float), nullptr);
    }
    for (auto& c : comms) c.calls.clear();
    return bad;
  }
};
int EmulComm::world_size() const { return (int)group->comms.size(); }

// R ranks x b = 2 rows of one batch of R * b rows (lengths 11, 8, 4, 9, ...), rank r holding rows
// r*b .. r*b + b - 1, and the full batch's gradient on one model. empty_rank: that rank's targets are
// all -100 (its backward does nothing, finish_reduction() must still make the same calls).
struct DpCase {
  std::string mode;
  gm::Config cfg;
  Vec params, gfull;
  i64 R, b = 2, B, L = 11;
  std::vector<std::int32_t> lengths, tokens, targets;
  i64 K = 0;
  std::vector<i64> Kr;
  // the trainer's weighting: rank r's mean loss times R * (its share of the global loss positions)
  double scale(i64 r) const { return (double)R * (double)Kr[(size_t)r] / (double)K; }
};
static DpCase make_dp_case(gm::Mixer mx, gm::Combine comb, int empty_rank, i64 R) {
  DpCase c;
  c.mode = std::string(mx == gm::Mixer::Mamba1 ? "mamba1_" : "") + mode_name(comb) +
           (empty_rank >= 0 ? "_rank" + std::to_string(empty_rank) + "_empty" : "");
  c.cfg = small_config(mx, comb);
  gm::Model init(c.cfg);
  init.init(77);
  c.params = init.params;
  c.R = R;
  c.B = R * c.b;
  const i64 L = c.L, B = c.B;
  for (i64 r = 0; r < B; r++) c.lengths.push_back(std::vector<std::int32_t>{11, 8, 4, 9}[(size_t)(r % 4)]);
  c.tokens.assign((size_t)(B * L), 1);
  c.targets.assign((size_t)(B * L), -100);
  std::mt19937_64 rng(5);
  for (i64 r = 0; r < B; r++)
    for (i64 t = 0; t < c.lengths[(size_t)r]; t++) {
      c.tokens[(size_t)(r * L + t)] = (std::int32_t)(rng() % (std::uint64_t)c.cfg.vocab_size);
      const bool scored = t % 3 != 1 && (empty_rank < 0 || r / c.b != empty_rank);
      if (scored) c.targets[(size_t)(r * L + t)] = (std::int32_t)(rng() % (std::uint64_t)c.cfg.vocab_size);
    }
  c.Kr.assign((size_t)R, 0);
  for (i64 i = 0; i < B * L; i++)
    if (c.targets[(size_t)i] != -100) c.K++, c.Kr[(size_t)(i / L / c.b)]++;
  cu::GpuModel<float> full(gpu_config(c.cfg));
  full.set_params(c.params.data());
  full.zero_grad();
  full.forward(c.tokens.data(), c.lengths.data(), B, L);
  full.loss(c.targets.data(), 1.0, true);
  c.gfull.resize(c.params.size());
  full.get_grads(c.gfull.data());
  return c;
}
// The reports every data-parallel variant makes from the ranks' averaged gradients.
static void report_dp(const char* check, const DpCase& c, const std::vector<Vec>& g, const cu::GpuModel<float>& m0) {
  const i64 n = (i64)c.params.size();
  double differ = 0;
  for (size_t r = 1; r < g.size(); r++)
    for (i64 i = 0; i < n; i++) differ += g[r][(size_t)i] != g[0][(size_t)i];
  report(check, c.mode, "f32", "ranks_bitwise_equal", differ, 0);
  double worst = 0;
  for (const auto& t : m0.tensors) worst = std::max(worst, rel_err(g[0].data() + t.offset, c.gfull.data() + t.offset, t.numel));
  report(check, c.mode, "f32", "grads_vs_one_rank_all_rows", worst, 1e-4);
  std::vector<int> covered((size_t)n, 0);
  for (const auto& r : m0.reduce_order())
    for (i64 i = r.first; i < r.first + r.second; i++) covered[(size_t)i]++;
  double wrong = 0;
  for (int k : covered) wrong += k != 1;
  report(check, c.mode, "f32", "ranges_cover_table_once", wrong, 0);
}

static void check_data_parallel(gm::Mixer mx, gm::Combine comb, int empty_rank) {
  const DpCase c = make_dp_case(mx, comb, empty_rank, 2);
  const gm::Config& cfg = c.cfg;
  const i64 R = c.R, b = c.b, L = c.L, n = (i64)c.params.size();
  const std::string& mode = c.mode;

  EmulGroup group((int)R);
  std::vector<std::unique_ptr<cu::GpuModel<float>>> ranks;
  for (i64 r = 0; r < R; r++) {
    ranks.emplace_back(new cu::GpuModel<float>(gpu_config(cfg)));
    auto& m = *ranks.back();
    m.set_params(c.params.data());
    m.set_comm(&group.comms[(size_t)r]);
    m.zero_grad();
    m.forward(c.tokens.data() + r * b * L, c.lengths.data() + r * b, b, L);
    m.reduce_next_backward();
    m.loss(c.targets.data() + r * b * L, c.scale(r), true);
  }
  for (auto& m : ranks) m->finish_reduction();
  const int bad = group.finish();
  report("data_parallel", mode, "f32", "call_sequence_and_late_writes", bad, 0);
  report("data_parallel", mode, "f32", "calls_per_rank", std::fabs((double)ranks[0]->reduce_order().size() - (double)(cfg.n_layer + (cfg.has_aggr() ? 3 : 2))), 0);
  std::vector<Vec> g((size_t)R, Vec((size_t)n));
  for (i64 r = 0; r < R; r++) ranks[(size_t)r]->get_grads(g[(size_t)r].data());
  report_dp("data_parallel", c, g, *ranks[0]);
}

#if !defined(GM_CUDA_EMUL)
// ---- NCCL on several GPUs (gm_gpu_model_check with 2+ GPUs and NCCL found): one thread per GPU, each
// rank its own model, stream and NcclComm; the reductions really overlap backward on the comm
// stream. Then a rank that never reaches the collective: the others must fail within the timeout.
static void check_nccl(gm::Mixer mx, i64 R) {
  const DpCase c = make_dp_case(mx, gm::Combine::Gate, -1, R);
  const i64 n = (i64)c.params.size();
  const std::vector<std::uint8_t> id = cu::NcclComm::create_unique_id();
  std::vector<Vec> g((size_t)R, Vec((size_t)n));
  std::vector<std::string> errors((size_t)R);
  std::vector<std::unique_ptr<cu::GpuModel<float>>> models((size_t)R);
  auto rank_main = [&](i64 r, bool stall) {
    try {
      cu::device::set_device((int)r);
      cu::NcclComm comm(id, (int)r, (int)R, 60);
      models[(size_t)r].reset(new cu::GpuModel<float>(gpu_config(c.cfg)));
      auto& m = *models[(size_t)r];
      m.set_params(c.params.data());
      m.set_comm(&comm, stall ? 5.0 : 120.0);
      m.zero_grad();
      if (stall && r == R - 1) {  // joins, then never calls the collectives
        m.set_comm(nullptr);
        models[(size_t)r].reset();
        return;
      }
      m.forward(c.tokens.data() + r * c.b * c.L, c.lengths.data() + r * c.b, c.b, c.L);
      m.reduce_next_backward();
      m.loss(c.targets.data() + r * c.b * c.L, c.scale(r), true);
      m.finish_reduction();
      m.get_grads(g[(size_t)r].data());
      m.set_comm(nullptr);
      models[(size_t)r].reset();
    } catch (const std::exception& e) {
      errors[(size_t)r] = e.what();
      models[(size_t)r].reset();
    }
  };
  for (bool stall : {false, true}) {
    std::vector<std::thread> threads;
    const auto t0 = std::chrono::steady_clock::now();
    for (i64 r = 0; r < R; r++) threads.emplace_back(rank_main, r, stall);
    for (auto& t : threads) t.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!stall) {
      double failed = 0;
      for (const auto& e : errors) failed += !e.empty();
      report("nccl", c.mode + "_" + std::to_string(R) + "gpus", "f32", "errors", failed, 0);
      if (!failed) {
        cu::device::set_device(0);
        cu::GpuModel<float> m0(gpu_config(c.cfg));
        report_dp("nccl", c, g, m0);
      }
      for (auto& e : errors) if (!e.empty()) std::printf("{\"nccl_error\":\"%s\"}\n", e.c_str());
    } else {
      double missing = 0;  // every rank but the stalled one must have failed with the NCCL message
      for (i64 r = 0; r + 1 < R; r++) missing += errors[(size_t)r].find("NCCL") == std::string::npos;
      report("nccl", c.mode + "_" + std::to_string(R) + "gpus", "f32", "stalled_rank_detected", missing, 0);
      report("nccl", c.mode + "_" + std::to_string(R) + "gpus", "f32", "seconds_to_fail_vs_30", secs > 30 ? secs : 0, 0);
    }
    for (auto& e : errors) e.clear();
  }
}
#endif

#if defined(GM_CUDA_EMUL)
// ---- memory: activation_bytes() is what forward + backward really allocate (the emulated device
// counts bytes exactly), and the reference run (24l-512d, L 2048, 24 cells per GPU) fits in 80 GB.
template <typename T>
static void check_memory(gm::Mixer mx, gm::Combine comb) {
  const std::string mode = std::string(mx == gm::Mixer::Mamba1 ? "mamba1_" : "") + mode_name(comb);
  const char* dt = sizeof(T) == 4 ? "f32" : "bf16";
  const gm::Config cfg = small_config(mx, comb);
  gm::Model init(cfg);
  init.init(3);
  const std::size_t before = cu::device::memory_stats().in_use;
  {
    cu::GpuModel<T> m(gpu_config(cfg));
    const std::size_t params = cu::device::memory_stats().in_use - before;
    report("memory", mode, dt, "param_bytes_exact", std::fabs((double)params - (double)m.param_bytes()), 0);
    const Batch bt = make_batch((int)cfg.vocab_size, 4);
    const std::size_t predicted = m.activation_bytes(bt.B, bt.L);
    m.set_params(init.params.data());
    m.forward(bt.tokens.data(), bt.lengths.data(), bt.B, bt.L);
    m.loss(bt.targets.data(), 1.0, true);
    const std::size_t used = cu::device::memory_stats().in_use - before - params;
    report("memory", mode, dt, "activation_bytes_exact", std::fabs((double)used - (double)predicted), 0);
  }
  report("memory", mode, dt, "all_freed", std::fabs((double)cu::device::memory_stats().in_use - (double)before), 0);
}

#endif

static void memory_plan_reference() {
  cu::GpuConfig g;  // configs/models/genemamba-24l-512d.json, plus pretraining's [MASK] token
  g.ssd_scan = g_ssd;
  g.vocab_size = 25427;
  g.d_model = 512;
  g.n_layer = 24;
  g.d_state = 64;
  g.headdim = 64;
  g.chunk_size = 64;
  cu::GpuModel<cu::bf16> m(g);
  const double gib = 1024.0 * 1024.0 * 1024.0;
  const double params = (double)m.param_bytes() / gib, acts = (double)m.activation_bytes(24, 2048) / gib;
  std::printf("{\"memory_plan\":\"genemamba-24l-512d bf16, L 2048, batch 24, %s scan\",\"parameters\":%lld,\"param_state_gib\":%.2f,\"activation_gib\":%.2f,\"total_gib\":%.2f}\n",
              g_ssd ? "ssd" : "recurrent", (long long)m.num_params(), params, acts, params + acts);
  // 80 GB = 74.5 GiB; keep 10% for the CUDA context, cuBLASLt workspaces, NCCL buffers, fragmentation
  report("memory_plan", "24l_512d_L2048_b24", "bf16", "total_gib_vs_67", params + acts > 67 ? params + acts : 0, 0);
}

int main() {
#if !defined(GM_CUDA_EMUL)
  if (cu::device::device_count() == 0) {
    std::printf("{\"error\":\"no CUDA GPU visible: gm_gpu_model_check needs one (gm_gpu_model_emul runs the same checks emulated)\"}\n");
    return 2;
  }
  const cu::device::DeviceProps props = cu::device::device_props(0);
  std::printf("{\"device\":\"%s\",\"cc\":\"%d.%d\"}\n", props.name.c_str(), props.cc_major, props.cc_minor);
#endif
  for (gm::Mixer mx : {gm::Mixer::Mamba2, gm::Mixer::Mamba1}) {
    for (gm::Combine c : {gm::Combine::Gate, gm::Combine::Mean, gm::Combine::Sum, gm::Combine::Concat, gm::Combine::Unidirectional})
      check_mode<float>(mx, c, c == gm::Combine::Gate || c == gm::Combine::Mean, 1e-4, 1e-4);
    for (gm::Combine c : {gm::Combine::Gate, gm::Combine::Mean}) check_mode<cu::bf16>(mx, c, true, 2e-2, 1e-1);
  }
  for (gm::Mixer mx : {gm::Mixer::Mamba2, gm::Mixer::Mamba1}) {
    check_determinism<float>(mx);
    check_determinism<cu::bf16>(mx);
    check_resume(mx);
    check_data_parallel(mx, gm::Combine::Gate, -1);
    check_data_parallel(mx, gm::Combine::Unidirectional, -1);
    check_data_parallel(mx, gm::Combine::Gate, 1);
  }
  check_data_parallel(gm::Mixer::Mamba2, gm::Combine::Concat, 0);
#if !defined(GM_CUDA_EMUL)
  if (cu::device::device_count() >= 2 && cu::probe_nccl().found) {
    check_nccl(gm::Mixer::Mamba2, std::min(cu::device::device_count(), 4));
  } else {
    std::printf("{\"nccl\":\"skipped: needs 2 or more GPUs and NCCL (%d GPU(s); NCCL %s)\"}\n", cu::device::device_count(),
                cu::probe_nccl().found ? "found" : "not found");
  }
#endif
#if defined(GM_CUDA_EMUL)
  // exact byte counts: the emulated device only (the CUDA allocator rounds and caches)
  for (gm::Mixer mx : {gm::Mixer::Mamba2, gm::Mixer::Mamba1}) {
    check_memory<float>(mx, gm::Combine::Gate);
    check_memory<cu::bf16>(mx, gm::Combine::Mean);
  }
#endif
  memory_plan_reference();
  // Mamba-2 again with the chunked SSD scan: the same checks against the CPU Model.
  g_ssd = true;
  for (gm::Combine c : {gm::Combine::Gate, gm::Combine::Concat, gm::Combine::Unidirectional})
    check_mode<float>(gm::Mixer::Mamba2, c, c == gm::Combine::Gate, 1e-4, 1e-4);
  check_mode<cu::bf16>(gm::Mixer::Mamba2, gm::Combine::Gate, true, 2e-2, 1e-1);
  check_determinism<float>(gm::Mixer::Mamba2);
  check_determinism<cu::bf16>(gm::Mixer::Mamba2);
  check_resume(gm::Mixer::Mamba2);
  check_data_parallel(gm::Mixer::Mamba2, gm::Combine::Gate, 1);
#if defined(GM_CUDA_EMUL)
  check_memory<float>(gm::Mixer::Mamba2, gm::Combine::Gate);
  check_memory<cu::bf16>(gm::Mixer::Mamba2, gm::Combine::Mean);
#endif
  memory_plan_reference();
  g_ssd = false;
  std::printf("{\"failures\":%d,\"checks\":%d}\n", failures, checks);
  return failures ? 1 : 0;
}

// One GPU's training throughput without Node (native/build*/gm_gpu_train_bench, built with the CUDA
// backend): the same measurement as `npm run bench:gpu` (scripts/bench/gpu.mjs), through the same
// GpuBackend the addon's GpuEngine wraps, so a GPU machine that has no node_modules (no npm registry
// there) still measures the numbers. scripts/gpu/device-check.sh runs it.
//
// Measured, for genemamba-24l-512d (+ the [MASK] token) at L 2048 and 24 cells by default:
//   train   : zero_grad + forward + loss backward + grad-norm clip + AdamW (as GeneMamba.trainStep)
//   fb      : zero_grad + forward + loss backward + grad_norm (the paper's forward + backward figure)
//   forward : forward + the LM-head loss without backward (as GeneMamba.evaluate)
// each GM_BENCH_STEPS times after GM_BENCH_WARMUP warm-up steps; seconds per step and per sample,
// tokens/s, model TFLOP/s (the formula of packages/train/src/metrics.ts forwardFlops, kept equal by
// packages/engine/test/gpu-train-bench.test.ts) and MFU against the device's dense bf16 peak, the
// allocator's peak bytes beside activation_bytes() + param_bytes(), and the loss of the first and last
// train step (the same batch every step, so it must fall).
//
// Every interval ends on a value read back from the device (the loss or the gradient norm), so the
// GPU work is inside it; AdamW is queued after the norm's read-back and lands in the next interval.
//
// Environment: GM_BENCH_VOCAB (gene vocabulary before [MASK], 25426), GM_BENCH_D_MODEL (512),
// GM_BENCH_N_LAYER (24), GM_BENCH_D_STATE (64), GM_BENCH_HEADDIM (64), GM_BENCH_CHUNK (64),
// GM_BENCH_MIXER (mamba2 | mamba1; mamba1 uses GM_BENCH_DT_RANK, default d_model / 16),
// GM_BENCH_LENGTH (2048), GM_BENCH_BATCH (24), GM_BENCH_STEPS (10), GM_BENCH_WARMUP (2),
// GM_BENCH_DTYPE (bf16 | float32), GM_GPU_SCAN (recurrent | ssd: Mamba-2's scan kernels). `--plan` prints the configuration, FLOPs and memory plan and
// stops before allocating activations (what the test checks on machines without a GPU).
// The emulated build (gm_gpu_train_bench_emul) runs the same code with the kernels on the CPU: a test
// of this program, never a measurement; its lines say "emulated":true.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu_backend.h"

namespace dev = gm::cuda::device;
using gm::i64;
using clk = std::chrono::steady_clock;

#if defined(GM_CUDA_EMUL)
static constexpr bool kEmulated = true;
#else
static constexpr bool kEmulated = false;
#endif

static i64 env_int(const char* name, i64 def) {
  const char* v = std::getenv(name);
  if (!v || !*v) return def;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (*end || x < 1) throw std::invalid_argument(std::string(name) + " must be a positive integer, got \"" + v + "\"");
  return (i64)x;
}
static std::string env_str(const char* name, const char* def) {
  const char* v = std::getenv(name);
  return v && *v ? v : def;
}

// packages/train/src/metrics.ts forwardFlops: every matrix product of both directions and the
// combine gate (2 FLOPs per multiply-add), the scan at 6 * d_inner * d_state per token and
// direction, the LM head over the loss positions; training = 3 x forward.
static double forward_flops(const gm::Config& c, double tokens, double loss_positions) {
  const double d = (double)c.d_model, E = (double)c.d_inner(), N = (double)c.d_state, V = (double)c.vocab_size;
  const double matmul = c.mixer == gm::Mixer::Mamba2
                            ? (2 * E + 2 * N + E / (double)c.headdim) * d + d * E
                            : 2 * E * d + ((double)c.dt_rank + 2 * N) * E + E * (double)c.dt_rank + d * E;
  const double directions = c.bidirectional() ? 2 : 1;
  const double per_token_layer = directions * (2 * matmul + 6 * E * N) + (c.has_aggr() ? 2 * 2 * d * d : 0);
  return tokens * (double)c.n_layer * per_token_layer + loss_positions * 2 * d * V;
}

// The batch of scripts/bench/gpu.mjs, value for value: random genes (an LCG, seed 7), every row full
// length, 15% of the positions of each row targets, 80% of those shown as [MASK].
struct Batch {
  std::vector<std::int32_t> tokens, targets, lengths;
  i64 loss_positions = 0;
};
static Batch make_batch(i64 B, i64 L, i64 genes, std::int32_t mask_id) {
  Batch b;
  b.tokens.assign((size_t)(B * L), 0);
  b.targets.assign((size_t)(B * L), -100);
  b.lengths.assign((size_t)B, (std::int32_t)L);
  std::uint32_t seed = 7;
  auto rnd = [&] {
    seed = seed * 1664525u + 1013904223u;
    return (double)seed / 4294967296.0;
  };
  const i64 per_row = std::max<i64>(1, (i64)std::lround(0.15 * (double)L));
  std::vector<i64> order((size_t)L);
  for (i64 i = 0; i < L; i++) order[(size_t)i] = i;
  for (i64 r = 0; r < B; r++) {
    for (i64 t = 0; t < L; t++) b.tokens[(size_t)(r * L + t)] = 2 + (std::int32_t)std::floor(rnd() * (double)(genes - 2));
    for (i64 k = 0; k < per_row; k++) {  // partial Fisher-Yates: per_row distinct positions
      const i64 j = k + (i64)std::floor(rnd() * (double)(L - k));
      std::swap(order[(size_t)k], order[(size_t)j]);
      const size_t i = (size_t)(r * L + order[(size_t)k]);
      b.targets[i] = b.tokens[i];
      if (rnd() < 0.8) b.tokens[i] = mask_id;
    }
  }
  b.loss_positions = B * per_row;
  return b;
}

struct Timing {
  double seconds = 0, median = 0, min = 0;
};
template <class F>
static Timing time_loop(int n, F&& body, gm::GpuBackend& m) {
  std::vector<double> per;
  const auto t0 = clk::now();
  auto last = t0;
  for (int i = 0; i < n; i++) {
    body();
    const auto now = clk::now();
    per.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
  }
  m.grad_norm();  // drains a queued AdamW
  Timing t;
  t.seconds = std::chrono::duration<double>(clk::now() - t0).count() / n;
  std::sort(per.begin(), per.end());
  t.median = per[(per.size() - 1) / 2];
  t.min = per.front();
  return t;
}

static int run(bool plan_only) {
  gm::Config c;
  const std::string mixer = env_str("GM_BENCH_MIXER", "mamba2");
  if (mixer != "mamba2" && mixer != "mamba1") throw std::invalid_argument("GM_BENCH_MIXER must be mamba2 or mamba1, got \"" + mixer + "\"");
  const i64 genes = env_int("GM_BENCH_VOCAB", 25426);
  c.vocab_size = genes + 1;  // pretraining appends [MASK]
  c.d_model = env_int("GM_BENCH_D_MODEL", 512);
  c.n_layer = env_int("GM_BENCH_N_LAYER", 24);
  c.mixer = mixer == "mamba2" ? gm::Mixer::Mamba2 : gm::Mixer::Mamba1;
  c.d_state = env_int("GM_BENCH_D_STATE", mixer == "mamba2" ? 64 : 16);
  c.headdim = env_int("GM_BENCH_HEADDIM", 64);
  c.chunk_size = env_int("GM_BENCH_CHUNK", 64);
  if (mixer == "mamba1") c.dt_rank = env_int("GM_BENCH_DT_RANK", (c.d_model + 15) / 16);
  c.validate();
  const i64 L = env_int("GM_BENCH_LENGTH", 2048), B = env_int("GM_BENCH_BATCH", 24);
  const int steps = (int)env_int("GM_BENCH_STEPS", 10), warmup = (int)env_int("GM_BENCH_WARMUP", 2);
  const std::string dtype = env_str("GM_BENCH_DTYPE", "bf16");
  if (dtype != "bf16" && dtype != "float32") throw std::invalid_argument("GM_BENCH_DTYPE must be bf16 or float32, got \"" + dtype + "\"");
  const bool ssd_scan = gm::ssd_scan_from_env();

  if (dev::device_count() == 0) {
    std::printf("{\"error\":\"no CUDA GPU visible: gm_gpu_train_bench needs one (gm_gpu_train_bench_emul runs it emulated)\"}\n");
    return 2;
  }
  const dev::DeviceProps p = dev::device_props(0);
  std::printf("{\"device\":\"%s\",\"cc\":\"%d.%d\",\"sms\":%d,\"memory_gib\":%.1f,\"bf16_peak_tflops\":%.1f,\"emulated\":%s}\n",
              kEmulated ? "emulated" : p.name.c_str(), p.cc_major, p.cc_minor, p.sm_count,
              (double)p.total_bytes / (1024.0 * 1024 * 1024), p.bf16_peak_tflops, kEmulated ? "true" : "false");

  gm::GpuOptions o;
  o.bf16 = dtype == "bf16";
  o.ssd_scan = ssd_scan;
  gm::GpuBackend m(c, o);
  const char* scan = mixer == "mamba2" && o.ssd_scan ? "ssd" : "recurrent";
  const Batch batch = make_batch(B, L, genes, (std::int32_t)genes);
  const double flops = 3 * forward_flops(c, (double)(B * L), (double)batch.loss_positions);
  const double executed = 3 * forward_flops(c, (double)(B * L), (double)(B * L));  // the LM head runs over every row
  const std::size_t param_bytes = m.param_bytes(), act_bytes = m.activation_bytes_for(B, L);
  std::printf("{\"config\":{\"vocab_size\":%lld,\"d_model\":%lld,\"n_layer\":%lld,\"mixer\":\"%s\",\"combine\":\"gate\",\"d_state\":%lld,"
              "\"headdim\":%lld,\"expand\":%lld,\"d_conv\":%lld,\"dt_rank\":%lld,\"chunk_size\":%lld},\"parameters\":%zu,\"length\":%lld,"
              "\"batch\":%lld,\"dtype\":\"%s\",\"scan\":\"%s\",\"loss_positions\":%lld,\"flops_per_step\":%.17g,\"executed_flops_per_step\":%.17g,"
              "\"param_bytes\":%zu,\"activation_bytes\":%zu}\n",
              (long long)c.vocab_size, (long long)c.d_model, (long long)c.n_layer, mixer.c_str(), (long long)c.d_state,
              (long long)c.headdim, (long long)c.expand, (long long)c.d_conv, (long long)c.dt_rank, (long long)c.chunk_size,
              m.params.size(), (long long)L, (long long)B, dtype.c_str(), scan, (long long)batch.loss_positions, flops, executed,
              param_bytes, act_bytes);
  if (plan_only) return 0;

  m.init(1);
  dev::reset_peak();
  long adam_step = 0;
  double first_loss = NAN, last_loss = NAN;
  auto forward_backward = [&] {
    m.zero_grad();
    m.forward(batch.tokens.data(), batch.lengths.data(), B, L);
    return m.loss(batch.targets.data(), 1.0, true, nullptr).loss;
  };
  auto train_step = [&] {
    last_loss = forward_backward();
    if (std::isnan(first_loss)) first_loss = last_loss;
    const double norm = m.grad_norm();
    gm::AdamWOptions a;
    a.lr = 1e-4;
    a.weight_decay = 0.01;
    a.step = ++adam_step;
    a.grad_scale = std::min(1.0, 1.0 / (norm + 1e-6));  // clip to 1, as clippedAdamwStep
    m.adamw(a);
  };
  auto fb_step = [&] {
    forward_backward();
    m.grad_norm();
  };
  auto fwd_step = [&] {
    m.forward(batch.tokens.data(), batch.lengths.data(), B, L);
    m.loss(batch.targets.data(), 1.0, false, nullptr);
  };
  time_loop(warmup, train_step, m);
  const Timing train = time_loop(steps, train_step, m);
  time_loop(1, fb_step, m);
  const Timing fb = time_loop(steps, fb_step, m);
  time_loop(1, fwd_step, m);
  const Timing fwd = time_loop(steps, fwd_step, m);
  const dev::MemoryStats mem = dev::memory_stats();

  const double tflops = flops / train.seconds / 1e12;
  const double mfu = !kEmulated && p.bf16_peak_tflops > 0 ? tflops / p.bf16_peak_tflops : NAN;
  auto phase = [&](const char* name, const Timing& t) {
    std::printf("{\"phase\":\"%s\",\"seconds_per_step\":%.6g,\"seconds_per_sample\":%.6g,\"median_seconds\":%.6g,\"min_seconds\":%.6g,\"tokens_per_second\":%.6g}\n",
                name, t.seconds, t.seconds / (double)B, t.median, t.min, (double)(B * L) / t.seconds);
  };
  phase("train", train);
  phase("forward_backward", fb);
  phase("forward", fwd);
  std::printf("{\"result\":\"gm_gpu_train_bench\",\"emulated\":%s,\"steps\":%d,\"warmup\":%d,\"train_seconds_per_sample\":%.6g,"
              "\"tokens_per_second\":%.6g,\"tflops\":%.6g,\"executed_tflops\":%.6g,\"mfu\":%s,\"fb_seconds_per_sample\":%.6g,"
              "\"paper_seconds_per_sample\":0.1284,\"vs_paper\":%s,\"loss_first\":%.6g,\"loss_last\":%.6g,"
              "\"peak_allocated_bytes\":%zu,\"planned_bytes\":%zu}\n",
              kEmulated ? "true" : "false", steps, warmup, train.seconds / (double)B, (double)(B * L) / train.seconds, tflops,
              executed / train.seconds / 1e12, std::isnan(mfu) ? "null" : std::to_string(mfu).c_str(), fb.seconds / (double)B,
              kEmulated ? "null" : std::to_string(0.1284 / (fb.seconds / (double)B)).c_str(), first_loss, last_loss, mem.peak, param_bytes + act_bytes);
  return std::isfinite(last_loss) && last_loss < first_loss ? 0 : 1;
}

int main(int argc, char** argv) {
  const bool plan = argc > 1 && std::strcmp(argv[1], "--plan") == 0;
  try {
    return run(plan);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '"', '\'');
    std::printf("{\"error\":\"%s\"}\n", msg.c_str());
    return 1;
  }
}

// The selective scan kernels on a GPU against the device's DRAM bandwidth (native/build/
// gm_gpu_scan_bench, built with the CUDA backend; scripts/bench/gpu.mjs runs it when it exists).
// One JSON line per (shape, storage type, pass): seconds per call (best of GM_BENCH_REPS after a
// warm-up), the bytes the pass must move at least, GB/s and that as a fraction of the peak.
//
// Minimum bytes (the scan reads each input once and writes each output once; the state stays on chip):
//   forward : x, dt, B, C read, y written (storage type T), chunk-start states written (fp32)
//   backward: x, dt, B, C, dy read and dx, ddt, dB, dC written (T), the states read (fp32); the
//             partial buffers of dB/dC/d(dt) and their reduction come on top and are not counted.
// Kernels: scan_mamba2 / scan_mamba1 (scan.cu, the recurrence) and ssd_mamba2 (ssd.cu, the chunked
// SSD form of the same Mamba-2 scan, batched tensor-core GEMMs).
// Shape: GM_BENCH_D_INNER / GM_BENCH_HEADDIM / GM_BENCH_D_STATE / GM_BENCH_CHUNK, by default the
// reference layer (24l-512d: Mamba-2 with 16 heads x 64 channels, N 64, chunk 64; Mamba-1 with 1024
// channels, N 16), over 2 x GM_BENCH_BATCH mixer rows (both directions) of GM_BENCH_LENGTH steps.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../cuda/device.h"
#include "../cuda/kernels.h"

using namespace gm::cuda;
using clk = std::chrono::steady_clock;

static long env_int(const char* name, long def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atol(v) : def;
}

template <typename T>
static void run_case(const char* name, i64 R, i64 L, i64 H, i64 P, i64 N, i64 Q, int reps, double peak_gbs, bool ssd = false) {
  const i64 HP = H * P;
  const bool per_lane = P == 1;
  // Mamba-2's layout: x, B, C are columns of the conv output [x | B | C]; Mamba-1: x_proj's [.. | B | C]
  const ScanDims s{R, L, H, P, N, Q, per_lane ? HP : HP + 2 * N, H, per_lane ? 2 * N : HP + 2 * N, HP};
  const i64 ldx = s.ld_x, ldbc = s.ld_bc;
  const std::size_t tb = sizeof(T);
  auto* xbc = static_cast<T*>(device::alloc((std::size_t)(R * L * ldx) * tb));
  auto* bc = per_lane ? static_cast<T*>(device::alloc((std::size_t)(R * L * ldbc) * tb)) : xbc + HP;
  auto* dt = static_cast<T*>(device::alloc((std::size_t)(R * L * H) * tb));
  auto* y = static_cast<T*>(device::alloc((std::size_t)(R * L * HP) * tb));
  auto* dy = static_cast<T*>(device::alloc((std::size_t)(R * L * HP) * tb));
  auto* dxbc = static_cast<T*>(device::alloc((std::size_t)(R * L * ldx) * tb));
  auto* dbc = per_lane ? static_cast<T*>(device::alloc((std::size_t)(R * L * ldbc) * tb)) : dxbc + HP;
  auto* ddt = static_cast<T*>(device::alloc((std::size_t)(R * L * H) * tb));
  auto* A = static_cast<float*>(device::alloc((std::size_t)s.a_size() * 4));
  auto* dA = static_cast<float*>(device::alloc((std::size_t)s.a_size() * 4));
  auto* D = static_cast<float*>(device::alloc((std::size_t)H * 4));
  auto* dD = static_cast<float*>(device::alloc((std::size_t)H * 4));
  auto* states = static_cast<float*>(device::alloc((std::size_t)s.states_size() * 4));
  auto* scratch = static_cast<float*>(device::alloc((std::size_t)scan_scratch_floats(s, ssd, (i64)sizeof(T)) * 4));
  // Plausible values: small inputs, dt ~ 0.05, A = -1 (decay e^-0.05 per step), so nothing overflows.
  auto fill = [&](void* p, DType t, i64 n, float v) {
    std::vector<float> h((std::size_t)n);
    for (i64 i = 0; i < n; i++) h[(std::size_t)i] = v * (float)((i * 2654435761u) % 1000) / 1000.f;
    device::upload(p, t, h.data(), n, nullptr);
  };
  const DType dtT = dtype_of<T>();
  fill(xbc, dtT, R * L * ldx, 0.5f);
  if (per_lane) fill(bc, dtT, R * L * ldbc, 0.5f);
  fill(dt, dtT, R * L * H, 0.1f);
  fill(dy, dtT, R * L * HP, 0.5f);
  {
    std::vector<float> a((std::size_t)s.a_size(), -1.f), d((std::size_t)H, 1.f);
    device::copy_to_device(A, a.data(), a.size() * 4, nullptr);
    device::copy_to_device(D, d.data(), d.size() * 4, nullptr);
  }
  const T* Bp = per_lane ? bc : xbc + HP;
  const T* Cp = per_lane ? bc + N : xbc + HP + N;
  T* dB = per_lane ? dbc : dxbc + HP;
  T* dC = per_lane ? dbc + N : dxbc + HP + N;
  auto time = [&](auto&& f) {
    f();
    device::stream_sync(nullptr);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
      const auto t0 = clk::now();
      f();
      device::stream_sync(nullptr);
      best = std::min(best, std::chrono::duration<double>(clk::now() - t0).count());
    }
    return best;
  };
  const double fwd = time([&] { scan_forward_with(ssd, y, states, xbc, dt, A, Bp, Cp, D, s, scratch, nullptr); });
  const double bwd = time([&] {
    device::memset_zero(dxbc, (std::size_t)(R * L * ldx) * tb, nullptr);
    scan_backward_with(ssd, dxbc, ddt, dA, dB, dC, dD, dy, states, xbc, dt, A, Bp, Cp, D, s, scratch, nullptr);
  });
  const double io = (double)(R * L) * (double)(HP + H + 2 * N + HP) * (double)tb;  // x, dt, B, C in; y out
  const double st = (double)s.states_size() * 4.0;
  const double fwd_bytes = io + st;
  const double bwd_bytes = (double)(R * L) * (double)(HP + H + 2 * N + HP) * (double)tb * 2.0 + st;
  const char* tn = sizeof(T) == 4 ? "f32" : "bf16";
  for (int pass = 0; pass < 2; pass++) {
    const double sec = pass ? bwd : fwd, bytes = pass ? bwd_bytes : fwd_bytes, gbs = bytes / sec / 1e9;
    std::printf("{\"kernel\":\"%s\",\"pass\":\"%s\",\"dtype\":\"%s\",\"rows\":%lld,\"length\":%lld,\"seconds\":%.6g,\"min_bytes\":%.6g,\"gbs\":%.1f,\"peak_gbs\":%.1f,\"fraction_of_peak\":%.3f}\n",
                name, pass ? "backward" : "forward", tn, (long long)R, (long long)L, sec, bytes, gbs, peak_gbs, peak_gbs > 0 ? gbs / peak_gbs : 0.0);
  }
  for (void* p : {(void*)xbc, (void*)dt, (void*)y, (void*)dy, (void*)dxbc, (void*)ddt, (void*)A, (void*)dA, (void*)D, (void*)dD, (void*)states, (void*)scratch})
    device::free(p);
  if (per_lane) device::free(bc), device::free(dbc);
}

int main() {
  if (device::device_count() == 0) {
    std::printf("{\"error\":\"no CUDA GPU visible: gm_gpu_scan_bench needs one\"}\n");
    return 2;
  }
  try {
    const device::DeviceProps p = device::device_props(0);
    std::printf("{\"device\":\"%s\",\"cc\":\"%d.%d\",\"peak_bandwidth_gbs\":%.1f}\n", p.name.c_str(), p.cc_major, p.cc_minor, p.mem_bandwidth_gbs);
    // the model's shape when bench:gpu passes it, else the reference layer's
    const i64 B = env_int("GM_BENCH_BATCH", 24), L = env_int("GM_BENCH_LENGTH", 2048), Q = env_int("GM_BENCH_CHUNK", 64);
    const i64 E = env_int("GM_BENCH_D_INNER", 1024), P = env_int("GM_BENCH_HEADDIM", 64), N = env_int("GM_BENCH_D_STATE", 64);
    const int reps = (int)env_int("GM_BENCH_REPS", 5);
    run_case<bf16>("scan_mamba2", 2 * B, L, E / P, P, N, Q, reps, p.mem_bandwidth_gbs);
    run_case<float>("scan_mamba2", 2 * B, L, E / P, P, N, Q, reps, p.mem_bandwidth_gbs);
    // the chunked SSD form of the same Mamba-2 scan (ssd.cu), side by side: min_bytes stay the
    // scan's own, so the GB/s compare the two at the same work
    run_case<bf16>("ssd_mamba2", 2 * B, L, E / P, P, N, Q, reps, p.mem_bandwidth_gbs, true);
    run_case<float>("ssd_mamba2", 2 * B, L, E / P, P, N, Q, reps, p.mem_bandwidth_gbs, true);
    run_case<bf16>("scan_mamba1", 2 * B, L, E, 1, 16, Q, reps, p.mem_bandwidth_gbs);
  } catch (const std::exception& e) {
    std::printf("{\"error\":\"%s\"}\n", e.what());
    return 1;
  }
  return 0;
}

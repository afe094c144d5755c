// device.h on the CUDA runtime: a caching allocator over cudaMalloc, async copies and memsets,
// streams and events, and gemm() through cuBLASLt, loaded at run time (dynlib.h). Host C++ only: it
// compiles with g++ against the toolkit's headers, or with nvcc.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "device.h"
#include "dynlib.h"

namespace gm {
namespace cuda {
namespace device {

namespace {

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear it, or the next launcher's cudaGetLastError() would report it again
  throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}
int current_device() {
  int d = 0;
  check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}
double mib(std::size_t b) { return (double)b / (1024.0 * 1024.0); }

// Dense bf16 tensor-core FLOPs per clock per SM (fp32 accumulation), from NVIDIA's data sheets:
//   8.0 (A100): 2048. 108 SMs x 1.41 GHz x 2048 = 312 TFLOP/s, the A100 figure.
//   8.6, 8.7, 8.9 (GA10x, Orin, AD10x): 1024, e.g. L40S 142 SMs x 2.52 GHz x 1024 = 366 (sheet: 362).
//     GeForce parts run fp32 accumulation at half that rate (RTX 4090: 165 TFLOP/s, not 330); the
//     device does not say which it is, so for them this is twice the truth.
//   9.0 (H100, H200): 4096. H100 SXM 132 SMs x 1.83 GHz x 4096 = 989 TFLOP/s, the data sheet's
//     figure; the driver reports the 1.98 GHz boost clock, which gives 1070.
// 0 for anything else: unknown.
int bf16_flops_per_clock_per_sm(int major, int minor) {
  if (major == 8 && minor == 0) return 2048;
  if (major == 8 && (minor == 6 || minor == 7 || minor == 9)) return 1024;
  if (major == 9 && minor == 0) return 4096;
  return 0;
}

// ---- the caching allocator
// Blocks freed by free() stay cached for the next alloc() of the same rounded size on the same
// device, without synchronising. That is safe because all work on these blocks is enqueued in order
// on the model's stream: kernels still reading a freed block run before those of its next owner. The
// communication stream only touches the gradient buffer, which is never freed during a step.
constexpr std::size_t kLargeThreshold = std::size_t(1) << 20;  // 1 MiB
constexpr std::size_t kSmallGrain = 512;
constexpr std::size_t kLargeGrain = std::size_t(2) << 20;  // 2 MiB

std::size_t round_size(std::size_t bytes) {
  if (bytes == 0) bytes = 1;  // a real pointer, as the emulated backend returns
  const std::size_t g = bytes < kLargeThreshold ? kSmallGrain : kLargeGrain;
  return (bytes + g - 1) / g * g;
}

struct DevicePool {
  std::unordered_map<std::size_t, std::vector<void*>> cached;  // free blocks by rounded size
  MemoryStats stats;
};
struct Block {
  int device;
  std::size_t size;  // rounded
};
struct Allocator {
  std::mutex mu;
  std::unordered_map<int, DevicePool> pools;
  std::unordered_map<void*, Block> live;
};
// Never destroyed: models held in statics may free their blocks during static destruction.
Allocator& allocator() {
  static Allocator* a = new Allocator;
  return *a;
}

// Returns the pool's cached blocks to the driver (the caller holds the lock; cudaFree synchronises).
void release_pool(DevicePool& pool) {
  for (auto& kv : pool.cached) {
    while (!kv.second.empty()) {
      check(cudaFree(kv.second.back()), "cudaFree");
      pool.stats.cached -= kv.first;
      kv.second.pop_back();
    }
  }
  pool.cached.clear();
}

// ---- bf16 on the host (as common.cuh's float_to_bf16 / __float2bfloat16_rn)
std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (std::uint16_t)((u >> 16) | 0x40u);  // NaN stays a quiet NaN
  return (std::uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);                   // round to nearest even
}
float bf16_bits_to_float(std::uint16_t h) {
  const std::uint32_t u = (std::uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

// ---------------------------------------------------------------- devices
int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void set_device(int ordinal) { check(cudaSetDevice(ordinal), "cudaSetDevice"); }

DeviceProps device_props(int ordinal) {
  cudaDeviceProp p;
  check(cudaGetDeviceProperties(&p, ordinal), "cudaGetDeviceProperties");
  // CUDA 13 removed cudaDeviceProp's clock fields: ask for the attributes (kHz, bits).
  int clock_khz = 0, mem_clock_khz = 0, bus_bits = 0;
  check(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, ordinal), "cudaDeviceGetAttribute(ClockRate)");
  check(cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, ordinal),
        "cudaDeviceGetAttribute(MemoryClockRate)");
  check(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, ordinal),
        "cudaDeviceGetAttribute(GlobalMemoryBusWidth)");
  DeviceProps d;
  d.name = p.name;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.sm_count = p.multiProcessorCount;
  d.total_bytes = p.totalGlobalMem;
  // Two transfers per memory clock (DDR): H100 SXM 2 x 2.619 GHz x 5120 / 8 B = 3352 GB/s.
  d.mem_bandwidth_gbs = 2.0 * (double)mem_clock_khz * 1e3 * ((double)bus_bits / 8.0) / 1e9;
  d.bf16_peak_tflops =
      (double)d.sm_count * (double)clock_khz * 1e3 * bf16_flops_per_clock_per_sm(d.cc_major, d.cc_minor) / 1e12;
  return d;
}

// ---------------------------------------------------------------- streams and events
cudaStream_t stream_create() {
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  return s;
}
void stream_destroy(cudaStream_t s) {
  if (s) check(cudaStreamDestroy(s), "cudaStreamDestroy");
}
void stream_sync(cudaStream_t s) { check(cudaStreamSynchronize(s), "cudaStreamSynchronize"); }
cudaEvent_t event_create() {
  cudaEvent_t e = nullptr;
  check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  return e;
}
void event_destroy(cudaEvent_t e) {
  if (e) check(cudaEventDestroy(e), "cudaEventDestroy");
}
void event_record(cudaEvent_t e, cudaStream_t s) { check(cudaEventRecord(e, s), "cudaEventRecord"); }
void stream_wait_event(cudaStream_t s, cudaEvent_t e) { check(cudaStreamWaitEvent(s, e, 0), "cudaStreamWaitEvent"); }

// ---------------------------------------------------------------- memory
// Statistics and the cache are those of the calling thread's current device.
MemoryStats memory_stats() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.pools[current_device()].stats;
}
void reset_peak() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  MemoryStats& s = a.pools[current_device()].stats;
  s.peak = s.in_use;
}
void release_cached() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  release_pool(a.pools[current_device()]);
}

void* alloc(std::size_t bytes) {
  const std::size_t size = round_size(bytes);
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  const int dev = current_device();
  DevicePool& pool = a.pools[dev];
  void* p = nullptr;
  auto hit = pool.cached.find(size);
  if (hit != pool.cached.end() && !hit->second.empty()) {
    p = hit->second.back();
    hit->second.pop_back();
    pool.stats.cached -= size;
  } else {
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {  // the cache may hold what is missing: give it back, once
      cudaGetLastError();
      release_pool(pool);
      e = cudaMalloc(&p, size);
    }
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      std::size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) cudaGetLastError();
      char msg[256];
      std::snprintf(msg, sizeof msg,
                    "CUDA out of memory: could not allocate %.1f MiB (in use %.1f MiB, cached %.1f MiB, device free "
                    "%.1f of %.1f MiB)",
                    mib(size), mib(pool.stats.in_use), mib(pool.stats.cached), mib(free_b), mib(total_b));
      throw std::runtime_error(msg);
    }
    check(e, "cudaMalloc");
  }
  a.live[p] = Block{dev, size};
  pool.stats.in_use += size;
  pool.stats.peak = std::max(pool.stats.peak, pool.stats.in_use);
  return p;
}

void free(void* p) {
  if (!p) return;
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.live.find(p);
  if (it == a.live.end()) throw std::logic_error("gm cuda: free() of a pointer alloc() did not return (or freed twice)");
  const Block b = it->second;
  a.live.erase(it);
  DevicePool& pool = a.pools[b.device];
  pool.cached[b.size].push_back(p);
  pool.stats.in_use -= b.size;
  pool.stats.cached += b.size;
}

void memset_zero(void* p, std::size_t bytes, cudaStream_t s) {
  if (bytes) check(cudaMemsetAsync(p, 0, bytes, s), "cudaMemsetAsync");
}
// From pageable memory (every caller's: vectors and arrays, never cudaMallocHost), cudaMemcpyAsync
// stages the source through the driver's pinned buffers and returns once it has been read, so the
// caller may reuse or free host_src at once; only the copy to the device is still in flight.
void copy_to_device(void* dst, const void* host_src, std::size_t bytes, cudaStream_t s) {
  if (bytes) check(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync(host to device)");
}
void copy_to_host(void* host_dst, const void* src, std::size_t bytes, cudaStream_t s) {
  if (!bytes) return;
  check(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync(device to host)");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}
// Unlike the emulation's memmove, the ranges must not overlap (no caller's do).
void copy_device(void* dst, const void* src, std::size_t bytes, cudaStream_t s) {
  if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync(device to device)");
}

void upload(void* dst, DType t, const float* host_src, std::int64_t n, cudaStream_t s) {
  if (n < 0) throw std::invalid_argument("gm cuda: upload: negative count");
  if (n == 0) return;
  if (t == DType::F32) return copy_to_device(dst, host_src, (std::size_t)n * sizeof(float), s);
  std::vector<std::uint16_t> staged((std::size_t)n);
  for (std::int64_t i = 0; i < n; i++) staged[(std::size_t)i] = float_to_bf16_bits(host_src[i]);
  check(cudaMemcpyAsync(dst, staged.data(), staged.size() * 2, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync(upload)");
  // The staging buffer dies here: wait for the copy rather than lean on the pageable-memory staging
  // (uploads are rare: parameters, the ones column, a hidden-state gradient).
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}
void download(float* host_dst, const void* src, DType t, std::int64_t n, cudaStream_t s) {
  if (n < 0) throw std::invalid_argument("gm cuda: download: negative count");
  if (n == 0) return;
  if (t == DType::F32) return copy_to_host(host_dst, src, (std::size_t)n * sizeof(float), s);
  std::vector<std::uint16_t> staged((std::size_t)n);
  copy_to_host(staged.data(), src, staged.size() * 2, s);
  for (std::int64_t i = 0; i < n; i++) host_dst[i] = bf16_bits_to_float(staged[(std::size_t)i]);
}

// ---------------------------------------------------------------- gemm (cuBLASLt)
namespace {

constexpr std::size_t kWorkspaceBytes = std::size_t(32) << 20;
constexpr std::int64_t kMaxBatch = 65535;

// The largest power of two (up to 256, cuBLASLt's default assumption) dividing the address: the
// heuristic must not pick kernels that need more alignment than our sub-buffer views have.
std::uint32_t alignment(const void* p) {
  const std::uintptr_t a = (std::uintptr_t)p;
  std::uint32_t al = 256;
  while (al > 1 && (a & (al - 1))) al /= 2;
  return al;
}

struct GemmKey {
  int device;
  bool ta, tb, beta0;
  std::int64_t M, N, K, lda, ldb, ldc;
  DType a, b, c;
  std::uint32_t align_a, align_b, align_c;
  std::int64_t batch, sa, sb, sc;  // strided batch: count (1: a single product) and strides in elements
  bool operator==(const GemmKey& o) const {
    return device == o.device && ta == o.ta && tb == o.tb && beta0 == o.beta0 && M == o.M && N == o.N && K == o.K &&
           lda == o.lda && ldb == o.ldb && ldc == o.ldc && a == o.a && b == o.b && c == o.c && align_a == o.align_a &&
           batch == o.batch && sa == o.sa && sb == o.sb && sc == o.sc &&
           align_b == o.align_b && align_c == o.align_c;
  }
};
struct GemmKeyHash {
  std::size_t operator()(const GemmKey& k) const {
    std::size_t h = std::hash<int>()(k.device);
    auto mix = [&h](std::uint64_t v) { h ^= std::hash<std::uint64_t>()(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
    mix((std::uint64_t)k.ta | (std::uint64_t)k.tb << 1 | (std::uint64_t)k.beta0 << 2 | (std::uint64_t)k.a << 3 |
        (std::uint64_t)k.b << 4 | (std::uint64_t)k.c << 5);
    for (std::int64_t v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc, k.batch, k.sa, k.sb, k.sc}) mix((std::uint64_t)v);
    mix((std::uint64_t)k.align_a | (std::uint64_t)k.align_b << 16 | (std::uint64_t)k.align_c << 32);
    return h;
  }
};
// A shape's descriptors and algorithm, built once and kept for the life of the process (destroying
// them at exit could run after the driver has shut down).
struct GemmPlan {
  lt::MatmulDesc desc = nullptr;
  lt::MatrixLayout a = nullptr, b = nullptr, c = nullptr;  // cuBLASLt's A, B and C/D (see gemm())
  lt::MatmulAlgo algo;
};
// One handle and one workspace per device. The workspace is shared by every gemm on the device,
// which is safe because they all run on the model's stream (the communication stream runs none).
struct LtDevice {
  lt::Handle handle = nullptr;
  void* workspace = nullptr;
};
struct GemmState {
  std::mutex mu;
  std::unordered_map<int, LtDevice> devices;
  std::unordered_map<GemmKey, GemmPlan, GemmKeyHash> plans;
};
GemmState& gemm_state() {
  static GemmState* g = new GemmState;  // never destroyed, as the allocator
  return *g;
}

void lt_check(const CublasLtApi& api, lt::Status st, const char* what) {
  if (st == lt::kSuccess) return;
  const char* text = api.cublasLtGetStatusString(st);
  throw std::runtime_error(std::string("cuBLASLt error in ") + what + ": " + (text ? text : "unknown status") + " (" +
                           std::to_string(st) + ")");
}
const char* type_name(DType t) { return t == DType::F32 ? "f32" : "bf16"; }
cudaDataType_t cuda_type(DType t) { return t == DType::F32 ? CUDA_R_32F : CUDA_R_16BF; }
std::string shape_text(const GemmKey& k) {
  return "M=" + std::to_string(k.M) + " N=" + std::to_string(k.N) + " K=" + std::to_string(k.K) +
         " transA=" + std::to_string(k.ta) + " transB=" + std::to_string(k.tb) + " lda=" + std::to_string(k.lda) +
         " ldb=" + std::to_string(k.ldb) + " ldc=" + std::to_string(k.ldc) + " A=" + type_name(k.a) +
         " B=" + type_name(k.b) + " C=" + type_name(k.c) +
         (k.batch > 1 ? " batch=" + std::to_string(k.batch) + " strides=" + std::to_string(k.sa) + "," +
                            std::to_string(k.sb) + "," + std::to_string(k.sc)
                      : std::string());
}

// Row-major C[M, N] = op(A) op(B) is, read column-major, C^T[N, M] = op(B)^T op(A)^T: cuBLASLt's A
// is our B and its B our A, with M and N swapped and each operand's transpose kept. Our row-major B
// stored [K, N] (ldb) is column-major [N, K]: op N; stored [N, K] it is column-major [K, N]: op T.
// Likewise A: [M, K] is column-major [K, M] (op N), [K, M] is [M, K] (op T). C is column-major [N, M].
GemmPlan make_plan(const CublasLtApi& api, lt::Handle handle, const GemmKey& k) {
  GemmPlan p;
  lt::Preference pref = nullptr;
  auto cleanup = [&] {
    if (pref) api.cublasLtMatmulPreferenceDestroy(pref);
    for (lt::MatrixLayout l : {p.a, p.b, p.c})
      if (l) api.cublasLtMatrixLayoutDestroy(l);
    if (p.desc) api.cublasLtMatmulDescDestroy(p.desc);
  };
  try {
    // Strict fp32 accumulation and fp32 alpha/beta for every type combination (never TF32: fp32
    // mode must match the CPU engine within 1e-4).
    lt_check(api, api.cublasLtMatmulDescCreate(&p.desc, lt::kCompute32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const std::int32_t op_a = k.tb ? lt::kOpT : lt::kOpN, op_b = k.ta ? lt::kOpT : lt::kOpN;
    const std::int32_t host_pointers = lt::kPointerModeHost;
    lt_check(api, api.cublasLtMatmulDescSetAttribute(p.desc, lt::kDescTransA, &op_a, sizeof op_a), "TRANSA");
    lt_check(api, api.cublasLtMatmulDescSetAttribute(p.desc, lt::kDescTransB, &op_b, sizeof op_b), "TRANSB");
    lt_check(api, api.cublasLtMatmulDescSetAttribute(p.desc, lt::kDescPointerMode, &host_pointers, sizeof host_pointers),
             "POINTER_MODE");
    lt_check(api,
             api.cublasLtMatrixLayoutCreate(&p.a, cuda_type(k.b), (std::uint64_t)(k.tb ? k.K : k.N),
                                            (std::uint64_t)(k.tb ? k.N : k.K), k.ldb),
             "cublasLtMatrixLayoutCreate(B)");
    lt_check(api,
             api.cublasLtMatrixLayoutCreate(&p.b, cuda_type(k.a), (std::uint64_t)(k.ta ? k.M : k.K),
                                            (std::uint64_t)(k.ta ? k.K : k.M), k.lda),
             "cublasLtMatrixLayoutCreate(A)");
    lt_check(api, api.cublasLtMatrixLayoutCreate(&p.c, cuda_type(k.c), (std::uint64_t)k.N, (std::uint64_t)k.M, k.ldc),
             "cublasLtMatrixLayoutCreate(C)");
    if (k.batch > 1) {  // cuBLASLt's A, B, C are our B, A, C (see above)
      const std::int32_t count = (std::int32_t)k.batch;
      const std::int64_t strides[3] = {k.sb, k.sa, k.sc};
      const lt::MatrixLayout layouts[3] = {p.a, p.b, p.c};
      for (int i = 0; i < 3; i++) {
        lt_check(api, api.cublasLtMatrixLayoutSetAttribute(layouts[i], lt::kLayoutBatchCount, &count, sizeof count),
                 "BATCH_COUNT");
        lt_check(api,
                 api.cublasLtMatrixLayoutSetAttribute(layouts[i], lt::kLayoutStridedBatchOffset, &strides[i],
                                                      sizeof strides[i]),
                 "STRIDED_BATCH_OFFSET");
      }
    }
    lt_check(api, api.cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    const std::uint64_t ws = kWorkspaceBytes;
    lt_check(api, api.cublasLtMatmulPreferenceSetAttribute(pref, lt::kPrefMaxWorkspaceBytes, &ws, sizeof ws),
             "MAX_WORKSPACE_BYTES");
    const std::uint32_t al[4] = {k.align_b, k.align_a, k.align_c, k.align_c};  // cuBLASLt's A, B, C, D
    const int al_attr[4] = {lt::kPrefMinAlignABytes, lt::kPrefMinAlignBBytes, lt::kPrefMinAlignCBytes,
                            lt::kPrefMinAlignDBytes};
    for (int i = 0; i < 4; i++)
      lt_check(api, api.cublasLtMatmulPreferenceSetAttribute(pref, al_attr[i], &al[i], sizeof al[i]),
               "MIN_ALIGNMENT_BYTES");
    lt::HeuristicResult r;
    std::memset(&r, 0, sizeof r);
    int found = 0;
    const lt::Status st = api.cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &r, &found);
    if (st != lt::kNotSupported) lt_check(api, st, "cublasLtMatmulAlgoGetHeuristic");
    if (st == lt::kNotSupported || found < 1 || r.state != lt::kSuccess)
      throw std::runtime_error("cuBLASLt has no algorithm for gemm " + shape_text(k));
    p.algo = r.algo;
    api.cublasLtMatmulPreferenceDestroy(pref);
    return p;
  } catch (...) {
    cleanup();
    throw;
  }
}

}  // namespace

// K == 0 (with M, N > 0) makes C = beta C: done here for beta 0 and 1 (cuBLASLt rejects k = 0);
// gpu_model.cpp never asks for it (linear_backward returns when M == 0, the bias product has K = 1).
void gemm_batched(bool transA, bool transB, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const void* A,
                  DType ta, std::int64_t lda, std::int64_t strideA, const void* B, DType tb, std::int64_t ldb,
                  std::int64_t strideB, float beta, void* C, DType tc, std::int64_t ldc, std::int64_t strideC,
                  std::int64_t batch, cudaStream_t s) {
  if (M < 0 || N < 0 || K < 0 || batch < 0) throw std::invalid_argument("gm cuda: gemm: negative dimension or batch");
  if (batch > 1 && (strideA < 0 || strideB < 0 || strideC < (M - 1) * ldc + N))
    throw std::invalid_argument("gm cuda: gemm_batched: negative strides, or C's products overlap");
  const bool f32 = ta == DType::F32 && tb == DType::F32 && tc == DType::F32;
  const bool bf16_in = ta == DType::BF16 && tb == DType::BF16;
  if (!f32 && !bf16_in)
    throw std::invalid_argument(std::string("gm cuda: gemm: unsupported types A=") + type_name(ta) + " B=" +
                                type_name(tb) + " C=" + type_name(tc) + " (f32 x f32 -> f32, or bf16 x bf16 -> bf16 or f32)");
  if (lda < std::max<std::int64_t>(1, transA ? M : K) || ldb < std::max<std::int64_t>(1, transB ? K : N) ||
      ldc < std::max<std::int64_t>(1, N))
    throw std::invalid_argument("gm cuda: gemm: leading dimension too small (M=" + std::to_string(M) +
                                " N=" + std::to_string(N) + " K=" + std::to_string(K) + " lda=" + std::to_string(lda) +
                                " ldb=" + std::to_string(ldb) + " ldc=" + std::to_string(ldc) + ")");
  if (M == 0 || N == 0 || batch == 0) return;
  if (K == 0) {
    if (beta == 1.f) return;
    if (beta != 0.f) throw std::invalid_argument("gm cuda: gemm: K = 0 with beta other than 0 or 1");
    const std::size_t es = dtype_size(tc);
    for (std::int64_t i = 0; i < batch; i++)
      check(cudaMemset2DAsync((char*)C + (std::size_t)(i * strideC) * es, (std::size_t)ldc * es, 0, (std::size_t)N * es,
                              (std::size_t)M, s),
            "cudaMemset2DAsync");
    return;
  }
  // At most kMaxBatch products per call (a batch count cuBLASLt's kernels take in every release);
  // a larger batch is split into calls of that size and one for the rest.
  if (batch > kMaxBatch) {
    const std::size_t ea = dtype_size(ta), eb = dtype_size(tb), ec = dtype_size(tc);
    for (std::int64_t i0 = 0; i0 < batch; i0 += kMaxBatch)
      gemm_batched(transA, transB, M, N, K, alpha, (const char*)A + (std::size_t)(i0 * strideA) * ea, ta, lda, strideA,
                   (const char*)B + (std::size_t)(i0 * strideB) * eb, tb, ldb, strideB, beta,
                   (char*)C + (std::size_t)(i0 * strideC) * ec, tc, ldc, strideC, std::min(kMaxBatch, batch - i0), s);
    return;
  }
  // The alignment every product's pointers have: the base's and the stride's (in bytes).
  auto aligned = [batch](const void* p, std::int64_t stride, DType t) {
    const std::uintptr_t bits = (std::uintptr_t)p | (batch > 1 ? (std::uintptr_t)stride * dtype_size(t) : 0);
    return alignment((const void*)bits);
  };
  const CublasLtApi& api = cublaslt();
  const bool one = batch == 1;
  const GemmKey key{current_device(), transA, transB, beta == 0.f, M, N, K, lda, ldb, ldc, ta, tb, tc,
                    aligned(A, strideA, ta), aligned(B, strideB, tb), aligned(C, strideC, tc),
                    batch, one ? 0 : strideA, one ? 0 : strideB, one ? 0 : strideC};
  GemmState& g = gemm_state();
  lt::Handle handle = nullptr;
  void* workspace = nullptr;
  const GemmPlan* plan = nullptr;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    LtDevice& d = g.devices[key.device];
    if (!d.handle) {
      void* ws = alloc(kWorkspaceBytes);
      lt::Handle h = nullptr;
      const lt::Status st = api.cublasLtCreate(&h);
      if (st != lt::kSuccess) {
        free(ws);
        lt_check(api, st, "cublasLtCreate");
      }
      d.handle = h;
      d.workspace = ws;
    }
    handle = d.handle;
    workspace = d.workspace;
    auto it = g.plans.find(key);
    if (it == g.plans.end()) it = g.plans.emplace(key, make_plan(api, handle, key)).first;
    plan = &it->second;  // map nodes are stable: usable after the lock is released
  }
  const lt::Status st = api.cublasLtMatmul(handle, plan->desc, &alpha, B, plan->a, A, plan->b, &beta, C, plan->c, C,
                                          plan->c, &plan->algo, workspace, kWorkspaceBytes, s);
  if (st != lt::kSuccess) lt_check(api, st, ("cublasLtMatmul (" + shape_text(key) + ")").c_str());
}

void gemm(bool transA, bool transB, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const void* A,
          DType ta, std::int64_t lda, const void* B, DType tb, std::int64_t ldb, float beta, void* C, DType tc,
          std::int64_t ldc, cudaStream_t s) {
  gemm_batched(transA, transB, M, N, K, alpha, A, ta, lda, 0, B, tb, ldb, 0, beta, C, tc, ldc, 0, 1, s);
}

}  // namespace device
}  // namespace cuda
}  // namespace gm

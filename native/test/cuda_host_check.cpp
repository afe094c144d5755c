// The host side of the CUDA backend without (or with) a GPU: native/cuda/{dynlib,device_cuda,
// nccl_comm,probe}.cpp linked with the static CUDA runtime (packages/engine/test/cuda-host.test.ts).
// Prints {"probe": <cuda_runtime_report_json()>}, one JSON line per check, then {"checks":N,"failures":F}.
//   --expect-no-gpu   also require that no device is seen and that CUDA calls fail cleanly
//   GM_CUBLASLT_LIB   (a real libcublasLt) check that it loads, that every symbol resolves and, on
//                     the library itself, our status codes and attribute sizes
//   GM_NCCL_LIB       the same for NCCL
// With a GPU (and without --expect-no-gpu) it also checks the allocator, upload/download and
// gemm() against a host loop.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cuda/device.h"
#include "../cuda/dynlib.h"
#include "../cuda/nccl_comm.h"
#include "../cuda/probe.h"

using namespace gm::cuda;

namespace {

int g_checks = 0, g_failures = 0;

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if ((unsigned char)c < 0x20) {
      char u[8];
      std::snprintf(u, sizeof u, "\\u%04x", (unsigned)(unsigned char)c);
      o += u;
    } else o += c;
  }
  return o + "\"";
}
void report(const std::string& name, bool ok, const std::string& detail = "") {
  g_checks++;
  if (!ok) g_failures++;
  std::printf("{\"check\":%s,\"ok\":%s%s}\n", json_str(name).c_str(), ok ? "true" : "false",
              detail.empty() ? "" : (",\"detail\":" + json_str(detail)).c_str());
  std::fflush(stdout);
}
// Runs f; a std::exception it throws is a failure with its message.
void check(const std::string& name, const std::function<std::string(bool&)>& f) {
  bool ok = true;
  std::string detail;
  try {
    detail = f(ok);
  } catch (const std::exception& e) {
    ok = false;
    detail = std::string("threw: ") + e.what();
  }
  report(name, ok, detail);
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
// The exception message of f, and whether it threw an E.
template <typename E>
bool throws(const std::function<void()>& f, std::string* what = nullptr) {
  try {
    f();
  } catch (const E& e) {
    if (what) *what = e.what();
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

// A library that did not load must say so on one line that names the override and where it looked.
std::string check_not_found(const LibProbe& p, const char* env, const char* soname, bool& ok) {
  ok = !contains(p.error, "\n") && contains(p.error, env) && contains(p.error, soname) &&
       contains(p.error, "/usr/local/cuda/lib64") && contains(p.error, "LD_LIBRARY_PATH");
  return p.error;
}

void host_checks(const std::string& probe_json) {
  check("probe_json_one_line", [&](bool& ok) {
    ok = !probe_json.empty() && probe_json.front() == '{' && probe_json.back() == '}' && !contains(probe_json, "\n") &&
         contains(probe_json, "\"cublaslt\":{") && contains(probe_json, "\"nccl\":{");
    return std::string();
  });
  check("static_runtime_version", [](bool& ok) {
    int v = 0;
    ok = cudaRuntimeGetVersion(&v) == cudaSuccess && v >= 11000;
    return std::to_string(v);
  });

  const LibProbe lt_probe = probe_cublaslt();
  check("cublaslt_probe", [&](bool& ok) {
    if (lt_probe.found) {
      ok = !lt_probe.path.empty() && std::count(lt_probe.version.begin(), lt_probe.version.end(), '.') == 2;
      return lt_probe.path + " " + lt_probe.version;
    }
    return check_not_found(lt_probe, "GM_CUBLASLT_LIB", "libcublasLt.so.12", ok);
  });
  if (!lt_probe.found)
    check("cublaslt_throws_the_probe_error", [&](bool& ok) {
      std::string a, b;
      ok = throws<std::runtime_error>([] { cublaslt(); }, &a) && throws<std::runtime_error>([] { cublaslt(); }, &b) &&
           a == lt_probe.error && b == a;
      return a;
    });

  const LibProbe nc_probe = probe_nccl();
  check("nccl_probe", [&](bool& ok) {
    if (nc_probe.found) {
      ok = !nc_probe.path.empty() && std::count(nc_probe.version.begin(), nc_probe.version.end(), '.') == 2;
      return nc_probe.path + " " + nc_probe.version;
    }
    return check_not_found(nc_probe, "GM_NCCL_LIB", "libnccl.so.2", ok);
  });
  if (!nc_probe.found)
    check("nccl_comm_needs_nccl", [&](bool& ok) {
      std::string a, b;
      ok = throws<std::runtime_error>([] { NcclComm::create_unique_id(); }, &a) &&
           throws<std::runtime_error>([] { NcclComm c(std::vector<std::uint8_t>(nc::kUniqueIdBytes), 0, 1); }, &b) &&
           a == nc_probe.error && b == a && throws<std::runtime_error>([] { NcclComm::version_string(); });
      return a;
    });

  // Argument checks come before any CUDA or cuBLASLt call.
  check("gemm_argument_checks", [](bool& ok) {
    float x = 0;
    std::string what;
    ok = throws<std::invalid_argument>(
             [&] { device::gemm(false, false, 2, 2, 2, 1.f, &x, DType::F32, 2, &x, DType::BF16, 2, 0.f, &x, DType::F32, 2, nullptr); },
             &what) &&
         contains(what, "unsupported types") &&
         throws<std::invalid_argument>(
             [&] { device::gemm(false, true, 4, 3, 5, 1.f, &x, DType::F32, 4, &x, DType::F32, 5, 0.f, &x, DType::F32, 3, nullptr); }) &&
         throws<std::invalid_argument>(
             [&] { device::gemm(true, false, 4, 3, 5, 1.f, &x, DType::F32, 4, &x, DType::F32, 3, 0.f, &x, DType::F32, 2, nullptr); }) &&
         throws<std::invalid_argument>(
             [&] { device::gemm(false, false, -1, 3, 5, 1.f, &x, DType::F32, 5, &x, DType::F32, 3, 0.f, &x, DType::F32, 3, nullptr); });
    // Nothing to do: returns without touching CUDA or cuBLASLt.
    device::gemm(false, false, 0, 3, 5, 1.f, nullptr, DType::F32, 5, nullptr, DType::F32, 3, 0.f, nullptr, DType::F32, 3, nullptr);
    device::gemm(false, false, 3, 0, 5, 1.f, nullptr, DType::BF16, 5, nullptr, DType::BF16, 1, 0.f, nullptr, DType::BF16, 1, nullptr);
    device::gemm(false, false, 3, 2, 0, 1.f, nullptr, DType::F32, 1, nullptr, DType::F32, 2, 1.f, nullptr, DType::F32, 2, nullptr);
    return what;
  });
  check("free_unknown_pointer", [](bool& ok) {
    device::free(nullptr);
    int x = 0;
    std::string what;
    ok = throws<std::logic_error>([&] { device::free(&x); }, &what);
    return what;
  });
}

void no_gpu_checks(const std::string& probe_json) {
  check("device_count_zero", [](bool& ok) {
    const int n = device::device_count();
    ok = n == 0;
    return std::to_string(n);
  });
  check("probe_says_no_gpu", [&](bool& ok) {
    ok = contains(probe_json, "\"devices\":[]") && contains(probe_json, "\"error\":\"");
    return std::string();
  });
  check("cuda_calls_throw_cleanly", [](bool& ok) {
    std::string a, b, c;
    ok = throws<std::runtime_error>([] { device::stream_create(); }, &a) && contains(a, "CUDA error in cudaStreamCreateWithFlags: ") &&
         throws<std::runtime_error>([] { device::alloc(1000); }, &b) && contains(b, "CUDA error in ") &&
         throws<std::runtime_error>([] { device::device_props(0); }, &c) && contains(c, "CUDA error in ");
    return a + " | " + b + " | " + c;
  });
}

// GM_CUBLASLT_LIB: the library loads from that file, every symbol resolves, and the library itself
// agrees with our numbers (status names, attribute sizes: a wrong size is CUBLAS_STATUS_INVALID_VALUE).
void cublaslt_lib_checks(const std::string& file) {
  check("cublaslt_loads", [&](bool& ok) {
    const CublasLtApi& a = cublaslt();
    const void* fns[] = {(const void*)a.cublasLtCreate, (const void*)a.cublasLtDestroy, (const void*)a.cublasLtGetVersion,
                         (const void*)a.cublasLtGetStatusString, (const void*)a.cublasLtMatmulDescCreate,
                         (const void*)a.cublasLtMatmulDescDestroy, (const void*)a.cublasLtMatmulDescSetAttribute,
                         (const void*)a.cublasLtMatrixLayoutCreate, (const void*)a.cublasLtMatrixLayoutDestroy,
                         (const void*)a.cublasLtMatrixLayoutSetAttribute,
                         (const void*)a.cublasLtMatmulPreferenceCreate, (const void*)a.cublasLtMatmulPreferenceDestroy,
                         (const void*)a.cublasLtMatmulPreferenceSetAttribute, (const void*)a.cublasLtMatmulAlgoGetHeuristic,
                         (const void*)a.cublasLtMatmul};
    int resolved = 0;
    for (const void* f : fns) resolved += f != nullptr;
    const std::size_t major = a.version / 10000;
    ok = resolved == 15 && a.path == file && major >= 11 &&
         (!contains(file, ".so.1") || contains(file, ".so." + std::to_string(major)));
    return a.path + " " + cublaslt_version_string(a.version) + ", " + std::to_string(resolved) + "/15 symbols";
  });
  check("cublaslt_status_codes", [](bool& ok) {
    const CublasLtApi& a = cublaslt();
    const std::string s0 = a.cublasLtGetStatusString(lt::kSuccess), s15 = a.cublasLtGetStatusString(lt::kNotSupported);
    ok = contains(s0, "success") && contains(s15, "not supported");  // the codes mean what lt:: says
    return s0 + ", " + s15;
  });
  // Descriptors are host objects: these run without a GPU.
  check("cublaslt_descriptor_attributes", [](bool& ok) {
    const CublasLtApi& a = cublaslt();
    std::string detail;
    lt::MatmulDesc desc = nullptr;
    lt::MatrixLayout layout = nullptr;
    lt::Preference pref = nullptr;
    auto st = [&](const char* what, lt::Status s, lt::Status want) {
      if (s != want) {
        ok = false;
        detail += std::string(what) + " returned " + std::to_string(s) + "; ";
      }
    };
    st("MatmulDescCreate", a.cublasLtMatmulDescCreate(&desc, lt::kCompute32F, CUDA_R_32F), lt::kSuccess);
    if (desc) {
      const std::int32_t op = lt::kOpT, pm = lt::kPointerModeHost;
      const std::int64_t wide = lt::kOpT;
      st("TRANSA", a.cublasLtMatmulDescSetAttribute(desc, lt::kDescTransA, &op, sizeof op), lt::kSuccess);
      st("TRANSB", a.cublasLtMatmulDescSetAttribute(desc, lt::kDescTransB, &op, sizeof op), lt::kSuccess);
      st("POINTER_MODE", a.cublasLtMatmulDescSetAttribute(desc, lt::kDescPointerMode, &pm, sizeof pm), lt::kSuccess);
      st("TRANSA as int64", a.cublasLtMatmulDescSetAttribute(desc, lt::kDescTransA, &wide, sizeof wide), 7);
      st("MatmulDescDestroy", a.cublasLtMatmulDescDestroy(desc), lt::kSuccess);
    }
    st("MatrixLayoutCreate", a.cublasLtMatrixLayoutCreate(&layout, CUDA_R_16BF, 64, 32, 64), lt::kSuccess);
    if (layout) {  // the strided-batch attributes of the SSD scan's batched products
      const std::int32_t count = 3;
      const std::int64_t stride = 64 * 32, wide_count = 3;
      st("BATCH_COUNT", a.cublasLtMatrixLayoutSetAttribute(layout, lt::kLayoutBatchCount, &count, sizeof count), lt::kSuccess);
      st("STRIDED_BATCH_OFFSET",
         a.cublasLtMatrixLayoutSetAttribute(layout, lt::kLayoutStridedBatchOffset, &stride, sizeof stride), lt::kSuccess);
      st("BATCH_COUNT as int64",
         a.cublasLtMatrixLayoutSetAttribute(layout, lt::kLayoutBatchCount, &wide_count, sizeof wide_count), 7);
      st("MatrixLayoutDestroy", a.cublasLtMatrixLayoutDestroy(layout), lt::kSuccess);
    }
    st("PreferenceCreate", a.cublasLtMatmulPreferenceCreate(&pref), lt::kSuccess);
    if (pref) {
      const std::uint64_t ws = 32u << 20;
      const std::uint32_t al = 16;
      st("MAX_WORKSPACE_BYTES", a.cublasLtMatmulPreferenceSetAttribute(pref, lt::kPrefMaxWorkspaceBytes, &ws, sizeof ws),
         lt::kSuccess);
      for (int attr : {lt::kPrefMinAlignABytes, lt::kPrefMinAlignBBytes, lt::kPrefMinAlignCBytes, lt::kPrefMinAlignDBytes})
        st("MIN_ALIGNMENT_BYTES", a.cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof al), lt::kSuccess);
      st("PreferenceDestroy", a.cublasLtMatmulPreferenceDestroy(pref), lt::kSuccess);
    }
    return detail;
  });
}

void nccl_lib_checks(const std::string& file) {
  check("nccl_loads", [&](bool& ok) {
    const NcclApi& a = nccl();
    const void* fns[] = {(const void*)a.ncclGetVersion, (const void*)a.ncclGetUniqueId, (const void*)a.ncclCommInitRank,
                         (const void*)a.ncclCommDestroy, (const void*)a.ncclCommAbort, (const void*)a.ncclCommGetAsyncError,
                         (const void*)a.ncclAllReduce, (const void*)a.ncclGroupStart, (const void*)a.ncclGroupEnd,
                         (const void*)a.ncclGetErrorString};
    int resolved = 0;
    for (const void* f : fns) resolved += f != nullptr;
    ok = resolved == 10 && a.path == file && a.version > 0 && a.ncclGetErrorString(nc::kSuccess) != nullptr;
    return a.path + " " + NcclComm::version_string() + ", " + std::to_string(resolved) + "/10 symbols";
  });
}

// ---- with a GPU
float bf16_round(float v) {  // the host reference of device.h's rounding
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&v, &u, 4);
  return v;
}
double max_rel(const std::vector<float>& got, const std::vector<double>& want) {
  double scale = 1e-30, err = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (std::size_t i = 0; i < got.size(); i++) err = std::max(err, std::fabs((double)got[i] - want[i]) / scale);
  return err;
}

void gpu_checks() {
  device::set_device(0);
  cudaStream_t s = device::stream_create();
  check("device_props", [](bool& ok) {
    const device::DeviceProps p = device::device_props(0);
    ok = !p.name.empty() && p.cc_major >= 5 && p.sm_count > 0 && p.total_bytes > 0 && p.mem_bandwidth_gbs > 0;
    return p.name + " cc " + std::to_string(p.cc_major) + "." + std::to_string(p.cc_minor) + ", " +
           std::to_string(p.sm_count) + " SMs, " + std::to_string((int)p.mem_bandwidth_gbs) + " GB/s, " +
           std::to_string((int)p.bf16_peak_tflops) + " bf16 TFLOP/s";
  });
  check("allocator_reuses_and_counts", [](bool& ok) {
    device::release_cached();
    const device::MemoryStats s0 = device::memory_stats();
    void* a = device::alloc(1000);  // rounded to 1024
    void* b = device::alloc(3u << 20);  // rounded to 4 MiB
    const device::MemoryStats s1 = device::memory_stats();
    device::free(a);
    void* c = device::alloc(1020);  // the same 1024-byte block, from the cache
    const device::MemoryStats s2 = device::memory_stats();
    device::free(b);
    device::free(c);
    device::release_cached();
    const device::MemoryStats s3 = device::memory_stats();
    ok = c == a && s1.in_use - s0.in_use == 1024 + (4u << 20) && s2.cached == s0.cached && s3.cached == 0 &&
         s3.in_use == s0.in_use && s1.peak >= s1.in_use;
    return std::string();
  });
  check("out_of_memory_message", [](bool& ok) {
    std::string what;
    ok = throws<std::runtime_error>([] { device::alloc(std::size_t(1) << 50); }, &what) &&
         contains(what, "CUDA out of memory: could not allocate");
    return what;
  });
  check("upload_download_bf16", [&](bool& ok) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> in = {1.f, 1.00390625f, 1.01171875f, -3.14159f, 65504.f, 1e-30f, nan, -0.f};
    void* d = device::alloc(in.size() * 2);
    device::upload(d, DType::BF16, in.data(), (std::int64_t)in.size(), s);
    std::vector<float> out(in.size());
    device::download(out.data(), d, DType::BF16, (std::int64_t)in.size(), s);
    device::free(d);
    ok = std::isnan(out[6]) && std::signbit(out[7]);
    for (std::size_t i = 0; i < in.size(); i++)
      if (i != 6) ok = ok && out[i] == bf16_round(in[i]);
    return std::string();
  });

  // K = 0 needs no cuBLASLt: C = beta C, here a 2-D memset of the rows.
  check("gemm_k0_beta0_zeroes_c", [&](bool& ok) {
    std::vector<float> c(6, 5.f), back(6);
    float* d = (float*)device::alloc(24);
    device::upload(d, DType::F32, c.data(), 6, s);
    device::gemm(false, false, 2, 2, 0, 1.f, d, DType::F32, 1, d, DType::F32, 2, 0.f, d, DType::F32, 3, s);
    device::download(back.data(), d, DType::F32, 6, s);
    device::free(d);
    ok = back == std::vector<float>{0, 0, 5, 0, 0, 5};
    return std::string();
  });
  const LibProbe lt_probe = probe_cublaslt();
  if (!lt_probe.found) {
    report("gemm_skipped_without_cublaslt", true, lt_probe.error);
    device::stream_destroy(s);
    return;
  }
  // gemm against a double-precision host loop: every transpose, padded leading dimensions, a
  // sub-buffer view (4-byte aligned), beta = 1 accumulating, beta = 0 over NaN garbage.
  const std::int64_t M = 37, N = 29, K = 53;
  std::uint32_t seed = 12345;
  auto rnd = [&seed] {
    seed = seed * 1664525u + 1013904223u;
    return (float)((seed >> 8) & 0xffff) / 32768.f - 1.f;
  };
  for (DType in_t : {DType::F32, DType::BF16})
    for (DType out_t : {DType::F32, DType::BF16}) {
      if (in_t == DType::F32 && out_t == DType::BF16) continue;
      for (int tr = 0; tr < 4; tr++)
        for (float beta : {0.f, 1.f}) {
          const bool ta = tr & 1, tb = tr & 2;
          const std::int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
          const std::int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
          std::vector<float> A(na), B(nb), C(nc);
          for (float& v : A) v = rnd();
          for (float& v : B) v = rnd();
          for (float& v : C) v = beta == 0.f ? std::numeric_limits<float>::quiet_NaN() : rnd();
          auto q = [&](std::vector<float>& v, DType t) {
            if (t == DType::BF16)
              for (float& x : v) x = std::isnan(x) ? x : bf16_round(x);
          };
          q(A, in_t), q(B, in_t), q(C, out_t);
          const float alpha = 0.75f;
          std::vector<double> want((std::size_t)(M * N));
          for (std::int64_t m = 0; m < M; m++)
            for (std::int64_t n = 0; n < N; n++) {
              double acc = 0;
              for (std::int64_t k = 0; k < K; k++)
                acc += (double)A[ta ? k * lda + m : m * lda + k] * B[tb ? n * ldb + k : k * ldb + n];
              want[m * N + n] = alpha * acc + (beta == 0.f ? 0.0 : beta * (double)C[m * ldc + n]);
            }
          const std::size_t ei = dtype_size(in_t), eo = dtype_size(out_t);
          // One block, the operands at offsets that are multiples of 4 bytes but not of 16.
          char* base = (char*)device::alloc((std::size_t)(na * ei + nb * ei + nc * eo) + 64);
          void* dA = base + 4;
          void* dB = base + 4 + ((na * ei + 15) / 16) * 16 + 4;
          void* dC = (char*)dB + ((nb * ei + 15) / 16) * 16 + 4;
          device::upload(dA, in_t, A.data(), na, s);
          device::upload(dB, in_t, B.data(), nb, s);
          device::upload(dC, out_t, C.data(), nc, s);
          device::gemm(ta, tb, M, N, K, alpha, dA, in_t, lda, dB, in_t, ldb, beta, dC, out_t, ldc, s);
          std::vector<float> got_full(nc), got((std::size_t)(M * N));
          device::download(got_full.data(), dC, out_t, nc, s);
          device::free(base);
          bool padding_kept = true;
          for (std::int64_t m = 0; m < M; m++) {
            for (std::int64_t n = 0; n < N; n++) got[m * N + n] = got_full[m * ldc + n];
            for (std::int64_t n = N; n < ldc; n++)
              padding_kept = padding_kept && (std::isnan(C[m * ldc + n]) ? std::isnan(got_full[m * ldc + n])
                                                                         : got_full[m * ldc + n] == C[m * ldc + n]);
          }
          const double err = max_rel(got, want);
          const double tol = out_t == DType::BF16 ? 1e-2 : 1e-5;  // bf16 inputs are exact products in fp32
          char name[96];
          std::snprintf(name, sizeof name, "gemm_%s_%s_%s%s_beta%g", in_t == DType::F32 ? "f32" : "bf16",
                        out_t == DType::F32 ? "f32" : "bf16", ta ? "T" : "N", tb ? "T" : "N", beta);
          report(name, err <= tol && padding_kept, "max_rel_err " + std::to_string(err));
        }
    }
  device::stream_destroy(s);
}

}  // namespace

int main(int argc, char** argv) {
  bool expect_no_gpu = false;
  for (int i = 1; i < argc; i++) expect_no_gpu = expect_no_gpu || std::strcmp(argv[i], "--expect-no-gpu") == 0;
  const std::string probe = cuda_runtime_report_json();
  std::printf("{\"probe\":%s}\n", probe.c_str());
  host_checks(probe);
  if (expect_no_gpu) no_gpu_checks(probe);
  const char* lt_file = std::getenv("GM_CUBLASLT_LIB");
  if (lt_file && *lt_file) cublaslt_lib_checks(lt_file);
  const char* nccl_file = std::getenv("GM_NCCL_LIB");
  if (nccl_file && *nccl_file) nccl_lib_checks(nccl_file);
  if (!expect_no_gpu && device::device_count() > 0) {
    try {
      gpu_checks();
    } catch (const std::exception& e) {
      report("gpu_checks", false, std::string("threw: ") + e.what());
    }
  }
  std::printf("{\"checks\":%d,\"failures\":%d}\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

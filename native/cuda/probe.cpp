// cuda_runtime_report_json (probe.h): the driver, the runtime, the devices and the run-time loaded
// libraries, as JSON for `gm doctor`.
#include "probe.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <exception>

#include "device.h"
#include "dynlib.h"

namespace gm {
namespace cuda {

namespace {

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if ((unsigned char)c < 0x20) {
          char u[8];
          std::snprintf(u, sizeof u, "\\u%04x", (unsigned)(unsigned char)c);
          o += u;
        } else {
          o += c;  // UTF-8 passes through
        }
    }
  }
  return o + "\"";
}
std::string json_str_or_null(const std::string& s) { return s.empty() ? "null" : json_str(s); }
std::string fixed(double v, int decimals) {
  char b[48];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}
// 12080 -> "12.8"
std::string cuda_version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

std::string lib_json(const LibProbe& p) {
  return std::string("{\"found\":") + (p.found ? "true" : "false") + ",\"path\":" + json_str_or_null(p.path) +
         ",\"version\":" + json_str_or_null(p.version) + ",\"error\":" + json_str_or_null(p.error) + "}";
}

std::string report() {
  int driver = 0, runtime = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
  cudaGetLastError();
  std::string error, devices;
  if (driver <= 0) {
    error = "no CUDA driver (libcuda.so.1 not found): install the NVIDIA driver";
  } else {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      n = 0;
      if (e == cudaErrorInsufficientDriver)
        error = "the CUDA driver (" + cuda_version(driver) + ") is older than this build's CUDA runtime (" +
                cuda_version(runtime) + "): update the NVIDIA driver";
      else if (e == cudaErrorNoDevice)
        error = "no CUDA device";
      else
        error = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
    } else if (n == 0) {
      error = "no CUDA device";
    }
    for (int i = 0; i < n; i++) {
      try {
        const device::DeviceProps p = device::device_props(i);
        if (!devices.empty()) devices += ",";
        devices += "{\"ordinal\":" + std::to_string(i) + ",\"name\":" + json_str(p.name) + ",\"cc\":\"" +
                   std::to_string(p.cc_major) + "." + std::to_string(p.cc_minor) + "\",\"sms\":" +
                   std::to_string(p.sm_count) + ",\"memory_gib\":" +
                   fixed((double)p.total_bytes / (1024.0 * 1024.0 * 1024.0), 1) + ",\"bandwidth_gbs\":" +
                   fixed(p.mem_bandwidth_gbs, 0) + ",\"bf16_peak_tflops\":" + fixed(p.bf16_peak_tflops, 1) + "}";
      } catch (const std::exception& ex) {
        if (error.empty()) error = "device " + std::to_string(i) + ": " + ex.what();
      }
    }
  }
  return std::string("{\"driver\":") + (driver > 0 ? std::to_string(driver) : "null") +
         ",\"runtime\":" + std::to_string(runtime) + ",\"devices\":[" + devices + "],\"cublaslt\":" +
         lib_json(probe_cublaslt()) + ",\"nccl\":" + lib_json(probe_nccl()) + ",\"error\":" + json_str_or_null(error) +
         "}";
}

}  // namespace

std::string cuda_runtime_report_json() {
  try {
    return report();
  } catch (const std::exception& e) {  // out of memory building strings: say so, still as JSON
    return "{\"driver\":null,\"runtime\":null,\"devices\":[],\"cublaslt\":null,\"nccl\":null,\"error\":" +
           json_str(e.what()) + "}";
  } catch (...) {
    return "{\"driver\":null,\"runtime\":null,\"devices\":[],\"cublaslt\":null,\"nccl\":null,\"error\":\"unknown\"}";
  }
}

}  // namespace cuda
}  // namespace gm

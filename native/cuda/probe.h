// What `gm doctor` reports about the CUDA side of this machine, from the CUDA backend's own view:
// the driver and runtime versions, the devices, and whether cuBLASLt and NCCL load (dynlib.h).
#pragma once
#include <string>

namespace gm {
namespace cuda {

// One line of JSON, never an exception:
//   {"driver": 12080 | null, "runtime": 13000,
//    "devices": [{"ordinal", "name", "cc": "9.0", "sms", "memory_gib", "bandwidth_gbs", "bf16_peak_tflops"}],
//    "cublaslt": {"found", "path", "version", "error"}, "nccl": {...},
//    "error": "no CUDA driver ..." | null}
// (versions as cudaDriverGetVersion / cudaRuntimeGetVersion give them: 1000 * major + 10 * minor).
std::string cuda_runtime_report_json();

}  // namespace cuda
}  // namespace gm

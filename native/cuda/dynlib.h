// cuBLASLt and NCCL, loaded at run time with dlopen (as PyTorch loads them lazily), through our own
// minimal declarations of the few types and functions we use (namespaces lt and nc below). So the
// CUDA backend compiles and links wherever nvcc and the CUDA runtime are, one binary runs on a
// single GPU without NCCL, and the NVIDIA pip wheels work at run time. When the build finds the real
// headers it defines GM_HAVE_CUBLASLT_H / GM_HAVE_NCCL_H and dynlib.cpp checks these declarations
// against them (function types, enum values, struct layouts) with static_asserts.
//
// Search order, for each library (the first file that loads and has every symbol wins):
//   1. $GM_CUBLASLT_LIB / $GM_NCCL_LIB: a file path. When set, nothing else is tried.
//   2. The NVIDIA pip wheels: $GM_NVIDIA_WHEELS/cublas/lib, $GM_NVIDIA_WHEELS/nccl/lib, then
//      $GM_NVIDIA_WHEELS/cu13/lib, where the CUDA 13 wheels put theirs (GM_NVIDIA_WHEELS is a
//      site-packages/nvidia folder).
//   3. The CUDA toolkit: $GM_CUDA_HOME, $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, each's lib64, lib
//      and targets/*/lib.
//   4. The folder the build found the library in, if it found one (GM_BUILD_CUBLASLT_DIR /
//      GM_BUILD_NCCL_DIR).
//   5. The dynamic linker's default search (LD_LIBRARY_PATH, the ldconfig cache, /lib, /usr/lib).
// File names, tried newest first in each folder (folders in the order above): libcublasLt.so.13,
// libcublasLt.so.12, libcublasLt.so.11, libcublasLt.so (early 11.x releases without
// cublasLtGetStatusString are refused); libnccl.so.2, libnccl.so (NcclComm needs NCCL 2.10 or newer,
// for ncclAvg).
#pragma once
#include <cuda_runtime_api.h>
#include <library_types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace gm {
namespace cuda {

// ---- cuBLASLt (cublasLt.h, cublas_api.h)
namespace lt {
struct Context;
struct MatmulDescOpaque;
struct MatrixLayoutOpaque;
struct PreferenceOpaque;
struct Types {
  using Status = int;  // cublasStatus_t
  using Handle = Context*;
  using MatmulDesc = MatmulDescOpaque*;
  using MatrixLayout = MatrixLayoutOpaque*;
  using Preference = PreferenceOpaque*;
  using ComputeType = int;     // cublasComputeType_t
  using MatmulDescAttr = int;  // cublasLtMatmulDescAttributes_t
  using PreferenceAttr = int;  // cublasLtMatmulPreferenceAttributes_t
  using LayoutAttr = int;      // cublasLtMatrixLayoutAttribute_t
  struct MatmulAlgo {
    std::uint64_t data[8];
  };
  struct HeuristicResult {
    MatmulAlgo algo;
    std::size_t workspace_size;  // what the algorithm needs
    Status state;
    float waves_count;
    int reserved[4];
  };
};
using Status = Types::Status;
using Handle = Types::Handle;
using MatmulDesc = Types::MatmulDesc;
using MatrixLayout = Types::MatrixLayout;
using Preference = Types::Preference;
using MatmulAlgo = Types::MatmulAlgo;
using HeuristicResult = Types::HeuristicResult;

constexpr Status kSuccess = 0;        // CUBLAS_STATUS_SUCCESS
constexpr Status kNotSupported = 15;  // CUBLAS_STATUS_NOT_SUPPORTED: e.g. no algorithm for a shape
constexpr int kOpN = 0, kOpT = 1;     // cublasOperation_t
constexpr int kCompute32F = 68;       // CUBLAS_COMPUTE_32F: strict fp32 (TF32 is _32F_FAST_TF32)
constexpr int kPointerModeHost = 0;   // CUBLASLT_POINTER_MODE_HOST
// Matmul descriptor attributes (int32_t values).
constexpr int kDescScaleType = 1;    // CUBLASLT_MATMUL_DESC_SCALE_TYPE (a cudaDataType_t)
constexpr int kDescPointerMode = 2;  // CUBLASLT_MATMUL_DESC_POINTER_MODE
constexpr int kDescTransA = 3;       // CUBLASLT_MATMUL_DESC_TRANSA
constexpr int kDescTransB = 4;       // CUBLASLT_MATMUL_DESC_TRANSB
// Preference attributes: the workspace limit (uint64_t) and the pointers' alignment (uint32_t).
constexpr int kPrefMaxWorkspaceBytes = 1;  // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES
constexpr int kPrefMinAlignABytes = 5;     // CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES (B, C, D follow)
constexpr int kPrefMinAlignBBytes = 6;
constexpr int kPrefMinAlignCBytes = 7;
constexpr int kPrefMinAlignDBytes = 8;
// Matrix layout attributes of a strided batch: the count (int32_t) and the stride in elements (int64_t).
constexpr int kLayoutBatchCount = 5;          // CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT
constexpr int kLayoutStridedBatchOffset = 6;  // CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET

// The function types, over a set of types T: Types here, the real header's in dynlib.cpp's checks.
template <typename T>
struct Fns {
  using S = typename T::Status;
  using Create = S (*)(typename T::Handle*);
  using Destroy = S (*)(typename T::Handle);
  using GetVersion = std::size_t (*)();
  using GetStatusString = const char* (*)(S);
  using MatmulDescCreate = S (*)(typename T::MatmulDesc*, typename T::ComputeType, cudaDataType_t);
  using MatmulDescDestroy = S (*)(typename T::MatmulDesc);
  using MatmulDescSetAttribute = S (*)(typename T::MatmulDesc, typename T::MatmulDescAttr, const void*, std::size_t);
  using MatrixLayoutCreate = S (*)(typename T::MatrixLayout*, cudaDataType_t, std::uint64_t, std::uint64_t, std::int64_t);
  using MatrixLayoutDestroy = S (*)(typename T::MatrixLayout);
  using MatrixLayoutSetAttribute = S (*)(typename T::MatrixLayout, typename T::LayoutAttr, const void*, std::size_t);
  using PreferenceCreate = S (*)(typename T::Preference*);
  using PreferenceDestroy = S (*)(typename T::Preference);
  using PreferenceSetAttribute = S (*)(typename T::Preference, typename T::PreferenceAttr, const void*, std::size_t);
  using MatmulAlgoGetHeuristic = S (*)(typename T::Handle, typename T::MatmulDesc, typename T::MatrixLayout,
                                       typename T::MatrixLayout, typename T::MatrixLayout, typename T::MatrixLayout,
                                       typename T::Preference, int, typename T::HeuristicResult*, int*);
  using Matmul = S (*)(typename T::Handle, typename T::MatmulDesc, const void*, const void*, typename T::MatrixLayout,
                       const void*, typename T::MatrixLayout, const void*, const void*, typename T::MatrixLayout, void*,
                       typename T::MatrixLayout, const typename T::MatmulAlgo*, void*, std::size_t, cudaStream_t);
};
}  // namespace lt

struct CublasLtApi {
  using F = lt::Fns<lt::Types>;
  F::Create cublasLtCreate = nullptr;
  F::Destroy cublasLtDestroy = nullptr;
  F::GetVersion cublasLtGetVersion = nullptr;
  F::GetStatusString cublasLtGetStatusString = nullptr;
  F::MatmulDescCreate cublasLtMatmulDescCreate = nullptr;
  F::MatmulDescDestroy cublasLtMatmulDescDestroy = nullptr;
  F::MatmulDescSetAttribute cublasLtMatmulDescSetAttribute = nullptr;
  F::MatrixLayoutCreate cublasLtMatrixLayoutCreate = nullptr;
  F::MatrixLayoutDestroy cublasLtMatrixLayoutDestroy = nullptr;
  F::MatrixLayoutSetAttribute cublasLtMatrixLayoutSetAttribute = nullptr;
  F::PreferenceCreate cublasLtMatmulPreferenceCreate = nullptr;
  F::PreferenceDestroy cublasLtMatmulPreferenceDestroy = nullptr;
  F::PreferenceSetAttribute cublasLtMatmulPreferenceSetAttribute = nullptr;
  F::MatmulAlgoGetHeuristic cublasLtMatmulAlgoGetHeuristic = nullptr;
  F::Matmul cublasLtMatmul = nullptr;
  std::string path;         // the file loaded
  std::size_t version = 0;  // cublasLtGetVersion(): major * 10000 + minor * 100 + patch
};

// ---- NCCL (nccl.h)
namespace nc {
struct CommOpaque;
struct Types {
  using Result = int;  // ncclResult_t
  using Comm = CommOpaque*;
  using DataType = int;  // ncclDataType_t
  using RedOp = int;     // ncclRedOp_t
  struct UniqueId {
    char internal[128];
  };
};
using Result = Types::Result;
using Comm = Types::Comm;
using UniqueId = Types::UniqueId;
constexpr std::size_t kUniqueIdBytes = sizeof(UniqueId);  // NCCL_UNIQUE_ID_BYTES

constexpr Result kSuccess = 0;      // ncclSuccess
constexpr Result kInProgress = 7;   // ncclInProgress (non-blocking communicators; NCCL 2.14+)
constexpr int kFloat32 = 7;         // ncclFloat32
constexpr int kBfloat16 = 9;        // ncclBfloat16
constexpr int kSum = 0;             // ncclSum
constexpr int kAvg = 4;             // ncclAvg (NCCL 2.10+)
constexpr int kMinVersion = 21000;  // 2.10.0 in NCCL_VERSION_CODE form (major * 10000 + minor * 100 + patch)

template <typename T>
struct Fns {
  using R = typename T::Result;
  using GetVersion = R (*)(int*);
  using GetUniqueId = R (*)(typename T::UniqueId*);
  using CommInitRank = R (*)(typename T::Comm*, int, typename T::UniqueId, int);
  using CommDestroy = R (*)(typename T::Comm);
  using CommAbort = R (*)(typename T::Comm);
  using CommGetAsyncError = R (*)(typename T::Comm, R*);
  using AllReduce = R (*)(const void*, void*, std::size_t, typename T::DataType, typename T::RedOp, typename T::Comm,
                          cudaStream_t);
  using GroupStart = R (*)();
  using GroupEnd = R (*)();
  using GetErrorString = const char* (*)(R);
};
}  // namespace nc

struct NcclApi {
  using F = nc::Fns<nc::Types>;
  F::GetVersion ncclGetVersion = nullptr;
  F::GetUniqueId ncclGetUniqueId = nullptr;
  F::CommInitRank ncclCommInitRank = nullptr;
  F::CommDestroy ncclCommDestroy = nullptr;
  F::CommAbort ncclCommAbort = nullptr;
  F::CommGetAsyncError ncclCommGetAsyncError = nullptr;
  F::AllReduce ncclAllReduce = nullptr;
  F::GroupStart ncclGroupStart = nullptr;
  F::GroupEnd ncclGroupEnd = nullptr;
  F::GetErrorString ncclGetErrorString = nullptr;
  std::string path;         // the file loaded
  std::size_t version = 0;  // ncclGetVersion(): NCCL_VERSION_CODE
};

// Loaded on first use (thread-safe) and kept for the life of the process. A library that cannot be
// found or lacks a symbol throws std::runtime_error, one line: the library, every path tried, and
// what to do; later calls throw the same.
const CublasLtApi& cublaslt();
const NcclApi& nccl();

// The same search for `gm doctor`: never throws.
struct LibProbe {
  bool found = false;
  std::string path;     // the file loaded
  std::string version;  // "12.4.5"
  std::string error;    // cublaslt() / nccl()'s message when not found
};
LibProbe probe_cublaslt();
LibProbe probe_nccl();

// "12.4.5" from cublasLtGetVersion()'s and ncclGetVersion()'s codes.
std::string cublaslt_version_string(std::size_t code);
std::string nccl_version_string(std::size_t code);

}  // namespace cuda
}  // namespace gm

// The run-time loader of cuBLASLt and NCCL (dynlib.h): the search, dlopen/dlsym, and, when the real
// headers were found at build time, static checks of our declarations against them.
#include "dynlib.h"

#include <dirent.h>
#include <dlfcn.h>
#include <link.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>
#include <type_traits>
#include <vector>

#if defined(GM_HAVE_CUBLASLT_H)
#include <cublasLt.h>
#endif
#if defined(GM_HAVE_NCCL_H)
#include <nccl.h>
#endif

namespace gm {
namespace cuda {

// Our stand-in types must be interchangeable with the real ones at the ABI level: same size and
// alignment (enums are passed as int), same struct layout; and Fns<> over the real types must give
// exactly the real functions' types.
template <typename A, typename B>
constexpr bool same_abi() {
  return sizeof(A) == sizeof(B) && alignof(A) == alignof(B);
}

#if defined(GM_HAVE_CUBLASLT_H)
namespace lt {
struct RealTypes {
  using Status = cublasStatus_t;
  using Handle = cublasLtHandle_t;
  using MatmulDesc = cublasLtMatmulDesc_t;
  using MatrixLayout = cublasLtMatrixLayout_t;
  using Preference = cublasLtMatmulPreference_t;
  using ComputeType = cublasComputeType_t;
  using MatmulDescAttr = cublasLtMatmulDescAttributes_t;
  using PreferenceAttr = cublasLtMatmulPreferenceAttributes_t;
  using LayoutAttr = cublasLtMatrixLayoutAttribute_t;
  using MatmulAlgo = cublasLtMatmulAlgo_t;
  using HeuristicResult = cublasLtMatmulHeuristicResult_t;
};
using RF = Fns<RealTypes>;
static_assert(std::is_same<decltype(&cublasLtCreate), RF::Create>::value, "cublasLtCreate");
static_assert(std::is_same<decltype(&cublasLtDestroy), RF::Destroy>::value, "cublasLtDestroy");
static_assert(std::is_same<decltype(&cublasLtGetVersion), RF::GetVersion>::value, "cublasLtGetVersion");
static_assert(std::is_same<decltype(&cublasLtGetStatusString), RF::GetStatusString>::value, "cublasLtGetStatusString");
static_assert(std::is_same<decltype(&cublasLtMatmulDescCreate), RF::MatmulDescCreate>::value, "cublasLtMatmulDescCreate");
static_assert(std::is_same<decltype(&cublasLtMatmulDescDestroy), RF::MatmulDescDestroy>::value, "cublasLtMatmulDescDestroy");
static_assert(std::is_same<decltype(&cublasLtMatmulDescSetAttribute), RF::MatmulDescSetAttribute>::value,
              "cublasLtMatmulDescSetAttribute");
static_assert(std::is_same<decltype(&cublasLtMatrixLayoutCreate), RF::MatrixLayoutCreate>::value,
              "cublasLtMatrixLayoutCreate");
static_assert(std::is_same<decltype(&cublasLtMatrixLayoutDestroy), RF::MatrixLayoutDestroy>::value,
              "cublasLtMatrixLayoutDestroy");
static_assert(std::is_same<decltype(&cublasLtMatrixLayoutSetAttribute), RF::MatrixLayoutSetAttribute>::value,
              "cublasLtMatrixLayoutSetAttribute");
static_assert(std::is_same<decltype(&cublasLtMatmulPreferenceCreate), RF::PreferenceCreate>::value,
              "cublasLtMatmulPreferenceCreate");
static_assert(std::is_same<decltype(&cublasLtMatmulPreferenceDestroy), RF::PreferenceDestroy>::value,
              "cublasLtMatmulPreferenceDestroy");
static_assert(std::is_same<decltype(&cublasLtMatmulPreferenceSetAttribute), RF::PreferenceSetAttribute>::value,
              "cublasLtMatmulPreferenceSetAttribute");
static_assert(std::is_same<decltype(&cublasLtMatmulAlgoGetHeuristic), RF::MatmulAlgoGetHeuristic>::value,
              "cublasLtMatmulAlgoGetHeuristic");
static_assert(std::is_same<decltype(&cublasLtMatmul), RF::Matmul>::value, "cublasLtMatmul");

static_assert(same_abi<Types::Status, cublasStatus_t>(), "cublasStatus_t");
static_assert(same_abi<Types::Handle, cublasLtHandle_t>(), "cublasLtHandle_t");
static_assert(same_abi<Types::MatmulDesc, cublasLtMatmulDesc_t>(), "cublasLtMatmulDesc_t");
static_assert(same_abi<Types::MatrixLayout, cublasLtMatrixLayout_t>(), "cublasLtMatrixLayout_t");
static_assert(same_abi<Types::Preference, cublasLtMatmulPreference_t>(), "cublasLtMatmulPreference_t");
static_assert(same_abi<Types::ComputeType, cublasComputeType_t>(), "cublasComputeType_t");
static_assert(same_abi<Types::MatmulDescAttr, cublasLtMatmulDescAttributes_t>(), "cublasLtMatmulDescAttributes_t");
static_assert(same_abi<Types::PreferenceAttr, cublasLtMatmulPreferenceAttributes_t>(),
              "cublasLtMatmulPreferenceAttributes_t");
static_assert(same_abi<Types::LayoutAttr, cublasLtMatrixLayoutAttribute_t>(), "cublasLtMatrixLayoutAttribute_t");
static_assert(same_abi<MatmulAlgo, cublasLtMatmulAlgo_t>(), "cublasLtMatmulAlgo_t");
static_assert(same_abi<HeuristicResult, cublasLtMatmulHeuristicResult_t>(), "cublasLtMatmulHeuristicResult_t");
static_assert(offsetof(HeuristicResult, algo) == offsetof(cublasLtMatmulHeuristicResult_t, algo), "algo");
static_assert(offsetof(HeuristicResult, workspace_size) == offsetof(cublasLtMatmulHeuristicResult_t, workspaceSize),
              "workspaceSize");
static_assert(offsetof(HeuristicResult, state) == offsetof(cublasLtMatmulHeuristicResult_t, state), "state");
static_assert(offsetof(HeuristicResult, waves_count) == offsetof(cublasLtMatmulHeuristicResult_t, wavesCount),
              "wavesCount");
static_assert(offsetof(HeuristicResult, reserved) == offsetof(cublasLtMatmulHeuristicResult_t, reserved), "reserved");

static_assert(kSuccess == CUBLAS_STATUS_SUCCESS, "CUBLAS_STATUS_SUCCESS");
static_assert(kNotSupported == CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_STATUS_NOT_SUPPORTED");
static_assert(kOpN == CUBLAS_OP_N && kOpT == CUBLAS_OP_T, "cublasOperation_t");
static_assert(kCompute32F == CUBLAS_COMPUTE_32F, "CUBLAS_COMPUTE_32F");
static_assert(kPointerModeHost == CUBLASLT_POINTER_MODE_HOST, "CUBLASLT_POINTER_MODE_HOST");
static_assert(kDescScaleType == CUBLASLT_MATMUL_DESC_SCALE_TYPE, "CUBLASLT_MATMUL_DESC_SCALE_TYPE");
static_assert(kDescPointerMode == CUBLASLT_MATMUL_DESC_POINTER_MODE, "CUBLASLT_MATMUL_DESC_POINTER_MODE");
static_assert(kDescTransA == CUBLASLT_MATMUL_DESC_TRANSA, "CUBLASLT_MATMUL_DESC_TRANSA");
static_assert(kDescTransB == CUBLASLT_MATMUL_DESC_TRANSB, "CUBLASLT_MATMUL_DESC_TRANSB");
static_assert(kPrefMaxWorkspaceBytes == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, "CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES");
static_assert(kLayoutBatchCount == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, "CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT");
static_assert(kLayoutStridedBatchOffset == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
              "CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET");
static_assert(kPrefMinAlignABytes == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES &&
                  kPrefMinAlignBBytes == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES &&
                  kPrefMinAlignCBytes == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES &&
                  kPrefMinAlignDBytes == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
              "CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES");
}  // namespace lt
#endif

#if defined(GM_HAVE_NCCL_H)
namespace nc {
struct RealTypes {
  using Result = ncclResult_t;
  using Comm = ncclComm_t;
  using DataType = ncclDataType_t;
  using RedOp = ncclRedOp_t;
  using UniqueId = ncclUniqueId;
};
using RF = Fns<RealTypes>;
static_assert(std::is_same<decltype(&ncclGetVersion), RF::GetVersion>::value, "ncclGetVersion");
static_assert(std::is_same<decltype(&ncclGetUniqueId), RF::GetUniqueId>::value, "ncclGetUniqueId");
static_assert(std::is_same<decltype(&ncclCommInitRank), RF::CommInitRank>::value, "ncclCommInitRank");
static_assert(std::is_same<decltype(&ncclCommDestroy), RF::CommDestroy>::value, "ncclCommDestroy");
static_assert(std::is_same<decltype(&ncclCommAbort), RF::CommAbort>::value, "ncclCommAbort");
static_assert(std::is_same<decltype(&ncclCommGetAsyncError), RF::CommGetAsyncError>::value, "ncclCommGetAsyncError");
static_assert(std::is_same<decltype(&ncclAllReduce), RF::AllReduce>::value, "ncclAllReduce");
static_assert(std::is_same<decltype(&ncclGroupStart), RF::GroupStart>::value, "ncclGroupStart");
static_assert(std::is_same<decltype(&ncclGroupEnd), RF::GroupEnd>::value, "ncclGroupEnd");
static_assert(std::is_same<decltype(&ncclGetErrorString), RF::GetErrorString>::value, "ncclGetErrorString");

static_assert(same_abi<Types::Result, ncclResult_t>(), "ncclResult_t");
static_assert(same_abi<Types::Comm, ncclComm_t>(), "ncclComm_t");
static_assert(same_abi<Types::DataType, ncclDataType_t>(), "ncclDataType_t");
static_assert(same_abi<Types::RedOp, ncclRedOp_t>(), "ncclRedOp_t");
static_assert(same_abi<UniqueId, ncclUniqueId>(), "ncclUniqueId");
static_assert(kUniqueIdBytes == NCCL_UNIQUE_ID_BYTES, "NCCL_UNIQUE_ID_BYTES");
static_assert(kSuccess == ncclSuccess && kInProgress == ncclInProgress, "ncclResult_t values");
static_assert(kFloat32 == ncclFloat32 && kBfloat16 == ncclBfloat16, "ncclDataType_t values");
static_assert(kSum == ncclSum && kAvg == ncclAvg, "ncclRedOp_t values");
static_assert(kMinVersion == NCCL_VERSION(2, 10, 0), "NCCL_VERSION");
}  // namespace nc
#endif

std::string cublaslt_version_string(std::size_t code) {
  return std::to_string(code / 10000) + "." + std::to_string(code / 100 % 100) + "." + std::to_string(code % 100);
}
// NCCL_VERSION_CODE is major * 1000 + minor * 100 + patch up to 2.8, major * 10000 + minor * 100 + patch after.
std::string nccl_version_string(std::size_t code) {
  if (code < 10000)
    return std::to_string(code / 1000) + "." + std::to_string(code / 100 % 10) + "." + std::to_string(code % 100);
  return cublaslt_version_string(code);
}

namespace {

// The build's hints: string literals (-DGM_BUILD_CUBLASLT_DIR="/x"), or undefined.
#if defined(GM_BUILD_CUBLASLT_DIR)
const char* const kBuildCublasLtDir = GM_BUILD_CUBLASLT_DIR;
#else
const char* const kBuildCublasLtDir = "";
#endif
#if defined(GM_BUILD_NCCL_DIR)
const char* const kBuildNcclDir = GM_BUILD_NCCL_DIR;
#else
const char* const kBuildNcclDir = "";
#endif

struct Spec {
  const char* name;                  // "cuBLASLt"
  const char* env;                   // the file override
  const char* wheel;                 // the pip wheel's folder under site-packages/nvidia
  const char* build_dir;             // the build's hint, "" when none
  std::vector<const char*> sonames;  // newest first
  const char* install;               // what to do when nothing loads
};

std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}
bool is_file(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}
// dlerror() text on one line.
std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// The folders of steps 2-4 of dynlib.h's search order, without duplicates.
std::vector<std::string> search_dirs(const Spec& spec) {
  std::vector<std::string> dirs;
  const std::string wheels = env_str("GM_NVIDIA_WHEELS");
  if (!wheels.empty()) {
    dirs.push_back(wheels + "/" + spec.wheel + "/lib");
    dirs.push_back(wheels + "/cu13/lib");  // the CUDA 13 wheels share one folder
  }
  std::vector<std::string> roots;
  for (const char* v : {"GM_CUDA_HOME", "CUDA_HOME", "CUDA_PATH"})
    if (!env_str(v).empty()) roots.push_back(env_str(v));
  roots.push_back("/usr/local/cuda");
  for (const std::string& r : roots) {
    dirs.push_back(r + "/lib64");
    dirs.push_back(r + "/lib");
    std::vector<std::string> targets;
    if (DIR* d = opendir((r + "/targets").c_str())) {
      while (const dirent* e = readdir(d))
        if (e->d_name[0] != '.') targets.push_back(r + "/targets/" + e->d_name + "/lib");
      closedir(d);
    }
    std::sort(targets.begin(), targets.end());
    dirs.insert(dirs.end(), targets.begin(), targets.end());
  }
  if (spec.build_dir[0]) dirs.push_back(spec.build_dir);
  std::vector<std::string> unique;
  for (const std::string& d : dirs)
    if (std::find(unique.begin(), unique.end(), d) == unique.end()) unique.push_back(d);
  return unique;
}

template <typename F>
void bind(void* h, const char* name, F& slot, std::vector<std::string>& missing) {
  void* p = dlsym(h, name);
  if (p) slot = reinterpret_cast<F>(p);
  else missing.push_back(name);
}
void bind_all(void* h, CublasLtApi& a, std::vector<std::string>& m) {
  bind(h, "cublasLtCreate", a.cublasLtCreate, m);
  bind(h, "cublasLtDestroy", a.cublasLtDestroy, m);
  bind(h, "cublasLtGetVersion", a.cublasLtGetVersion, m);
  bind(h, "cublasLtGetStatusString", a.cublasLtGetStatusString, m);
  bind(h, "cublasLtMatmulDescCreate", a.cublasLtMatmulDescCreate, m);
  bind(h, "cublasLtMatmulDescDestroy", a.cublasLtMatmulDescDestroy, m);
  bind(h, "cublasLtMatmulDescSetAttribute", a.cublasLtMatmulDescSetAttribute, m);
  bind(h, "cublasLtMatrixLayoutCreate", a.cublasLtMatrixLayoutCreate, m);
  bind(h, "cublasLtMatrixLayoutDestroy", a.cublasLtMatrixLayoutDestroy, m);
  bind(h, "cublasLtMatrixLayoutSetAttribute", a.cublasLtMatrixLayoutSetAttribute, m);
  bind(h, "cublasLtMatmulPreferenceCreate", a.cublasLtMatmulPreferenceCreate, m);
  bind(h, "cublasLtMatmulPreferenceDestroy", a.cublasLtMatmulPreferenceDestroy, m);
  bind(h, "cublasLtMatmulPreferenceSetAttribute", a.cublasLtMatmulPreferenceSetAttribute, m);
  bind(h, "cublasLtMatmulAlgoGetHeuristic", a.cublasLtMatmulAlgoGetHeuristic, m);
  bind(h, "cublasLtMatmul", a.cublasLtMatmul, m);
  if (m.empty()) a.version = a.cublasLtGetVersion();
}
void bind_all(void* h, NcclApi& a, std::vector<std::string>& m) {
  bind(h, "ncclGetVersion", a.ncclGetVersion, m);
  bind(h, "ncclGetUniqueId", a.ncclGetUniqueId, m);
  bind(h, "ncclCommInitRank", a.ncclCommInitRank, m);
  bind(h, "ncclCommDestroy", a.ncclCommDestroy, m);
  bind(h, "ncclCommAbort", a.ncclCommAbort, m);
  bind(h, "ncclCommGetAsyncError", a.ncclCommGetAsyncError, m);
  bind(h, "ncclAllReduce", a.ncclAllReduce, m);
  bind(h, "ncclGroupStart", a.ncclGroupStart, m);
  bind(h, "ncclGroupEnd", a.ncclGroupEnd, m);
  bind(h, "ncclGetErrorString", a.ncclGetErrorString, m);
  int v = 0;
  if (m.empty() && a.ncclGetVersion(&v) == nc::kSuccess) a.version = (std::size_t)v;
}

template <typename Api>
struct Loaded {
  Api api;
  std::string error;  // empty when loaded
};

// Tries one file (a path, or a bare soname for the dynamic linker). The libraries stay loaded for
// the life of the process: they keep threads and exit handlers, so they are never dlclosed once bound.
template <typename Api>
bool try_load(const Spec& spec, const std::string& file, Loaded<Api>& out, std::vector<std::string>& problems) {
  void* h = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const std::string e = one_line(dlerror());
    // A bare soname the linker does not know is not a problem worth reporting; anything else
    // (a broken file, a missing dependency, a wrong architecture) is.
    if (file.find('/') != std::string::npos || e.rfind(file + ": cannot open shared object file", 0) != 0)
      problems.push_back(e);
    return false;
  }
  Api api;
  std::vector<std::string> missing;
  bind_all(h, api, missing);
  std::string where = file;
  link_map* lm = nullptr;
  if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && lm->l_name[0]) where = lm->l_name;
  if (!missing.empty()) {
    problems.push_back(where + " lacks " + join(missing, ", ") + " (too old, or not " + spec.name + ")");
    dlclose(h);
    return false;
  }
  api.path = where;
  out.api = api;
  return true;
}

template <typename Api>
Loaded<Api> load(const Spec& spec) {
  Loaded<Api> out;
  std::vector<std::string> problems;
  const std::string explicit_file = env_str(spec.env);
  if (!explicit_file.empty()) {
    if (try_load(spec, explicit_file, out, problems)) return out;
    out.error = std::string(spec.name) + ": " + spec.env + "=" + explicit_file + " does not load: " +
                join(problems, "; ") + "; point " + spec.env + " at a working " + spec.sonames.front() +
                " (or an older soname), or unset it to search the usual places";
    return out;
  }
  const std::vector<std::string> dirs = search_dirs(spec);
  for (const std::string& d : dirs)
    for (const char* so : spec.sonames) {
      const std::string f = d + "/" + so;
      if (is_file(f) && try_load(spec, f, out, problems)) return out;
    }
  for (const char* so : spec.sonames)
    if (try_load(spec, so, out, problems)) return out;
  std::vector<std::string> names(spec.sonames.begin(), spec.sonames.end());
  out.error = std::string(spec.name) + " not found: tried " + join(names, ", ") + " in " + join(dirs, ", ") +
              " and the dynamic linker's search path (LD_LIBRARY_PATH, ldconfig)" +
              (problems.empty() ? std::string() : " (" + join(problems, "; ") + ")") + "; " + spec.install;
  return out;
}

const Loaded<CublasLtApi>& cublaslt_loaded() {
  static const Loaded<CublasLtApi> r = load<CublasLtApi>(
      {"cuBLASLt", "GM_CUBLASLT_LIB", "cublas", kBuildCublasLtDir,
       {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"},
       "install the NVIDIA cuBLAS (pip install nvidia-cublas-cu12 and set GM_NVIDIA_WHEELS=<site-packages>/nvidia, "
       "or the CUDA toolkit) or set GM_CUBLASLT_LIB=/path/to/libcublasLt.so.12"});
  return r;
}
const Loaded<NcclApi>& nccl_loaded() {
  static const Loaded<NcclApi> r = load<NcclApi>(
      {"NCCL", "GM_NCCL_LIB", "nccl", kBuildNcclDir, {"libnccl.so.2", "libnccl.so"},
       "install NCCL (pip install nvidia-nccl-cu12 and set GM_NVIDIA_WHEELS=<site-packages>/nvidia, or the "
       "libnccl2 package) or set GM_NCCL_LIB=/path/to/libnccl.so.2; a single GPU does not need it"});
  return r;
}

template <typename Api>
LibProbe probe(const Loaded<Api>& r, std::string (*version)(std::size_t)) {
  LibProbe p;
  p.found = r.error.empty();
  if (p.found) {
    p.path = r.api.path;
    p.version = version(r.api.version);
  } else {
    p.error = r.error;
  }
  return p;
}

}  // namespace

const CublasLtApi& cublaslt() {
  const Loaded<CublasLtApi>& r = cublaslt_loaded();
  if (!r.error.empty()) throw std::runtime_error(r.error);
  return r.api;
}
const NcclApi& nccl() {
  const Loaded<NcclApi>& r = nccl_loaded();
  if (!r.error.empty()) throw std::runtime_error(r.error);
  return r.api;
}

LibProbe probe_cublaslt() {
  try {
    return probe(cublaslt_loaded(), cublaslt_version_string);
  } catch (const std::exception& e) {  // only std::bad_alloc can get here
    LibProbe p;
    p.error = e.what();
    return p;
  }
}
LibProbe probe_nccl() {
  try {
    return probe(nccl_loaded(), nccl_version_string);
  } catch (const std::exception& e) {
    LibProbe p;
    p.error = e.what();
    return p;
  }
}

}  // namespace cuda
}  // namespace gm

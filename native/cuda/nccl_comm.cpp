// NcclComm (nccl_comm.h): the gradient all-reduce over NCCL, and a wait that turns a dead or hung
// peer into an error on every rank instead of a hang.
#include "nccl_comm.h"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace gm {
namespace cuda {

namespace {

std::string nccl_error(const NcclApi& api, nc::Result r) {
  const char* text = api.ncclGetErrorString(r);
  return std::string(text ? text : "unknown result") + " (" + std::to_string(r) + ")";
}
void nccl_check(const NcclApi& api, nc::Result r, const std::string& what) {
  if (r != nc::kSuccess) throw std::runtime_error("NCCL error in " + what + ": " + nccl_error(api, r));
}

}  // namespace

std::vector<std::uint8_t> NcclComm::create_unique_id() {
  const NcclApi& api = nccl();
  nc::UniqueId id;
  std::memset(&id, 0, sizeof id);
  nccl_check(api, api.ncclGetUniqueId(&id), "ncclGetUniqueId");
  const auto* b = reinterpret_cast<const std::uint8_t*>(id.internal);
  return std::vector<std::uint8_t>(b, b + sizeof id.internal);
}

NcclComm::NcclComm(const std::vector<std::uint8_t>& unique_id, int rank, int world_size, double init_timeout_s)
    : api_(nccl()), rank_(rank), world_size_(world_size) {
  if (unique_id.size() != nc::kUniqueIdBytes)
    throw std::invalid_argument("NCCL: the unique id must be " + std::to_string(nc::kUniqueIdBytes) + " bytes (got " +
                                std::to_string(unique_id.size()) + ")");
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw std::invalid_argument("NCCL: rank " + std::to_string(rank) + " is not in 0.." + std::to_string(world_size - 1));
  if (api_.version < (std::size_t)nc::kMinVersion)
    throw std::runtime_error("NCCL " + nccl_version_string(api_.version) + " at " + api_.path +
                             " is too old: 2.10 or newer is needed (ncclAvg); set GM_NCCL_LIB to a newer libnccl.so.2");
  nc::UniqueId id;
  std::memcpy(id.internal, unique_id.data(), sizeof id.internal);
  // ncclCommInitRank blocks until every rank has joined, with no timeout of its own: run it on a
  // thread of its own (on this thread's device) and give up after init_timeout_s. A thread left
  // blocked there ends with the process, which exits on the error.
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("NCCL: no current CUDA device to create the communicator on");
  }
  struct Init {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    nc::Result result = nc::kSuccess;
    nc::Comm comm = nullptr;
  };
  auto init = std::make_shared<Init>();
  const NcclApi& api = api_;  // a function-static singleton: outlives a detached thread
  std::thread([init, device, id, rank, world_size, &api] {
    cudaSetDevice(device);
    nc::Comm c = nullptr;
    const nc::Result r = api.ncclCommInitRank(&c, world_size, id, rank);
    std::lock_guard<std::mutex> lock(init->mu);
    init->result = r;
    init->comm = c;
    init->done = true;
    init->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(init->mu);
  if (!init->cv.wait_for(lock, std::chrono::duration<double>(init_timeout_s), [&] { return init->done; })) {
    char what[160];
    std::snprintf(what, sizeof what, "NCCL: rank %d of %d: the other ranks did not join within %.0f s (a rank died or cannot reach the others); every rank stops",
                  rank, world_size, init_timeout_s);
    throw std::runtime_error(what);
  }
  nccl_check(api_, init->result, "ncclCommInitRank (rank " + std::to_string(rank) + " of " + std::to_string(world_size) + ")");
  comm_ = init->comm;
}

NcclComm::~NcclComm() {
  if (comm_ && !aborted_) api_.ncclCommDestroy(comm_);  // no throwing from a destructor: the result is dropped
}

void NcclComm::all_reduce_mean(float* p, std::int64_t n, cudaStream_t s) {
  if (aborted_) throw std::runtime_error("NCCL: the communicator was aborted after an earlier failure");
  if (n < 0) throw std::invalid_argument("NCCL: all_reduce_mean: negative count");
  if (n == 0) return;
  nccl_check(api_, api_.ncclAllReduce(p, p, (std::size_t)n, nc::kFloat32, nc::kAvg, comm_, s), "ncclAllReduce");
}

void NcclComm::abort() {
  if (comm_ && !aborted_) {
    aborted_ = true;
    api_.ncclCommAbort(comm_);  // already failing: its own result adds nothing
  }
}

void NcclComm::fail(const std::string& what, double waited_s) {
  abort();
  char tail[96];
  std::snprintf(tail, sizeof tail, "; a rank died or is stuck; every rank stops (waited %.1f s)", waited_s);
  throw std::runtime_error("NCCL: " + what + " on rank " + std::to_string(rank_) + " of " +
                           std::to_string(world_size_) + tail);
}

// NCCL kernels wait for their peers forever: a peer that died leaves them spinning, so poll the
// stream and the communicator's asynchronous error instead of synchronising.
void NcclComm::wait(cudaStream_t s, double timeout_s) {
  if (aborted_) throw std::runtime_error("NCCL: the communicator was aborted after an earlier failure");
  const auto t0 = std::chrono::steady_clock::now();
  auto waited = [&t0] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  for (;;) {
    const cudaError_t e = cudaStreamQuery(s);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) {
      cudaGetLastError();
      fail(std::string("CUDA error while waiting for the gradient all-reduce: ") + cudaGetErrorString(e), waited());
    }
    nc::Result async = nc::kSuccess;
    const nc::Result r = api_.ncclCommGetAsyncError(comm_, &async);
    if (r != nc::kSuccess) fail("ncclCommGetAsyncError failed: " + nccl_error(api_, r), waited());
    if (async != nc::kSuccess && async != nc::kInProgress) fail(nccl_error(api_, async), waited());
    if (waited() > timeout_s) {
      char what[96];
      std::snprintf(what, sizeof what, "the gradient all-reduce did not finish within %.0f s", timeout_s);
      fail(what, waited());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

std::string NcclComm::version_string() { return nccl_version_string(nccl().version); }

}  // namespace cuda
}  // namespace gm

// GradComm (comm.h) over NCCL, loaded at run time (dynlib.h). One communicator per rank, one rank
// per GPU. Rank 0 makes the unique id; the caller ships its bytes to the other ranks (over TCP) and
// every rank then constructs its NcclComm with its current device already set.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "comm.h"
#include "dynlib.h"

namespace gm {
namespace cuda {

class NcclComm : public GradComm {
 public:
  // ncclGetUniqueId: nc::kUniqueIdBytes (128) bytes, made by rank 0.
  static std::vector<std::uint8_t> create_unique_id();
  // ncclCommInitRank on the current device; blocks until every rank has joined, at most
  // init_timeout_s seconds (then std::runtime_error: a rank died or cannot reach the others). Throws
  // std::invalid_argument for a bad id or rank, std::runtime_error when NCCL cannot be loaded, is
  // older than 2.10 (no ncclAvg) or fails.
  NcclComm(const std::vector<std::uint8_t>& unique_id, int rank, int world_size, double init_timeout_s = 600);
  ~NcclComm() override;  // ncclCommDestroy, unless wait() aborted the communicator
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  // ncclAllReduce in place with ncclAvg on s.
  void all_reduce_mean(float* p, std::int64_t n, cudaStream_t s) override;
  // Polls s every millisecond; an NCCL asynchronous error or timeout_s seconds without completion
  // aborts the communicator and throws std::runtime_error (one line).
  void wait(cudaStream_t s, double timeout_s) override;

  // The loaded NCCL's version, "2.23.4"; throws std::runtime_error when NCCL cannot be loaded.
  static std::string version_string();

 private:
  void abort();
  [[noreturn]] void fail(const std::string& what, double waited_s);

  const NcclApi& api_;
  nc::Comm comm_ = nullptr;
  int rank_ = 0, world_size_ = 1;
  bool aborted_ = false;
};

}  // namespace cuda
}  // namespace gm

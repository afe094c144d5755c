// A stand-in for NCCL in the emulated addon (gm_native_emul.node), so the trainer's NCCL path
// (unique id from rank 0 over the TCP group, joining, arming the reduction for a step's last
// backward, finishing it, a rank with nothing to reduce) runs end to end across worker processes
// without a GPU. The "unique id" names a loopback port that rank 0 listens on; all_reduce_mean
// sends every rank's floats to rank 0, which averages them in rank order and sends the mean back,
// so all ranks hold bitwise the same result. The emulated device runs streams synchronously, so the
// reduction completes inside the call and wait() has nothing left to do. A peer that closes its
// connection or stays silent for the timeout is an error on the others, as with NCCL.
//
// GM_EMUL_NCCL=0 makes the emulated addon report NCCL as absent (the host all-reduce path).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../cuda/comm.h"

namespace gm {
namespace cuda {

bool emul_nccl_enabled();
std::vector<std::uint8_t> emul_nccl_unique_id();  // starts rank 0's listener

class EmulNcclComm : public GradComm {
 public:
  EmulNcclComm(const std::vector<std::uint8_t>& unique_id, int rank, int world_size, double timeout_s);
  ~EmulNcclComm() override;
  EmulNcclComm(const EmulNcclComm&) = delete;
  EmulNcclComm& operator=(const EmulNcclComm&) = delete;
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  void all_reduce_mean(float* p, std::int64_t n, cudaStream_t s) override;
  void wait(cudaStream_t, double) override {}

 private:
  int rank_, world_;
  double timeout_s_;
  std::vector<int> peers_;  // rank 0: the socket of rank r at [r]; others: [0] is rank 0's
  void send_all(int fd, const void* p, std::size_t bytes);
  void recv_all(int fd, void* p, std::size_t bytes);
  [[noreturn]] void fail(const std::string& what) const;
};

}  // namespace cuda
}  // namespace gm

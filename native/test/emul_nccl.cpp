// EmulNcclComm (emul_nccl.h): blocking loopback sockets, rank 0 as the hub.
#include "emul_nccl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace gm {
namespace cuda {

namespace {

const char kMagic[] = "gm-emulated-nccl";
int g_listener = -1;  // rank 0's, from emul_nccl_unique_id() until its communicator accepted the peers

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

bool emul_nccl_enabled() {
  const char* v = std::getenv("GM_EMUL_NCCL");
  return !(v && std::strcmp(v, "0") == 0);
}

std::vector<std::uint8_t> emul_nccl_unique_id() {
  if (g_listener >= 0) close(g_listener);
  g_listener = socket(AF_INET, SOCK_STREAM, 0);
  if (g_listener < 0) throw std::runtime_error(std::string("emulated NCCL: socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (bind(g_listener, (sockaddr*)&a, sizeof a) != 0 || listen(g_listener, 64) != 0 || getsockname(g_listener, (sockaddr*)&a, &len) != 0)
    throw std::runtime_error(std::string("emulated NCCL: cannot listen on loopback: ") + std::strerror(errno));
  std::vector<std::uint8_t> id(128, 0);
  std::memcpy(id.data(), kMagic, sizeof kMagic);
  const std::uint16_t port = ntohs(a.sin_port);
  std::memcpy(id.data() + sizeof kMagic, &port, sizeof port);
  return id;
}

EmulNcclComm::EmulNcclComm(const std::vector<std::uint8_t>& id, int rank, int world_size, double timeout_s)
    : rank_(rank), world_(world_size), timeout_s_(timeout_s) {
  if (id.size() != 128 || std::memcmp(id.data(), kMagic, sizeof kMagic) != 0)
    throw std::invalid_argument("emulated NCCL: not an emulated unique id");
  if (world_size < 1 || rank < 0 || rank >= world_size) throw std::invalid_argument("emulated NCCL: rank outside the world");
  std::uint16_t port = 0;
  std::memcpy(&port, id.data() + sizeof kMagic, sizeof port);
  peers_.assign((size_t)world_size, -1);
  if (rank == 0) {
    if (g_listener < 0) throw std::logic_error("emulated NCCL: rank 0 must create the unique id");
    for (int k = 1; k < world_size; k++) {
      pollfd pf{g_listener, POLLIN, 0};
      if (poll(&pf, 1, (int)(timeout_s * 1000)) <= 0) fail("the other ranks did not join");
      const int fd = accept(g_listener, nullptr, nullptr);
      if (fd < 0) fail(std::string("accept: ") + std::strerror(errno));
      set_nodelay(fd);
      std::int32_t r = -1;
      recv_all(fd, &r, sizeof r);
      if (r < 1 || r >= world_size || peers_[(size_t)r] >= 0) fail("a peer announced rank " + std::to_string(r));
      peers_[(size_t)r] = fd;
    }
    close(g_listener);
    g_listener = -1;
  } else {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (fd < 0 || connect(fd, (sockaddr*)&a, sizeof a) != 0) fail(std::string("cannot reach rank 0: ") + std::strerror(errno));
    set_nodelay(fd);
    peers_[0] = fd;
    const std::int32_t r = rank;
    send_all(fd, &r, sizeof r);
  }
}

EmulNcclComm::~EmulNcclComm() {
  for (int fd : peers_)
    if (fd >= 0) close(fd);
}

void EmulNcclComm::fail(const std::string& what) const {
  throw std::runtime_error("NCCL (emulated): " + what + " on rank " + std::to_string(rank_) + " of " + std::to_string(world_) +
                           "; a rank died or is stuck; every rank stops");
}

void EmulNcclComm::send_all(int fd, const void* p, std::size_t bytes) {
  const char* c = static_cast<const char*>(p);
  while (bytes) {
    const ssize_t k = send(fd, c, bytes, MSG_NOSIGNAL);
    if (k <= 0) fail(std::string("send: ") + (k == 0 ? "connection closed" : std::strerror(errno)));
    c += k;
    bytes -= (std::size_t)k;
  }
}

void EmulNcclComm::recv_all(int fd, void* p, std::size_t bytes) {
  char* c = static_cast<char*>(p);
  while (bytes) {
    pollfd pf{fd, POLLIN, 0};
    const int ready = poll(&pf, 1, (int)(timeout_s_ * 1000));
    if (ready == 0) fail("no data from a peer within the timeout");
    if (ready < 0) fail(std::string("poll: ") + std::strerror(errno));
    const ssize_t k = recv(fd, c, bytes, 0);
    if (k <= 0) fail(k == 0 ? "a peer closed its connection" : std::string("recv: ") + std::strerror(errno));
    c += k;
    bytes -= (std::size_t)k;
  }
}

// p is host memory on the emulated device. Every rank sends (n, p); rank 0 sums in rank order,
// divides once and sends the mean back.
void EmulNcclComm::all_reduce_mean(float* p, std::int64_t n, cudaStream_t) {
  if (n <= 0) return;
  const std::size_t bytes = (std::size_t)n * sizeof(float);
  if (rank_ != 0) {
    send_all(peers_[0], &n, sizeof n);
    send_all(peers_[0], p, bytes);
    recv_all(peers_[0], p, bytes);
    return;
  }
  std::vector<float> sum(p, p + n), buf((size_t)n);
  for (int r = 1; r < world_; r++) {
    std::int64_t m = 0;
    recv_all(peers_[(size_t)r], &m, sizeof m);
    if (m != n) fail("rank " + std::to_string(r) + " reduces " + std::to_string(m) + " values where rank 0 reduces " + std::to_string(n));
    recv_all(peers_[(size_t)r], buf.data(), bytes);
    for (std::int64_t i = 0; i < n; i++) sum[(size_t)i] += buf[(size_t)i];
  }
  for (std::int64_t i = 0; i < n; i++) p[i] = sum[(size_t)i] / (float)world_;
  for (int r = 1; r < world_; r++) send_all(peers_[(size_t)r], p, bytes);
}

}  // namespace cuda
}  // namespace gm

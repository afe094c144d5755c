// Optional wall-clock profile of the model's sections (GM_PROFILE=1): totals are printed to stderr
// at exit. Costs one getenv at start-up when off.
#pragma once
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

namespace gm {

struct Profile {
  bool on = std::getenv("GM_PROFILE") != nullptr;
  std::map<std::string, double> total;
  ~Profile() {
    if (!on) return;
    double all = 0;
    for (auto& [k, v] : total) all += v;
    for (auto& [k, v] : total) std::fprintf(stderr, "gm profile %-24s %9.1f ms %5.1f%%\n", k.c_str(), v * 1e3, 100 * v / all);
  }
  static Profile& get() {
    static Profile p;
    return p;
  }
};

class Section {
 public:
  explicit Section(const char* name) : name_(name), on_(Profile::get().on) {
    if (on_) t0_ = std::chrono::steady_clock::now();
  }
  ~Section() {
    if (on_) Profile::get().total[name_] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  const char* name_;
  bool on_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace gm

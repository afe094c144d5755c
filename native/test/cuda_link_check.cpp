// Link check of the CUDA launchers: takes the address of every launcher declared in
// native/cuda/kernels.h, for every storage type, so linking this file with the objects of
// native/cuda/*.cu fails when a declaration and its explicit instantiation disagree.
// packages/engine/test/cuda-kernels.test.ts links it with nvcc; it is never run (nothing here
// launches a kernel: no GPU needed).
#include <cstdio>

#include "../cuda/kernels.h"

using namespace gm::cuda;

static const void* volatile sink;
#define GM_USE(...) sink = reinterpret_cast<const void*>(&__VA_ARGS__)

template <typename T>
static void use_all() {
  GM_USE(embedding_forward<T>);
  GM_USE(embedding_backward<T>);
  GM_USE(rmsnorm_forward<T>);
  GM_USE(rmsnorm_backward<T>);
  GM_USE(gated_rmsnorm_forward<T>);
  GM_USE(gated_rmsnorm_backward<T>);
  GM_USE(conv1d_forward<T>);
  GM_USE(conv1d_backward<T>);
  GM_USE(softplus_forward<T>);
  GM_USE(softplus_backward<T>);
  GM_USE(gate_forward<T>);
  GM_USE(gate_backward<T>);
  GM_USE(blend_forward<T>);
  GM_USE(blend_backward<T>);
  GM_USE(reverse_forward<T>);
  GM_USE(reverse_backward<T>);
  GM_USE(bidir_merge_forward<T>);
  GM_USE(bidir_merge_backward<T>);
  GM_USE(silu_gate_forward<T>);
  GM_USE(silu_gate_backward<T>);
  GM_USE(argmax_rows<T>);
  GM_USE(scan_forward<T>);
  GM_USE(scan_backward<T>);
  GM_USE(ssd_scan_forward<T>);
  GM_USE(ssd_scan_backward<T>);
  GM_USE(cross_entropy_forward_backward<T>);
  GM_USE(adamw_update<T>);
  GM_USE(sum_squares<T>);
}

int main() {
  use_all<float>();
  use_all<bf16>();
  GM_USE(sum_values);
  GM_USE(clip_scale);
  GM_USE(neg_exp_forward);
  GM_USE(neg_exp_backward);
  GM_USE(ssd_scratch_floats);
  std::printf("linked\n");
  return 0;
}

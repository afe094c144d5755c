// Token embedding (native/src/ops/embedding.h). Forward: one thread per output element, a gather.
// Backward: one thread per (token group, column) of an EmbeddingPlan (shapes.h); it adds its group's
// rows in position order into the fp32 table gradient, the CPU op's order, so no atomics and the
// result is deterministic.
#pragma once
#include "common.cuh"

namespace gm {
namespace cuda {

inline Geometry embedding_forward_geometry(i64 M, i64 C) { return geometry_1d(M * C); }

template <typename T>
GM_HD inline void embedding_forward_body(const Thread& th, T* out, const std::int32_t* tokens, const T* table, i64 M,
                                         i64 C) {
  const i64 i = th.global_x();
  if (i >= M * C) return;
  const i64 m = i / C, c = i % C;
  out[i] = table[(i64)tokens[m] * C + c];
}

inline Geometry embedding_backward_geometry(i64 nseg, i64 C) { return geometry_1d(nseg * C); }

template <typename T>
GM_HD inline void embedding_backward_body(const Thread& th, float* dtable, const T* dout, const std::int32_t* tokens,
                                          const std::int32_t* order, const std::int32_t* seg_start, i64 nseg, i64 C) {
  const i64 i = th.global_x();
  if (i >= nseg * C) return;
  const i64 sgi = i / C, c = i % C;
  const i64 s0 = seg_start[sgi], s1 = seg_start[sgi + 1];
  float* dst = dtable + (i64)tokens[order[s0]] * C + c;
  float acc = *dst;
  for (i64 k = s0; k < s1; k++) acc += get(dout + (i64)order[k] * C + c);
  *dst = acc;
}

}  // namespace cuda
}  // namespace gm

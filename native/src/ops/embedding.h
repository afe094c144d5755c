// Token embedding lookup. Backward scatters into the table; columns are split between threads so
// every table entry is summed by one thread in token order (deterministic).
#pragma once
#include "common.h"

namespace gm {

template <typename T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* table, i64 M, i64 C) {
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; m++) std::memcpy(out + m * C, table + (i64)tokens[m] * C, sizeof(T) * C);
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const std::int32_t* tokens, i64 M, i64 C) {
  const i64 block = 32;
#pragma omp parallel for schedule(static)
  for (i64 c0 = 0; c0 < C; c0 += block) {
    const i64 c1 = c0 + block < C ? c0 + block : C;
    for (i64 m = 0; m < M; m++) {
      T* dst = dtable + (i64)tokens[m] * C;
      const T* src = dout + m * C;
      for (i64 c = c0; c < c1; c++) dst[c] += src[c];
    }
  }
}

}  // namespace gm

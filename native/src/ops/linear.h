// Linear layer through BLAS: out[M,O] = inp[M,I] * W[O,I]^T + bias[O].
// Leading dimensions let callers read and write column slices of wider buffers (in_proj's output is
// split into z | xBC | dt without copies). Backward accumulates into dinp, dweight and dbias.
#pragma once
#include "common.h"

namespace gm {

template <typename T>
void linear_forward(T* out, i64 ld_out, const T* inp, i64 ld_inp, const T* weight, const T* bias, i64 M, i64 I, i64 O) {
  gemm(false, true, M, O, I, T(1), inp, ld_inp, weight, I, T(0), out, ld_out);
  if (bias) {
#pragma omp parallel for schedule(static)
    for (i64 m = 0; m < M; m++) {
      T* row = out + m * ld_out;
      for (i64 o = 0; o < O; o++) row[o] += bias[o];
    }
  }
}

// dinp may be null (no gradient wanted), dbias may be null (no bias). With overwrite_dinp, dinp is
// written rather than accumulated into (saves zeroing a scratch buffer first).
template <typename T>
void linear_backward(T* dinp, i64 ld_dinp, T* dweight, T* dbias, const T* dout, i64 ld_dout, const T* inp, i64 ld_inp,
                     const T* weight, i64 M, i64 I, i64 O, bool overwrite_dinp = false) {
  if (M == 0) return;
  if (dinp) gemm(false, false, M, I, O, T(1), dout, ld_dout, weight, I, overwrite_dinp ? T(0) : T(1), dinp, ld_dinp);
  gemm(true, false, O, I, M, T(1), dout, ld_dout, inp, ld_inp, T(1), dweight, I);
  if (dbias) accumulate_columns(dbias, M, O, [&](i64 m, i64 o) { return dout[m * ld_dout + o]; });
}

}  // namespace gm

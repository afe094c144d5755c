// Small dense products for the chunked (SSD) scan: C[i, j] += sum_k A(i, k) * B[k, j], where
// A(i, k) = A[i * a_row + k * a_col] (so A or its transpose, any strides) and B's rows are
// contiguous. Matrices here are chunk x chunk or chunk x 64 and are used inside OpenMP tasks, so a
// register-tiled loop nest (4 x 16 tiles, vectorised over j) beats a BLAS call per product; it is a
// template so the finite-difference checks run it in double.
#pragma once
#include "common.h"

namespace gm {

template <typename T>
inline void mm_acc_tiled(T* C, i64 ldc, const T* A, i64 a_row, i64 a_col, const T* B, i64 ldb, i64 M, i64 K, i64 Nc) {
  const i64 M4 = M - M % 4, N16 = Nc - Nc % 16;
  for (i64 i = 0; i < M4; i += 4) {
    for (i64 j = 0; j < N16; j += 16) {
      T acc[4][16];
      for (int r = 0; r < 4; r++)
        for (int c = 0; c < 16; c++) acc[r][c] = C[(i + r) * ldc + j + c];
      for (i64 k = 0; k < K; k++) {
        const T* b = B + k * ldb + j;
        const T a0 = A[i * a_row + k * a_col], a1 = A[(i + 1) * a_row + k * a_col];
        const T a2 = A[(i + 2) * a_row + k * a_col], a3 = A[(i + 3) * a_row + k * a_col];
#pragma omp simd
        for (int c = 0; c < 16; c++) {
          acc[0][c] += a0 * b[c];
          acc[1][c] += a1 * b[c];
          acc[2][c] += a2 * b[c];
          acc[3][c] += a3 * b[c];
        }
      }
      for (int r = 0; r < 4; r++)
        for (int c = 0; c < 16; c++) C[(i + r) * ldc + j + c] = acc[r][c];
    }
  }
  // Remainders (chunk tails, odd widths): the plain loop.
  for (i64 i = 0; i < M; i++) {
    const i64 j0 = i < M4 ? N16 : 0;
    if (j0 >= Nc) continue;
    T* c = C + i * ldc;
    for (i64 k = 0; k < K; k++) {
      const T a = A[i * a_row + k * a_col];
      const T* b = B + k * ldb;
#pragma omp simd
      for (i64 j = j0; j < Nc; j++) c[j] += a * b[j];
    }
  }
}

// Through BLAS when A is plainly stored or transposed (these sizes run single-threaded inside
// OpenBLAS, so concurrent calls from the OpenMP tasks are safe); the tiled loops otherwise.
template <typename T>
inline void mm_acc(T* C, i64 ldc, const T* A, i64 a_row, i64 a_col, const T* B, i64 ldb, i64 M, i64 K, i64 Nc) {
  if (a_col == 1) gemm(false, false, M, Nc, K, T(1), A, a_row, B, ldb, T(1), C, ldc);
  else if (a_row == 1) gemm(true, false, M, Nc, K, T(1), A, a_col, B, ldb, T(1), C, ldc);
  else mm_acc_tiled(C, ldc, A, a_row, a_col, B, ldb, M, K, Nc);
}

}  // namespace gm

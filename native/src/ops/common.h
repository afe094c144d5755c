// Shared helpers for the CPU ops: BLAS overloads for float and double (the ops are templates so the
// finite-difference checks can run them in float64), OpenMP shims and small math functions.
#pragma once
#include <cblas.h>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace gm {

using i64 = std::int64_t;

// C = alpha * op(A) * op(B) + beta * C, row-major.
inline void gemm(bool ta, bool tb, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b,
                 i64 ldb, float beta, float* c, i64 ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
              alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}
inline void gemm(bool ta, bool tb, i64 m, i64 n, i64 k, double alpha, const double* a, i64 lda, const double* b,
                 i64 ldb, double beta, double* c, i64 ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
              alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

// exp that the compiler can vectorise (std::exp stays a scalar libm call without -ffast-math):
// Cephes' expf polynomial on x - n*ln2 scaled by 2^n, about 1 ulp over the clamped range. The
// double instantiation (finite-difference checks) uses std::exp.
template <typename T>
inline T vexp(T x) {
  return std::exp(x);
}
template <>
inline float vexp<float>(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  // round to nearest by adding 1.5 * 2^23 (no floor: GCC keeps floorf a libm call without -ffast-math)
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const std::int32_t bits = ((std::int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}
template <typename T>
inline T silu(T x) {
  return x * sigmoid(x);
}
// d silu(x) / dx
template <typename T>
inline T silu_grad(T x) {
  T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}
// torch.nn.functional.softplus with its default threshold of 20 (identity above it).
template <typename T>
inline T softplus(T x) {
  return x > T(20) ? x : std::log1p(vexp(x));
}
template <typename T>
inline T softplus_grad(T x) {
  return x > T(20) ? T(1) : sigmoid(x);
}

// Flush denormals to zero (FTZ + DAZ) on the calling thread and every OpenMP thread. SSM decays
// like exp(cumsum(dt * A)) and the states they scale drift into the denormal range, where x86 FP
// runs ~100x slower; values below 1.2e-38 do not matter to the model.
inline void flush_denormals() {
#if defined(__SSE2__)
  _mm_setcsr(_mm_getcsr() | 0x8040);
#ifdef _OPENMP
#pragma omp parallel
  _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
#endif
}

// dst[c] += sum over rows m of term(m, c), for c < C. Threads own blocks of columns and sum rows in
// order, so parameter gradients (biases, norm weights) are bitwise reproducible for any thread count.
template <typename T, typename Term>
inline void accumulate_columns(T* dst, i64 M, i64 C, Term&& term) {
  constexpr i64 block = 32;
#pragma omp parallel for schedule(static)
  for (i64 c0 = 0; c0 < C; c0 += block) {
    const i64 n = c0 + block < C ? block : C - c0;
    T acc[block] = {};
    for (i64 m = 0; m < M; m++)
      for (i64 k = 0; k < n; k++) acc[k] += term(m, c0 + k);
    for (i64 k = 0; k < n; k++) dst[c0 + k] += acc[k];
  }
}

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace gm

// Elementwise ops, one thread per element: softplus step sizes (native/src/ops/softplus.h), the
// combine modes of a BiMamba layer (native/src/ops/combine.h) and the per-row direction reversal
// with padding of native/src/model.cpp (build_mixer_input, the [f | b] rows and their backward).
#pragma once
#include "common.cuh"

namespace gm {
namespace cuda {

inline Geometry elementwise_geometry(i64 M, i64 C) { return geometry_1d(M * C); }

// ---- softplus: out[m, c] = softplus(x[m, c] + bias[c]); backward accumulates dx and (two passes) dbias.
template <typename T>
GM_HD inline void softplus_forward_body(const Thread& th, T* out, i64 ld_out, const T* x, i64 ld_x, const T* bias, i64 M,
                                        i64 C) {
  const i64 i = th.global_x();
  if (i >= M * C) return;
  const i64 m = i / C, c = i % C;
  put(out + m * ld_out + c, softplusf(get(x + m * ld_x + c) + get(bias + c)));
}
template <typename T>
GM_HD inline void softplus_backward_dx_body(const Thread& th, T* dx, i64 ld_dx, const T* dout, i64 ld_dout, const T* x,
                                            i64 ld_x, const T* bias, i64 M, i64 C) {
  const i64 i = th.global_x();
  if (i >= M * C) return;
  const i64 m = i / C, c = i % C;
  add(dx + m * ld_dx + c, get(dout + m * ld_dout + c) * softplus_gradf(get(x + m * ld_x + c) + get(bias + c)));
}
template <typename T>
GM_HD inline void softplus_dbias_partial(const Thread& th, float* scratch, const T* dout, i64 ld_dout, const T* x, i64 ld_x,
                                         const T* bias, i64 M, i64 C) {
  const i64 i = th.global_x();
  if (i >= colsum_blocks(M) * C) return;
  const i64 rb = i / C, c = i % C, m1 = imin(M, (rb + 1) * kColRows);
  const float bc = get(bias + c);
  float acc = 0.f;
  for (i64 m = rb * kColRows; m < m1; m++) acc += get(dout + m * ld_dout + c) * softplus_gradf(get(x + m * ld_x + c) + bc);
  scratch[i] = acc;
}

// ---- combine. fb is [M, 2C]: f in columns [0, C), b in [C, 2C).
// gate: pre holds W[f;b] + c on entry and is overwritten with s = sigmoid(pre); out = s f + (1 - s) b.
template <typename T>
GM_HD inline void gate_forward_body(const Thread& th, T* out, T* pre_to_s, const T* fb, i64 M, i64 C) {
  const i64 i = th.global_x();
  if (i >= M * C) return;
  const i64 m = i / C, c = i % C;
  put(pre_to_s + i, sigmoidf(get(pre_to_s + i)));
  const float s = get(pre_to_s + i);
  put(out + i, s * get(fb + m * 2 * C + c) + (1.f - s) * get(fb + m * 2 * C + C + c));
}
// Writes dpre, accumulates into dfb.
template <typename T>
GM_HD inline void gate_backward_body(const Thread& th, T* dfb, T* dpre, const T* dout, const T* fb, const T* s, i64 M,
                                     i64 C) {
  const i64 i = th.global_x();
  if (i >= M * C) return;
  const i64 m = i / C, c = i % C;
  const float g = get(dout + i), sv = get(s + i), f = get(fb + m * 2 * C + c), b = get(fb + m * 2 * C + C + c);
  add(dfb + m * 2 * C + c, g * sv);
  add(dfb + m * 2 * C + C + c, g * (1.f - sv));
  put(dpre + i, g * (f - b) * sv * (1.f - sv));
}
// mean (0.5, 0.5) and sum (1, 1): out = wf f + wb b.
template <typename T>
GM_HD inline void blend_forward_body(const Thread& th, T* out, const T* fb, float wf, float wb, i64 M, i64 C) {
  const i64 i = th.global_x();
  if (i >= M * C) return;
  const i64 m = i / C, c = i % C;
  put(out + i, wf * get(fb + m * 2 * C + c) + wb * get(fb + m * 2 * C + C + c));
}
template <typename T>
GM_HD inline void blend_backward_body(const Thread& th, T* dfb, const T* dout, float wf, float wb, i64 M, i64 C) {
  const i64 i = th.global_x();
  if (i >= M * C) return;
  const i64 m = i / C, c = i % C;
  const float g = get(dout + i);
  add(dfb + m * 2 * C + c, wf * g);
  add(dfb + m * 2 * C + C + c, wb * g);
}

// ---- per-row direction reversal with padding: position t of row b reads src(t) = len - 1 - t for
// t < len and t itself at pads (pads stay in place). src is an involution, so the backward is the
// same gather: din[t] += dout[src(t)].
GM_HD inline i64 reversed_position(i64 t, i64 len) { return t < len ? len - 1 - t : t; }

inline Geometry reverse_geometry(i64 B, i64 L, i64 C) { return geometry_1d(B * L * C); }
template <typename T>
GM_HD inline void reverse_forward_body(const Thread& th, T* out, i64 ld_out, const T* in, i64 ld_in,
                                       const std::int32_t* lengths, i64 B, i64 L, i64 C) {
  const i64 i = th.global_x();
  if (i >= B * L * C) return;
  const i64 m = i / C, c = i % C, b = m / L, t = m % L;
  out[m * ld_out + c] = in[(b * L + reversed_position(t, lengths[b])) * ld_in + c];
}
template <typename T>
GM_HD inline void reverse_backward_body(const Thread& th, T* din, i64 ld_din, const T* dout, i64 ld_dout,
                                        const std::int32_t* lengths, i64 B, i64 L, i64 C) {
  const i64 i = th.global_x();
  if (i >= B * L * C) return;
  const i64 m = i / C, c = i % C, b = m / L, t = m % L;
  add(din + m * ld_din + c, get(dout + (b * L + reversed_position(t, lengths[b])) * ld_dout + c));
}
// The layer's [f | b] rows from the mixer output over 2B rows (forward rows, then reversed rows) and
// the layer input x [B, L, C]: f = mix[b, t] + x[b, t], b = mix[B + b, src(t)] + x[b, t].
template <typename T>
GM_HD inline void bidir_merge_forward_body(const Thread& th, T* fb, const T* mix, const T* x, const std::int32_t* lengths,
                                           i64 B, i64 L, i64 C) {
  const i64 i = th.global_x();
  if (i >= B * L * C) return;
  const i64 m = i / C, c = i % C, b = m / L, t = m % L;
  const float xv = get(x + i);
  put(fb + m * 2 * C + c, get(mix + i) + xv);
  put(fb + m * 2 * C + C + c, get(mix + ((B + b) * L + reversed_position(t, lengths[b])) * C + c) + xv);
}
// Backward (writes, as the model does): dx = df + db; dmix forward rows = df, reversed rows = rev(db).
template <typename T>
GM_HD inline void bidir_merge_backward_body(const Thread& th, T* dx, T* dmix, const T* dfb, const std::int32_t* lengths,
                                            i64 B, i64 L, i64 C) {
  const i64 i = th.global_x();
  if (i >= B * L * C) return;
  const i64 m = i / C, c = i % C, b = m / L, t = m % L;
  const float df = get(dfb + m * 2 * C + c), db = get(dfb + m * 2 * C + C + c);
  put(dx + i, df + db);
  put(dmix + i, df);
  dmix[((B + b) * L + t) * C + c] = dfb[(b * L + reversed_position(t, lengths[b])) * 2 * C + C + c];
}

// ---- Mamba-1's gate (model.cpp mamba1_gate / mixer_backward): out = y * SiLU(z), y and out [M, C]
// contiguous, z with leading dimension ld_z (in_proj's z columns). Backward accumulates
// dy += g * SiLU(z) and dz += g * y * SiLU'(z) (the CPU path writes both into zeroed buffers).
template <typename T>
GM_HD inline void silu_gate_forward_body(const Thread& th, T* out, const T* y, const T* z, i64 ld_z, i64 M, i64 C) {
  const i64 i = th.global_x();
  if (i >= M * C) return;
  const i64 m = i / C, c = i % C;
  put(out + i, get(y + i) * siluf(get(z + m * ld_z + c)));
}
template <typename T>
GM_HD inline void silu_gate_backward_body(const Thread& th, T* dy, T* dz, i64 ld_dz, const T* dout, const T* y, const T* z,
                                          i64 ld_z, i64 M, i64 C) {
  const i64 i = th.global_x();
  if (i >= M * C) return;
  const i64 m = i / C, c = i % C;
  const float g = get(dout + i), zv = get(z + m * ld_z + c);
  add(dy + i, g * siluf(zv));
  add(dz + m * ld_dz + c, g * get(y + i) * silu_gradf(zv));
}

// ---- argmax over each row of x [M, V] (logits): one block per row; ties go to the smallest index
// (as the CPU's first-max loop). Each thread's best (value, index) is packed into one 64-bit key,
// an order-preserving image of the float above ~index, so the block max is a plain integer max.
inline Geometry argmax_geometry(i64 M, i64 V) { return geometry_rows(M, V); }
struct ArgMaxOp {
  template <typename V>
  GM_HD V operator()(V a, V b) const { return a > b ? a : b; }
  template <typename V>
  GM_HD static V identity() { return V(0); }
};
GM_HD inline unsigned long long argmax_key(float v, i64 idx) {
  std::uint32_t u;
  memcpy(&u, &v, sizeof u);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // float order -> unsigned order
  return ((unsigned long long)u << 32) | (unsigned long long)(0xffffffffu - (std::uint32_t)idx);
}
GM_HD inline std::int32_t argmax_index(unsigned long long key) {
  return (std::int32_t)(0xffffffffu - (std::uint32_t)(key & 0xffffffffull));
}
template <typename T>
GM_HD inline unsigned long long argmax_partial(const Thread& th, const T* x, i64 V) {
  const i64 m = th.block.x;
  unsigned long long best = 0;
  for (i64 v = th.tid(); v < V; v += th.nthreads()) {
    const unsigned long long k = argmax_key(get(x + m * V + v), v);
    best = k > best ? k : best;
  }
  return best;
}
GM_HD inline void argmax_finish(const Thread& th, unsigned long long key, std::int32_t* out) {
  if (th.tid() == 0) out[th.block.x] = argmax_index(key);
}

// ---- Mamba-2's per-head decay A = -exp(A_log) (fp32 master values in, fp32 out) and its backward
// dA_log += dA * A (as model.cpp step_sizes / mixer_backward).
inline Geometry neg_exp_geometry(i64 n) { return geometry_1d(n); }
GM_HD inline void neg_exp_forward_body(const Thread& th, float* A, const float* A_log, i64 n) {
  const i64 i = th.global_x();
  if (i >= n) return;
  A[i] = -expf(A_log[i]);
}
GM_HD inline void neg_exp_backward_body(const Thread& th, float* dA_log, const float* dA, const float* A, i64 n) {
  const i64 i = th.global_x();
  if (i >= n) return;
  dA_log[i] += dA[i] * A[i];
}

}  // namespace cuda
}  // namespace gm

// The GeneMamba tensor table in the reference state-dict's order and names, written once for the
// CPU model (model.cpp) and the GPU model (native/cuda/gpu_model.cpp). Plain C++ with no BLAS or
// CUDA headers, so both can include it; `Cfg` is either model's config (same field names).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gm {

// Offsets of one layer's tensors in the flat buffers (-1 when the mixer has no such tensor).
struct LayerOffsets {
  std::int64_t in_proj = -1, conv_w = -1, conv_b = -1, dt_bias = -1, A_log = -1, D = -1, norm_w = -1, out_proj = -1;
  std::int64_t x_proj = -1, dt_proj_w = -1, dt_proj_b = -1;  // Mamba-1
};

struct ModelOffsets {
  std::vector<LayerOffsets> layers;
  std::int64_t emb = -1, aggr_w = -1, aggr_b = -1, norm_f = -1, head_w = -1, head_b = -1;
};

// add(name, shape, decay) appends one tensor and returns its offset.
template <class Cfg, class Add>
ModelOffsets lay_out_tensors(const Cfg& cfg, bool mamba2, Add add) {
  using Shape = std::vector<std::int64_t>;
  const std::int64_t d = cfg.d_model, E = cfg.d_inner(), H = cfg.nheads(), N = cfg.d_state, K = cfg.d_conv;
  ModelOffsets m;
  m.emb = add("embeddings.weight", Shape{cfg.vocab_size, d}, false);
  m.layers.resize((std::size_t)cfg.n_layer);
  for (std::int64_t l = 0; l < cfg.n_layer; l++) {
    const std::string p = "mamba_mixer.layers." + std::to_string(l) + ".mamba.";
    LayerOffsets& o = m.layers[(std::size_t)l];
    o.in_proj = add(p + "in_proj.weight", Shape{cfg.d_in_proj(), d}, true);
    o.conv_w = add(p + "conv1d.weight", Shape{cfg.conv_dim(), 1, K}, true);
    o.conv_b = add(p + "conv1d.bias", Shape{cfg.conv_dim()}, false);
    if (mamba2) {
      o.dt_bias = add(p + "dt_bias", Shape{H}, false);
      o.A_log = add(p + "A_log", Shape{H}, false);
      o.D = add(p + "D", Shape{H}, false);
      o.norm_w = add(p + "norm.weight", Shape{E}, false);
    } else {
      o.x_proj = add(p + "x_proj.weight", Shape{cfg.xproj_dim(), E}, true);
      o.dt_proj_w = add(p + "dt_proj.weight", Shape{E, cfg.dt_rank}, true);
      o.dt_proj_b = add(p + "dt_proj.bias", Shape{E}, false);
      o.A_log = add(p + "A_log", Shape{E, N}, false);
      o.D = add(p + "D", Shape{E}, false);
    }
    o.out_proj = add(p + "out_proj.weight", Shape{d, E}, true);
  }
  if (cfg.has_aggr()) {
    m.aggr_w = add("mamba_mixer.aggr.weight", Shape{d, 2 * d}, true);
    m.aggr_b = add("mamba_mixer.aggr.bias", Shape{d}, false);
  }
  m.norm_f = add("norm_f.weight", Shape{d}, false);
  m.head_w = add("lm_head.weight", Shape{cfg.vocab_size, d}, true);
  m.head_b = add("lm_head.bias", Shape{cfg.vocab_size}, false);
  return m;
}

}  // namespace gm

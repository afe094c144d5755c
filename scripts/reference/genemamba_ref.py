#!/usr/bin/python3
"""Independent PyTorch reference of the GeneMamba model that gm's C++ engine is tested against.

Run with Debian's interpreter, /usr/bin/python3 (torch + numpy; the pyenv `python3` has no torch).

The model is written directly from the equations of the gm engine spec and the GeneMamba model
reference (genemamba-model.md, sections 2-6); it imports nothing from mamba_ssm and
writes no backward pass: every gradient comes from autograd over the plain forward maths, which is
what makes it an independent check of the engine's hand-written backward.

Contents
  * Config               gm `config.json` fields with their defaults.
  * GeneMamba            the model (nn.Module whose state_dict() names match the reference
                         checkpoints; ordered_parameters() gives them in the spec's file order),
                         dtype-generic, two forward paths:
                           path="padded"   right-padded batch, valid-mask before/after the conv,
                                           per-sequence reversal, both directions as ONE 2B batch;
                           path="unpadded" each sequence sliced to its length and run alone with a
                                           plain flip (no mask at all): the fixture ground truth.
  * scans                mamba2_scan_sequential, mamba2_scan_ssd (chunked SSD), mamba1_scan_sequential.
  * save_safetensors / load_safetensors   the safetensors format written by hand.
  * model_from_tensors, lm_loss, decay_param_names, make_adamw   loading weights, the loss and the
                         optimiser set-up shared by the fixture generator, selfcheck and the
                         benchmark peer.
"""

from __future__ import annotations

import json
import math
import struct
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MIXERS = ("mamba2", "mamba1")
COMBINES = ("gate", "mean", "sum", "concat", "unidirectional")
SCANS = ("sequential", "ssd")
IGNORE_INDEX = -100


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass
class Config:
    vocab_size: int
    d_model: int
    n_layer: int
    mixer: str = "mamba2"
    combine: str = "gate"
    d_state: int = 64
    headdim: int = 64  # mamba2 only
    expand: int = 2
    d_conv: int = 4
    dt_rank: Optional[int] = None  # mamba1 only; None -> ceil(d_model / 16)
    norm_eps: float = 1e-5
    pad_token_id: int = 1

    def __post_init__(self):
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {self.mixer!r}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {self.combine!r}")
        if self.mixer == "mamba2" and self.d_inner % self.headdim != 0:
            raise ValueError(f"d_inner {self.d_inner} is not a multiple of headdim {self.headdim}")
        if self.mixer == "mamba1" and self.dt_rank is None:
            self.dt_rank = math.ceil(self.d_model / 16)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = set(cls.__dataclass_fields__)
        # gm's config.json also carries the model type and the engine's scan chunk (a speed knob).
        d = {k: v for k, v in d.items() if k not in ("model_type", "chunk_size")}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        """The gm config.json text; fields that do not apply to the mixer are left out."""
        d = asdict(self)
        if self.mixer == "mamba2":
            d.pop("dt_rank")
        else:
            d.pop("headdim")
        return json.dumps(d)


# --------------------------------------------------------------------------------------------------
# Initialisation helpers (explicit generator so fixtures are reproducible without global RNG state)
# --------------------------------------------------------------------------------------------------


def _uniform(shape, bound, g, dtype):
    return (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) * bound


def _dt_bias_init(n, g, dtype, dt_min=1e-3, dt_max=0.1, floor=1e-4):
    # dt log-uniform in [dt_min, dt_max]; store softplus^-1(dt) = dt + log(-expm1(-dt)) so that
    # Delta = softplus(0 + dt_bias) starts at dt for a zero projected input.
    u = torch.rand(n, generator=g, dtype=torch.float64)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return (dt + torch.log(-torch.expm1(-dt))).to(dtype)


def _holder(**tensors: torch.Tensor) -> nn.Module:
    """A bare module owning parameters under fixed names (gives `in_proj.weight` etc. in
    state_dict() without nn.Linear/nn.Conv1d running their own RNG-consuming init)."""
    m = nn.Module()
    for k, v in tensors.items():
        m.register_parameter(k, nn.Parameter(v))
    return m


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv[c, t] = bias_c + sum_k w[c, 0, k] * x[c, t - (K-1) + k] with a zero left pad.

    x [b, T, C] channels-last, weight (C, 1, K), bias (C). Written as K shifted multiply-adds
    (not F.conv1d) so it is the equation itself; selfcheck compares it with F.conv1d once.
    """
    K = weight.shape[-1]
    T = x.shape[1]
    xp = F.pad(x, (0, 0, K - 1, 0))  # zero rows in front of t = 0
    out = bias
    for k in range(K):
        out = out + weight[:, 0, k] * xp[:, k : k + T, :]
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def mamba2_scan_sequential(x, delta, A, B, C):
    """Scalar-A selective scan, one time step per loop iteration.

    x [b, T, H, P], delta [b, T, H], A [H], B, C [b, T, N] (one group shared by all heads).
    S_t = exp(delta_t A) S_{t-1} + delta_t x_t (outer) B_t ;  y_t = S_t C_t   (D term added by caller)
    Each step is one fused op over (batch, head, P, N); autograd keeps one [b, H, P, N] state
    per step, which is the memory cost the benchmark estimates.
    """
    b, T, H, P = x.shape
    N = B.shape[-1]
    # unbind rather than x[:, t]: the backward of unbind is one stack, while each x[:, t] would
    # scatter its gradient into a full-size zero tensor (O(T^2) time under autograd)
    a = torch.exp(delta * A)[..., None, None].unbind(1)  # T x [b, H, 1, 1]
    dx = (x * delta[..., None])[..., None].unbind(1)  # T x [b, H, P, 1]
    Bt = B[:, :, None, None, :].unbind(1)  # T x [b, 1, 1, N]
    Ct = C[..., None].unbind(1)  # T x [b, N, 1]
    S = x.new_zeros(b, H, P, N)
    ys = []
    for t in range(T):
        # the new state is the fresh input product, updated in place: one allocation per step
        # (a temporary per step fragments glibc's heap and doubles the RSS of the saved states)
        S_new = dx[t] * Bt[t]
        S = S_new.addcmul_(a[t], S)
        # [b, H*P, N] @ [b, N, 1]: a plain bmm, C is not broadcast over heads
        ys.append(torch.bmm(S.view(b, H * P, N), Ct[t]).view(b, H, P))
    return torch.stack(ys, dim=1)


def segsum(x: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = sum_{k=j+1..i} x[..., k] for i >= j, -inf above the diagonal.

    Built by a masked cumulative sum rather than cs_i - cs_j, so no large cumulative sums are
    subtracted (stable in float32 for long chunks); this is ssd_minimal's `segsum`.
    """
    T = x.shape[-1]
    xx = x[..., None].expand(*x.shape, T)  # xx[..., i, j] = x_i
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), -1)
    s = torch.cumsum(xx.masked_fill(~strict, 0), dim=-2)
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), 0)
    return s.masked_fill(~lower, -math.inf)


def mamba2_scan_ssd(x, delta, A, B, C, chunk: int = 256):
    """The same scan in the chunked state-space-duality form (reference section 4.6).

    Shapes as mamba2_scan_sequential. With Q = chunk (shrunk to T when T < Q), the sequence is
    zero-padded at the END to a multiple of Q (delta = 0 there: decay 1 and no input, and the pad
    only follows real tokens, so it changes nothing before it; its outputs are dropped).
      1. intra-chunk  Y_diag = ((C B^T) * exp(segsum(dA))) (delta x)
      2. chunk states S_c = sum_s exp(cs_last - cs_s) delta_s x_s (outer) B_s
      3. inter-chunk  S_in[c] = exp(cs_last[c-1]) S_in[c-1] + S_{c-1}   (a scan over chunks)
      4. output       Y_off = exp(cs) C S_in
    """
    b, T, H, P = x.shape
    N = B.shape[-1]
    Q = max(1, min(chunk, T))
    nc = -(-T // Q)
    pad = nc * Q - T
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        delta = F.pad(delta, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))

    xd = (x * delta[..., None]).view(b, nc, Q, H, P).permute(0, 3, 1, 2, 4)  # [b, H, c, Q, P]
    dA = (delta * A).view(b, nc, Q, H).permute(0, 3, 1, 2)  # [b, H, c, Q]
    Bc = B.view(b, nc, Q, N)
    Cc = C.view(b, nc, Q, N)
    cs = torch.cumsum(dA, dim=-1)  # inclusive in-chunk cumsum

    # 1. intra-chunk (attention-like, causal decay mask); C B^T is shared by all heads
    CB = torch.matmul(Cc, Bc.transpose(-1, -2))  # [b, c, Q(l), Q(s)]
    M = torch.exp(segsum(dA)) * CB[:, None]  # [b, H, c, l, s]
    Y_diag = torch.matmul(M, xd)  # [b, H, c, Q, P]

    # 2. state at the end of each chunk from that chunk's inputs alone
    decay_to_end = torch.exp(cs[..., -1:] - cs)  # [b, H, c, Q]
    states = torch.matmul((xd * decay_to_end[..., None]).transpose(-1, -2), Bc[:, None])  # [b,H,c,P,N]

    # 3. recurrence over chunk totals: state entering chunk k
    chunk_decay = torch.exp(cs[..., -1])  # [b, H, c]
    S = x.new_zeros(b, H, P, N)
    entering = []
    for k in range(nc):
        entering.append(S)
        S = chunk_decay[:, :, k, None, None] * S + states[:, :, k]
    S_in = torch.stack(entering, dim=2)  # [b, H, c, P, N]

    # 4. contribution of the entering state, decayed to each position
    Y_off = torch.matmul(Cc[:, None], S_in.transpose(-1, -2)) * torch.exp(cs)[..., None]  # [b,H,c,Q,P]

    Y = (Y_diag + Y_off).permute(0, 2, 3, 1, 4).reshape(b, nc * Q, H, P)
    return Y[:, :T]


def mamba1_scan_sequential(x, delta, A, B, C):
    """Per-channel selective scan (S6). x, delta [b, T, E], A [E, N], B, C [b, T, N].
    h_t = exp(delta_t[c] A[c, :]) h_{t-1} + delta_t[c] B_t x_t[c] ;  y_t[c] = h_t . C_t
    """
    b, T, E = x.shape
    N = A.shape[-1]
    a = torch.exp(delta[..., None] * A).unbind(1)  # T x [b, E, N]
    dx = (delta * x)[..., None].unbind(1)  # T x [b, E, 1]
    Bt = B[:, :, None, :].unbind(1)  # T x [b, 1, N]
    Ct = C[..., None].unbind(1)  # T x [b, N, 1]
    h = x.new_zeros(b, E, N)
    ys = []
    for t in range(T):
        h_new = dx[t] * Bt[t]  # one allocation per step, as in mamba2_scan_sequential
        h = h_new.addcmul_(a[t], h)
        ys.append(torch.bmm(h, Ct[t])[..., 0])
    return torch.stack(ys, dim=1)


# --------------------------------------------------------------------------------------------------
# Mixers
# --------------------------------------------------------------------------------------------------


class Mamba2Mixer(nn.Module):
    """Mamba-2 mixer, ngroups = 1, gated RMSNorm with the gate before the norm."""

    def __init__(self, cfg: Config, g: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.cfg = cfg
        d, E, N, H, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.nheads, cfg.d_conv
        conv_dim = E + 2 * N
        # registration order == parameter order in the files
        self.in_proj = _holder(weight=_uniform((2 * E + 2 * N + H, d), d**-0.5, g, dtype))
        self.conv1d = _holder(
            weight=_uniform((conv_dim, 1, K), K**-0.5, g, dtype),
            bias=_uniform((conv_dim,), K**-0.5, g, dtype),
        )
        self.dt_bias = nn.Parameter(_dt_bias_init(H, g, dtype))
        self.A_log = nn.Parameter(torch.log(1 + 15 * torch.rand(H, generator=g, dtype=torch.float64)).to(dtype))
        self.D = nn.Parameter(torch.ones(H, dtype=dtype))
        self.norm = _holder(weight=torch.ones(E, dtype=dtype))
        self.out_proj = _holder(weight=_uniform((d, E), E**-0.5, g, dtype))

    def forward(self, u, mask=None, scan="sequential", chunk=256):
        """u [b, T, d]; mask [b, T] (1 = valid) or None when no row is padded."""
        cfg = self.cfg
        E, N, H, P = cfg.d_inner, cfg.d_state, cfg.nheads, cfg.headdim
        b, T, _ = u.shape
        zxbcdt = F.linear(u, self.in_proj.weight)
        z, xBC, dt = torch.split(zxbcdt, [E, E + 2 * N, H], dim=-1)
        # masking before the conv keeps pads out of valid tokens' windows; after it because
        # SiLU(conv bias) != 0 would otherwise feed pads into the state (reference section 6)
        if mask is not None:
            xBC = xBC * mask[..., None]
        xBC = F.silu(causal_depthwise_conv(xBC, self.conv1d.weight, self.conv1d.bias))
        if mask is not None:
            xBC = xBC * mask[..., None]
        x, B, C = torch.split(xBC, [E, N, N], dim=-1)
        x = x.reshape(b, T, H, P)
        delta = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log)
        if scan == "sequential":
            y = mamba2_scan_sequential(x, delta, A, B, C)
        elif scan == "ssd":
            y = mamba2_scan_ssd(x, delta, A, B, C, chunk)
        else:
            raise ValueError(f"unknown scan {scan!r}")
        y = y + self.D[:, None] * x
        gated = y.reshape(b, T, E) * F.silu(z)
        o = rms_norm(gated, self.norm.weight, 1e-5)
        return F.linear(o, self.out_proj.weight)


class Mamba1Mixer(nn.Module):
    """Mamba-1 block (mamba_simple.Mamba): per-channel A, low-rank dt, output gate without norm."""

    def __init__(self, cfg: Config, g: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.cfg = cfg
        d, E, N, R, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
        self.in_proj = _holder(weight=_uniform((2 * E, d), d**-0.5, g, dtype))
        self.conv1d = _holder(
            weight=_uniform((E, 1, K), K**-0.5, g, dtype),
            bias=_uniform((E,), K**-0.5, g, dtype),
        )
        self.x_proj = _holder(weight=_uniform((R + 2 * N, E), E**-0.5, g, dtype))
        self.dt_proj = _holder(weight=_uniform((E, R), R**-0.5, g, dtype), bias=_dt_bias_init(E, g, dtype))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float64)).repeat(E, 1).to(dtype))
        self.D = nn.Parameter(torch.ones(E, dtype=dtype))
        self.out_proj = _holder(weight=_uniform((d, E), E**-0.5, g, dtype))

    def forward(self, u, mask=None, scan="sequential", chunk=256):
        cfg = self.cfg
        E, N, R = cfg.d_inner, cfg.d_state, cfg.dt_rank
        if scan != "sequential":
            raise ValueError("the mamba1 mixer has only the sequential scan")
        xz = F.linear(u, self.in_proj.weight)
        x, z = torch.split(xz, [E, E], dim=-1)
        if mask is not None:
            x = x * mask[..., None]
        x = F.silu(causal_depthwise_conv(x, self.conv1d.weight, self.conv1d.bias))
        if mask is not None:
            x = x * mask[..., None]
        dt_lr, B, C = torch.split(F.linear(x, self.x_proj.weight), [R, N, N], dim=-1)
        delta = F.softplus(F.linear(dt_lr, self.dt_proj.weight) + self.dt_proj.bias)
        A = -torch.exp(self.A_log)
        y = mamba1_scan_sequential(x, delta, A, B, C) + self.D * x
        y = y * F.silu(z)
        return F.linear(y, self.out_proj.weight)


class EncoderLayer(nn.Module):
    """Holds the mixer under `.mamba` so names read mamba_mixer.layers.{i}.mamba.*; the residual
    is added by the caller per direction (M(x) + x)."""

    def __init__(self, cfg, g, dtype):
        super().__init__()
        self.mamba = (Mamba2Mixer if cfg.mixer == "mamba2" else Mamba1Mixer)(cfg, g, dtype)


class BiMambaStack(nn.Module):
    def __init__(self, cfg, g, dtype):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(cfg, g, dtype) for _ in range(cfg.n_layer)])
        if cfg.combine in ("gate", "concat"):
            d = cfg.d_model
            self.aggr = _holder(
                weight=_uniform((d, 2 * d), (2 * d) ** -0.5, g, dtype),
                bias=_uniform((d,), (2 * d) ** -0.5, g, dtype),
            )


# --------------------------------------------------------------------------------------------------
# Reversal of each sequence's valid prefix
# --------------------------------------------------------------------------------------------------


def reversal_index(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """idx[b, t] = len_b - 1 - t for t < len_b, else t (pads stay trailing). An involution."""
    t = torch.arange(L, device=lengths.device)[None, :]
    ln = lengths[:, None].to(t.dtype)
    return torch.where(t < ln, ln - 1 - t, t)


def reverse_valid(x: torch.Tensor, idx: Optional[torch.Tensor]) -> torch.Tensor:
    """rev(X)[b, t] = X[b, idx[b, t]]; idx None means no padding (a plain flip)."""
    if idx is None:
        return x.flip(1)
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class GeneMamba(nn.Module):
    """embeddings -> n_layer BiMamba layers -> RMSNorm * norm_f -> lm_head (untied, with bias)."""

    def __init__(self, cfg: Config, seed: int = 0, dtype: torch.dtype = torch.float64, perturb: bool = False):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        d, V = cfg.d_model, cfg.vocab_size
        self.embeddings = _holder(weight=torch.randn((V, d), generator=g, dtype=dtype))
        self.mamba_mixer = BiMambaStack(cfg, g, dtype)
        self.norm_f = _holder(weight=torch.ones(d, dtype=dtype))
        self.lm_head = _holder(weight=_uniform((V, d), d**-0.5, g, dtype), bias=_uniform((V,), d**-0.5, g, dtype))
        if perturb:
            # Fixtures only: D, the gated-norm weights and norm_f start at exactly 1, so an engine
            # that ignored them would still match; 1 + 0.1 N(0,1) makes them observable. Mamba-1's
            # A_log = log(n+1) is the same for every channel, which would hide an engine that
            # indexes A by state only; + 0.1 N(0,1) makes each channel's A distinct.
            with torch.no_grad():
                for name, p in self.named_parameters():
                    noise = lambda: 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
                    if name.endswith((".D", ".norm.weight")) or name == "norm_f.weight":
                        p.copy_(1 + noise())
                    elif cfg.mixer == "mamba1" and name.endswith(".A_log"):
                        p.add_(noise())

    # ---- parameter names in the file order of the spec ------------------------------------------

    def param_names(self) -> List[str]:
        """embeddings, layers 0..n-1 (each in the spec's per-mixer order), aggr, norm_f, lm_head.
        (nn.Module.state_dict() would list a mixer's own dt_bias/A_log/D before its submodules.)"""
        if self.cfg.mixer == "mamba2":
            inner = ["in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight", "out_proj.weight"]
        else:
            inner = ["in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                     "dt_proj.bias", "A_log", "D", "out_proj.weight"]
        names = ["embeddings.weight"]
        for i in range(self.cfg.n_layer):
            names += [f"mamba_mixer.layers.{i}.mamba.{n}" for n in inner]
        if self.cfg.combine in ("gate", "concat"):
            names += ["mamba_mixer.aggr.weight", "mamba_mixer.aggr.bias"]
        names += ["norm_f.weight", "lm_head.weight", "lm_head.bias"]
        assert sorted(names) == sorted(n for n, _ in self.named_parameters())
        return names

    def ordered_parameters(self) -> "OrderedDict[str, nn.Parameter]":
        params = dict(self.named_parameters())
        return OrderedDict((n, params[n]) for n in self.param_names())

    # ---- one BiMamba layer on a (possibly padded) batch -----------------------------------------

    def _layer_padded(self, i, x, mask, idx, scan, chunk, reverse):
        mixer = self.mamba_mixer.layers[i].mamba
        if self.cfg.combine == "unidirectional":
            return mixer(x, mask, scan, chunk) + x
        B = x.shape[0]
        # both directions as one 2B batch through one mixer call
        if reverse == "valid":
            # rev keeps pads trailing, so the reversed rows have the same mask
            U = torch.cat([x, reverse_valid(x, idx)], dim=0)
            M2 = None if mask is None else torch.cat([mask, mask], dim=0)
        elif reverse == "plain":
            # test-only variant: a full flip makes the pads LEAD the reversed rows, and only the
            # conv masks keep them out of the state (reference section 6)
            U = torch.cat([x, x.flip(1)], dim=0)
            M2 = None if mask is None else torch.cat([mask, mask.flip(1)], dim=0)
        else:
            raise ValueError(f"unknown reverse {reverse!r}")
        Y = mixer(U, M2, scan, chunk) + U
        f = Y[:B]
        b = reverse_valid(Y[B:], idx) if reverse == "valid" else Y[B:].flip(1)
        return self._combine(f, b)

    def _layer_single(self, i, x, scan, chunk):
        """One unpadded sequence x [1, T, d]: plain flips, no mask, directions as separate calls."""
        mixer = self.mamba_mixer.layers[i].mamba
        f = mixer(x, None, scan, chunk) + x
        if self.cfg.combine == "unidirectional":
            return f
        xr = x.flip(1)
        b = (mixer(xr, None, scan, chunk) + xr).flip(1)
        return self._combine(f, b)

    def _combine(self, f, b):
        mode = self.cfg.combine
        if mode == "gate":
            z = torch.sigmoid(F.linear(torch.cat([f, b], -1), self.mamba_mixer.aggr.weight, self.mamba_mixer.aggr.bias))
            return z * f + (1 - z) * b
        if mode == "concat":
            return F.linear(torch.cat([f, b], -1), self.mamba_mixer.aggr.weight, self.mamba_mixer.aggr.bias)
        if mode == "mean":
            return (f + b) / 2
        if mode == "sum":
            return f + b
        raise AssertionError(mode)

    def _head(self, x):
        hidden = rms_norm(x, self.norm_f.weight, self.cfg.norm_eps)
        return hidden, F.linear(hidden, self.lm_head.weight, self.lm_head.bias)

    def forward(self, tokens, lengths=None, path="padded", scan="sequential", chunk=256, reverse="valid",
                conv_mask=True):
        """tokens [B, L] (right-padded); lengths [B] or None (= all L, no padding).
        Returns (hidden [B, L, d] post-norm, logits [B, L, V]). On the unpadded path both are zero
        at pad positions; on the padded path pad positions hold whatever the model computes there.
        `reverse="plain"` and `conv_mask=False` exist only so selfcheck can show what the masks do:
        with the per-sequence reversal the valid outputs are exact even without them (both branches
        are right-padded and the mixer is causal); with a plain flip they are needed.
        """
        Bsz, L = tokens.shape
        if path == "padded":
            x = F.embedding(tokens, self.embeddings.weight)
            if lengths is None:
                mask = idx = None
            else:
                mask = (torch.arange(L)[None, :] < lengths[:, None]).to(x.dtype)
                idx = reversal_index(lengths, L)
            if not conv_mask:
                mask = None
            for i in range(self.cfg.n_layer):
                x = self._layer_padded(i, x, mask, idx, scan, chunk, reverse)
            return self._head(x)
        if path == "unpadded":
            if lengths is None:
                lengths = torch.full((Bsz,), L, dtype=torch.long)
            hid_rows, log_rows = [], []
            for r in range(Bsz):
                n = int(lengths[r])
                x = F.embedding(tokens[r : r + 1, :n], self.embeddings.weight)
                for i in range(self.cfg.n_layer):
                    x = self._layer_single(i, x, scan, chunk)
                h, lg = self._head(x)
                hid_rows.append(F.pad(h, (0, 0, 0, L - n)))
                log_rows.append(F.pad(lg, (0, 0, 0, L - n)))
            return torch.cat(hid_rows, 0), torch.cat(log_rows, 0)
        raise ValueError(f"unknown path {path!r}")


def model_from_tensors(cfg: Config, tensors: Dict[str, torch.Tensor], dtype=torch.float64) -> GeneMamba:
    """A GeneMamba holding the given weights (e.g. a fixture's parameters), cast to dtype."""
    model = GeneMamba(cfg, seed=0, dtype=dtype)
    with torch.no_grad():
        for n, p in model.ordered_parameters().items():
            if tuple(tensors[n].shape) != tuple(p.shape):
                raise ValueError(f"{n}: shape {tuple(tensors[n].shape)} != {tuple(p.shape)}")
            p.copy_(tensors[n].to(dtype))
    return model


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose target is not -100 (over the whole batch)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), ignore_index=IGNORE_INDEX)


def decay_param_names(model: nn.Module) -> List[str]:
    """Weight-decay group: every `.weight` with >= 2 dims except the embedding."""
    return [n for n, p in model.named_parameters() if n.endswith(".weight") and p.dim() >= 2 and n != "embeddings.weight"]


def make_adamw(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8):
    decay = set(decay_param_names(model))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


# --------------------------------------------------------------------------------------------------
# safetensors, by hand
# --------------------------------------------------------------------------------------------------

_DTYPES = {  # safetensors code -> (torch dtype, little-endian numpy dtype)
    "F32": (torch.float32, "<f4"),
    "F64": (torch.float64, "<f8"),
    "I32": (torch.int32, "<i4"),
    "I64": (torch.int64, "<i8"),
}
_CODE_OF = {t: c for c, (t, _) in _DTYPES.items()}


def save_safetensors(path: str, tensors: "OrderedDict[str, torch.Tensor]", metadata: Optional[Dict[str, str]] = None):
    """Header: u64 LE length, then JSON {name: {dtype, shape, data_offsets}} (+ __metadata__),
    space-padded to a multiple of 8 so the data section is aligned; then the raw LE bytes in the
    given order (offsets relative to the start of the data section)."""
    header: Dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map str -> str")
        header["__metadata__"] = dict(metadata)
    blobs, off = [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in _CODE_OF:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        code = _CODE_OF[t.dtype]
        raw = t.numpy().astype(_DTYPES[code][1], copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hb)))
        fh.write(hb)
        for raw in blobs:
            fh.write(raw)


def load_safetensors(path: str) -> Tuple["OrderedDict[str, torch.Tensor]", Dict[str, str]]:
    """Returns (tensors in file order, metadata)."""
    with open(path, "rb") as fh:
        buf = fh.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(buf)[8 + n :]
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        torch_dtype, np_dtype = _DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=np_dtype).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=True))
    return out, meta

#!/usr/bin/env python3
"""PyTorch + mamba_ssm peer of gm's GPU training step, run by scripts/bench/gpu.mjs (pnpm bench:gpu).

The same network as gm and the reference GeneMamba (scripts/reference/genemamba_ref.py), built from
the reference mamba_ssm.Mamba2 layer (its fused Triton/CUDA path):

    embeddings -> n_layer x [ U = cat(x, flip(x)) over the batch; Y = Mamba2(U) + U;
                              f, b = Y[:B], flip(Y[B:]); z = sigmoid(aggr([f | b])); x = z f + (1 - z) b ]
               -> RMSNorm -> lm_head (with bias)

One Mamba2 per layer runs both directions (shared weights, as gm and the reference; the two
directions go through it as one 2B batch, as gm does) and one aggr Linear(2d, d) gates every layer,
so parameters and FLOPs equal gm's. bf16 autocast over fp32 master weights (gm's bf16 mode), the
LM head over every position with cross-entropy at the 15% target positions only (ignore_index
-100, as gm's GPU loss), clip_grad_norm_(max_grad_norm), AdamW (lr 1e-4, weight decay 0.01).

Timed like gm: W warm-up steps, then S steps each bracketed by torch.cuda.synchronize(); a second
loop times forward + backward only (no clip, no optimizer step). stdout: ONE JSON line; progress
on stderr. Out of memory: the JSON line has "error": "out of memory ..." and the exit status is 3
(gpu.mjs then retries with half the batch).

    python3 scripts/bench/mamba_ssm_peer.py --vocab 25427 --d-model 512 --n-layer 24 --d-state 64 \\
        --headdim 64 --expand 2 --d-conv 4 --batch 24 --len 2048 --steps 10 --warmup 2
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import mamba_ssm
from mamba_ssm import Mamba2

# mamba_ssm's fused path (mamba_split_conv1d_scan_combined) needs the compiled causal_conv1d package;
# without it Mamba2 runs its unfused path: the conv through torch's Conv1d, the SSD scan still through
# mamba_ssm's Triton kernels (mamba_chunk_scan_combined). The JSON line says which one ran.
try:
    import causal_conv1d  # noqa: F401

    FUSED = True
except ImportError:
    FUSED = False


class BiMamba2LM(nn.Module):
    def __init__(self, a):
        super().__init__()
        d = a.d_model
        self.embeddings = nn.Embedding(a.vocab, d)
        kw = dict(d_model=d, d_state=a.d_state, d_conv=a.d_conv, expand=a.expand, headdim=a.headdim, ngroups=1,
                  use_mem_eff_path=FUSED)
        if a.chunk:  # else mamba_ssm's own default (its tuned setting)
            kw["chunk_size"] = a.chunk
        self.layers = nn.ModuleList([Mamba2(**kw) for _ in range(a.n_layer)])
        self.aggr = nn.Linear(2 * d, d)
        self.norm_f = nn.Parameter(torch.ones(d))
        self.lm_head = nn.Linear(d, a.vocab)
        self.eps = 1e-5

    def forward(self, tokens):
        x = self.embeddings(tokens)
        B = x.shape[0]
        for mixer in self.layers:
            u = torch.cat([x, x.flip(1)], dim=0)  # all rows full length: a plain flip is the reversal
            y = mixer(u) + u
            f, b = y[:B], y[B:].flip(1)
            z = torch.sigmoid(self.aggr(torch.cat([f, b], dim=-1)))
            x = z * f + (1 - z) * b
        h = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).to(x.dtype) * self.norm_f.to(x.dtype)
        return self.lm_head(h)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in [("vocab", 25427), ("d-model", 512), ("n-layer", 24), ("d-state", 64), ("headdim", 64), ("expand", 2),
                 ("d-conv", 4), ("batch", 24), ("len", 2048), ("steps", 10), ("warmup", 2), ("chunk", 0), ("seed", 1)]:
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--dtype", choices=["bf16", "float32"], default="bf16")
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch.cuda.is_available() is False"}))
        sys.exit(2)
    dev = torch.device("cuda", 0)
    torch.manual_seed(a.seed)
    model = BiMamba2LM(a).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    except (TypeError, RuntimeError):  # older torch: no fused AdamW
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    # Random tokens in [2, V-1), 15% target positions per row, 80% of them shown as [MASK] (V-1).
    g = torch.Generator().manual_seed(a.seed)
    tokens = torch.randint(2, a.vocab - 1, (a.batch, a.len), generator=g)
    targets = torch.full_like(tokens, -100)
    k = max(1, round(0.15 * a.len))
    for r in range(a.batch):
        pos = torch.randperm(a.len, generator=g)[:k]
        targets[r, pos] = tokens[r, pos]
        shown = pos[torch.rand(k, generator=g) < 0.8]
        tokens[r, shown] = a.vocab - 1
    tokens, targets = tokens.to(dev), targets.to(dev)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    def fwd_bwd():
        opt.zero_grad(set_to_none=True)
        with amp:
            logits = model(tokens)
            loss = F.cross_entropy(logits.view(-1, a.vocab).float(), targets.view(-1), ignore_index=-100)
        loss.backward()
        return loss

    def train_step():
        loss = fwd_bwd()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.max_grad_norm)
        opt.step()
        return loss

    def timed(fn, n, label):
        times = []
        for i in range(n):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            print(f"mamba_ssm_peer: {label} {i + 1}: {times[-1]:.4f} s, loss {loss.item():.4f}", file=sys.stderr)
        return times

    try:
        timed(train_step, a.warmup, "warm-up")  # Triton autotuning and compilation happen here
        torch.cuda.reset_peak_memory_stats()
        step = timed(train_step, a.steps, "step")
        fb = timed(fwd_bwd, a.steps, "forward+backward")
    except torch.cuda.OutOfMemoryError as e:
        print(json.dumps({"error": f"out of memory at batch {a.batch}: {str(e).splitlines()[0]}", "batch": a.batch}))
        sys.exit(3)

    step_s, fb_s = statistics.median(step), statistics.median(fb)
    print(json.dumps({
        "impl": "pytorch+mamba_ssm.Mamba2",
        "torch": torch.__version__,
        "mamba_ssm": getattr(mamba_ssm, "__version__", None),
        "device": torch.cuda.get_device_name(dev),
        "dtype": a.dtype,
        "parameters": n_params,
        "batch": a.batch,
        "len": a.len,
        "steps": a.steps,
        "chunk_size": model.layers[0].chunk_size,
        "path": "fused (mamba_split_conv1d_scan_combined + causal_conv1d)" if FUSED
                else "unfused: torch Conv1d + Triton mamba_chunk_scan_combined (causal_conv1d not installed)",
        "step_s": step_s,
        "step_s_all": step,
        "fb_s": fb_s,
        "seconds_per_sample": step_s / a.batch,
        "fb_seconds_per_sample": fb_s / a.batch,
        "tokens_per_s": a.batch * a.len / step_s,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(dev),
    }))


if __name__ == "__main__":
    main()

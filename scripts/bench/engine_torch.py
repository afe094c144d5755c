#!/usr/bin/python3
"""PyTorch peer of gm's training engine in the benchmark: times full training steps of GeneMamba.

Run it with Debian's interpreter, /usr/bin/python3 (needs torch; the `python3` on PATH may be a
pyenv build without it). The model is scripts/reference/genemamba_ref.py in float32.

    /usr/bin/python3 scripts/bench/engine_torch.py \\
        --config '{"vocab_size":25426,"d_model":256,"n_layer":4,"mixer":"mamba2","combine":"gate",
                   "d_state":64,"headdim":64,"expand":2,"d_conv":4}' \\
        --batch 4 --len 512 --steps 3 --warmup 2 --threads 2 --scan ssd --chunk 256

--config is a JSON file or inline JSON with gm config.json fields (genemamba_ref.Config).

What one step is: zero grads, forward of the float32 model (seed 0, the reference init) on a fixed
batch of B full-length rows (tokens uniform in [2, V), no padding, so no masks and plain flips),
mean cross-entropy against a random target token at EVERY position (so the LM head runs on all
B*L positions), backward, clip_grad_norm_(1.0), AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-8,
weight decay 0.01 on every >= 2-d `.weight` except the embedding). W warmup steps (default 2),
then S timed steps; step_s is the median of the timed ones. Per-step wall, CPU and system time go
to stderr: CPU well below threads x wall, or CPU far above the usual, means the cores were shared
(OpenMP threads spin while they wait, so contention inflates CPU time too).

Scans: `sequential` loops over time, each step vectorised over (batch, head, P, N); autograd keeps
one state per step, (2B, H, P, N) floats per layer per time step, which is why it is memory bound
and why the script estimates its peak memory first and refuses a run whose estimate exceeds
--mem-fraction (0.9) of MemAvailable (rather than swapping or being OOM-killed). `ssd` is the
chunked state-space-duality form (matmul/einsum style, as the reference ssd_minimal) with chunk
length --chunk. Mamba-1 has only `sequential`.

stdout: ONE JSON line {"impl", "torch", "threads", "batch", "len", "step_s", "tokens_per_s",
"peak_rss_bytes", "loss"}; peak_rss_bytes is ru_maxrss * 1024 (ru_maxrss is KiB on Linux); loss is
the last timed step's loss. Progress and the memory estimate go to stderr.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import genemamba_ref as G  # noqa: E402

F32 = 4


def load_config(arg: str) -> G.Config:
    text = arg
    if not arg.lstrip().startswith("{"):
        with open(arg) as fh:
            text = fh.read()
    return G.Config.from_dict(json.loads(text))


def estimate_bytes(cfg: G.Config, n_params: int, B: int, L: int, scan: str, chunk: int) -> int:
    """Rough peak of a training step: tensors autograd saves in the forward, plus the LM head's
    logits / log-softmax / their gradient, plus parameters, gradients and the two Adam moments.
    Counts are per (row, token, layer) from the ops in genemamba_ref; they err on the high side."""
    d, E, N = cfg.d_model, cfg.d_inner, cfg.d_state
    rows = B if cfg.combine == "unidirectional" else 2 * B  # both directions run as one 2B batch
    if cfg.mixer == "mamba2":
        conv_dim = E + 2 * N
        per_tok = 14 * E + 3 * conv_dim + 4 * cfg.nheads + 12 * d
        if scan == "sequential":
            # one (H, P, N) state per time step; x1.5 for what backward's per-step temporaries
            # add through allocator fragmentation (measured peak RSS, 4 layers, L 128..512)
            per_tok += 3 * E * N // 2
        else:
            Q = min(chunk, L)
            per_tok += 3 * cfg.nheads * Q + Q + 4 * E  # exp(segsum), decay mask * C.B^T, C.B^T; Y parts
            per_tok += 2 * E * N // Q + 1  # chunk states and entering states
    else:
        per_tok = 16 * E + 2 * E * N + 12 * d + 2 * (cfg.dt_rank + 2 * N)  # exp(delta A) and h per step
    acts = rows * L * cfg.n_layer * per_tok * F32
    head = 3 * B * L * cfg.vocab_size * F32
    state = 4 * n_params * F32
    return int(1.25 * (acts + head + state)) + (400 << 20)  # + the interpreter and torch itself


def mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="config JSON file or inline JSON")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    # two: the first steps of a big run are dominated by page faults while the heap grows (seen
    # here as several seconds of system time per step), later ones reuse the memory
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--scan", choices=G.SCANS, default="sequential")
    ap.add_argument("--chunk", type=int, default=256, help="SSD chunk length Q")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mem-fraction", type=float, default=0.9,
                    help="refuse when the estimate exceeds this fraction of MemAvailable")
    args = ap.parse_args()

    cfg = load_config(args.config)
    if cfg.mixer == "mamba1" and args.scan != "sequential":
        sys.exit("engine_torch: the mamba1 mixer has only --scan sequential")
    if args.steps < 1 or args.batch < 1 or args.len < 1:
        sys.exit("engine_torch: --steps, --batch and --len must be >= 1")
    torch.set_num_threads(args.threads)

    model = G.GeneMamba(cfg, seed=args.seed, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    need, have = estimate_bytes(cfg, n_params, args.batch, args.len, args.scan, args.chunk), mem_available()
    print(f"engine_torch: {n_params:,} parameters; estimated peak {need / 2**30:.2f} GiB, "
          f"MemAvailable {have / 2**30:.2f} GiB", file=sys.stderr)
    if need > args.mem_fraction * have:
        sys.exit(f"engine_torch: refusing: --scan {args.scan} with batch {args.batch} x len {args.len} needs about "
                 f"{need / 2**30:.1f} GiB, more than {args.mem_fraction:.0%} of the {have / 2**30:.1f} GiB available"
                 + (" (the sequential scan keeps one state per time step; try --scan ssd)"
                    if args.scan == "sequential" and cfg.mixer == "mamba2" else ""))

    g = torch.Generator().manual_seed(args.seed + 1)
    tokens = torch.randint(2, cfg.vocab_size, (args.batch, args.len), generator=g)
    targets = torch.randint(2, cfg.vocab_size, (args.batch, args.len), generator=g)
    opt = G.make_adamw(model, lr=1e-4, weight_decay=0.01)
    params = list(model.parameters())

    times, loss = [], None
    for i in range(args.warmup + args.steps):
        t0, c0, o0 = time.perf_counter(), time.process_time(), os.times()
        opt.zero_grad(set_to_none=True)
        _, logits = model(tokens, None, path="padded", scan=args.scan, chunk=args.chunk)
        step_loss = G.lm_loss(logits, targets)
        step_loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss = step_loss.item()
        dt, cpu, o1 = time.perf_counter() - t0, time.process_time() - c0, os.times()
        timed = i >= args.warmup
        if timed:
            times.append(dt)
        # cpu/wall well under --threads means the cores were shared with something else
        print(f"engine_torch: {'step' if timed else 'warmup'} {i + 1}: {dt:.3f} s (cpu {cpu:.2f} s, sys {o1.system - o0.system:.2f} s), loss {loss:.4f}",
              file=sys.stderr)

    step_s = statistics.median(times)
    print(json.dumps({
        "impl": "torch-" + args.scan,
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "len": args.len,
        "step_s": step_s,
        "tokens_per_s": args.batch * args.len / step_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loss": loss,
    }))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Writes the engine fixtures tests/fixtures/engine/<mixer>-<combine>.safetensors (10 files).

    /usr/bin/python3 scripts/reference/make_fixtures.py [--out tests/fixtures/engine]

Every number is computed in float64 by the PyTorch reference (genemamba_ref.py) on the UNPADDED
per-sequence path (each row sliced to its length, plain flips, no masks), so an engine that runs
the padded batch is checked for padding invariance at the same time. The initial weights are
rounded to float32 BEFORE anything is computed, so the float32 weights stored in the file are
exactly the weights the float64 outputs belong to. Deterministic: the seed of each file is fixed
(crc32 of its name), and torch's CPU float64 kernels give the same results run to run.
See tests/fixtures/engine/README.md for the contents.
"""

import argparse
import json
import os
import sys
import zlib
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genemamba_ref as G  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

CONFIGS = {
    "mamba2": dict(vocab_size=24, d_model=16, n_layer=2, mixer="mamba2", d_state=8, headdim=8, expand=2, d_conv=4,
                   norm_eps=1e-5, pad_token_id=1),
    "mamba1": dict(vocab_size=24, d_model=16, n_layer=2, mixer="mamba1", d_state=4, dt_rank=1, expand=2, d_conv=4,
                   norm_eps=1e-5, pad_token_id=1),
}
BATCH, LEN, LENGTHS = 3, 11, [11, 8, 4]
TARGET_FRACTION = 0.6
ADAMW = dict(lr=1e-2, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.1, clip_grad_norm=1.0, steps=10)


def make_inputs(cfg: G.Config, g: torch.Generator):
    V, pad = cfg.vocab_size, cfg.pad_token_id
    lengths = torch.tensor(LENGTHS, dtype=torch.int64)
    valid = torch.arange(LEN)[None, :] < lengths[:, None]
    tokens = torch.randint(2, V, (BATCH, LEN), generator=g)
    tokens[~valid] = pad
    targets = torch.full((BATCH, LEN), G.IGNORE_INDEX, dtype=torch.int64)
    pick = (torch.rand(BATCH, LEN, generator=g) < TARGET_FRACTION) & valid
    for r in range(BATCH):
        if not pick[r].any():  # at least one scored position per row
            pick[r, int(torch.randint(0, LENGTHS[r], (1,), generator=g))] = True
    targets[pick] = torch.randint(2, V, (int(pick.sum()),), generator=g)
    return tokens, lengths, targets, valid


def build(mixer: str, combine: str):
    name = f"{mixer}-{combine}"
    seed = zlib.crc32(name.encode())
    cfg = G.Config.from_dict(dict(CONFIGS[mixer], combine=combine))
    model = G.GeneMamba(cfg, seed=seed, dtype=torch.float64, perturb=True)
    with torch.no_grad():  # the stored float32 weights must be the exact starting point
        for p in model.parameters():
            p.copy_(p.float().double())
    g = torch.Generator().manual_seed(seed + 1)
    tokens, lengths, targets, valid = make_inputs(cfg, g)
    params = model.ordered_parameters()

    out = OrderedDict((n, p.detach().float().clone()) for n, p in params.items())

    # forward + gradient at the initial weights
    hidden, logits = model(tokens, lengths, path="unpadded", scan="sequential")
    loss = G.lm_loss(logits, targets)
    model.zero_grad(set_to_none=True)
    loss.backward()
    for n, p in params.items():
        out[f"grad.{n}"] = p.grad.detach().float().clone()
    out["input.tokens"] = tokens.to(torch.int32)
    out["input.lengths"] = lengths.to(torch.int32)
    out["input.targets"] = targets.to(torch.int32)
    mask = valid[..., None].double()
    out["output.logits"] = (logits.detach() * mask).float()
    out["output.hidden"] = (hidden.detach() * mask).float()
    out["output.loss"] = loss.detach().reshape(1).float()

    # 10 AdamW steps on the same batch; each loss is taken before that step's update
    opt = G.make_adamw(model, lr=ADAMW["lr"], weight_decay=ADAMW["weight_decay"], betas=tuple(ADAMW["betas"]),
                       eps=ADAMW["eps"])
    losses = []
    for _ in range(ADAMW["steps"]):
        opt.zero_grad(set_to_none=True)
        _, lg = model(tokens, lengths, path="unpadded", scan="sequential")
        step_loss = G.lm_loss(lg, targets)
        step_loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), ADAMW["clip_grad_norm"])
        opt.step()
        losses.append(step_loss.item())
    out["adamw.losses"] = torch.tensor(losses, dtype=torch.float32)

    adamw_meta = dict(ADAMW, decay_params=G.decay_param_names(model),
                      semantics="torch.optim.AdamW; clip_grad_norm_ (coef = max_norm / (norm + 1e-6), capped at 1) "
                                "before every step; same batch every step; loss recorded before the update")
    metadata = {
        "config": cfg.to_json(),
        "adamw": json.dumps(adamw_meta),
        "format": "gm-engine-fixture-1",
        "generator": "scripts/reference/make_fixtures.py",
        "compute": f"float64, unpadded per-sequence path, sequential scan, torch {torch.__version__}",
        "seed": str(seed),
    }
    return name, out, metadata, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "engine"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)  # single-threaded reductions: identical bits on every run
    for mixer in G.MIXERS:
        for combine in G.COMBINES:
            name, tensors, meta, losses = build(mixer, combine)
            path = os.path.join(args.out, f"{name}.safetensors")
            G.save_safetensors(path, tensors, meta)
            print(f"{path}: {os.path.getsize(path)} bytes, loss {losses[0]:.6f} -> {losses[-1]:.6f} after "
                  f"{len(losses) - 1} AdamW steps")


if __name__ == "__main__":
    main()

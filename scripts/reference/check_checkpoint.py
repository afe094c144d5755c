#!/usr/bin/env python3
"""Loads a checkpoint written by gm (model.safetensors + config.json) into the PyTorch reference and
checks its logits against the ones gm computed (a probe file with input.tokens, input.lengths and
output.logits). Proves the gm -> PyTorch direction of checkpoint interoperability; the fixtures
(tests/fixtures/engine) prove PyTorch -> gm.

    /usr/bin/python3 scripts/reference/check_checkpoint.py CKPT_DIR PROBE.safetensors

Prints one JSON line {"max_rel_err": ..., "tensors": N}; exits 1 when the error exceeds 1e-4.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genemamba_ref as G  # noqa: E402


def main():
    ckpt, probe = sys.argv[1], sys.argv[2]
    with open(os.path.join(ckpt, "config.json")) as fh:
        cfg = G.Config.from_dict(json.load(fh))
    tensors, _ = G.load_safetensors(os.path.join(ckpt, "model.safetensors"))
    model = G.model_from_tensors(cfg, tensors, dtype=torch.float64)
    extra = set(tensors) - set(model.ordered_parameters())
    if extra:
        sys.exit(f"unexpected tensors in the checkpoint: {sorted(extra)[:3]}")
    p, _ = G.load_safetensors(probe)
    tokens, lengths = p["input.tokens"].long(), p["input.lengths"].long()
    with torch.no_grad():
        _, logits = model(tokens, lengths, path="unpadded")
    ref = logits.float()
    mine = p["output.logits"]
    B, L = tokens.shape
    valid = (torch.arange(L)[None, :] < lengths[:, None])[..., None].expand_as(ref)
    err = float(((mine - ref).abs() * valid).max() / (ref.abs() * valid).max())
    print(json.dumps({"max_rel_err": err, "tensors": len(tensors)}))
    sys.exit(0 if err < 1e-4 else 1)


if __name__ == "__main__":
    main()

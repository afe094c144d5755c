#!/usr/bin/python3
"""Writes tests/fixtures/head/classifier-head.safetensors: the fine-tuning head checked against torch.

    /usr/bin/python3 scripts/reference/make_head_fixture.py

The head is GeneMamba's Classifier(d, C, hidden, num_layers=4): (Linear -> BatchNorm1d -> Dropout ->
LeakyReLU(0.1)) x 3 -> Linear. Dropout is set to 0 here so the torch and gm runs are comparable (gm's
dropout mask comes from its own counter-based stream; its gradient is checked by finite differences
in native/test/opcheck.cpp). Everything is float64 from float32-rounded weights and inputs.
Stored: the weights (float32, gm tensor names), x, targets, class weights, the training-mode
logits and weighted CE loss, every parameter gradient and d loss/d x, the running statistics after
the step and eval-mode logits with them, and 3 Adam(lr=1e-2) steps' weights for a training check.
"""
import json
import os

import torch
import torch.nn as nn

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
D, C, H, B = 12, 5, 16, 9
torch.manual_seed(20261202)


class Classifier(nn.Module):
    def __init__(self, d, c, hidden, num_layers=4, dropout=0.0):
        super().__init__()
        blocks = []
        inp = d
        for _ in range(num_layers - 1):
            blocks.append(nn.ModuleDict(dict(linear=nn.Linear(inp, hidden), norm=nn.BatchNorm1d(hidden))))
            inp = hidden
        self.layers = nn.ModuleList(blocks)
        self.drop = nn.Dropout(dropout)
        self.act = nn.LeakyReLU(0.1)
        self.out = nn.Linear(inp, c)

    def forward(self, x):
        for b in self.layers:
            x = self.act(self.drop(b["norm"](b["linear"](x))))
        return self.out(x)


def rounded(t):
    return t.float().double()


head = Classifier(D, C, H).double()
with torch.no_grad():
    for p in head.parameters():
        p.copy_(rounded(p + 0.05 * torch.randn_like(p)))
x = rounded(torch.randn(B, D) * 1.3).requires_grad_(True)
targets = torch.tensor([0, 1, 2, 3, 4, 0, 1, 1, 3], dtype=torch.int64)
weight = rounded(torch.tensor([1.0, 0.5, 2.0, 1.5, 0.75]))

init = {f"classifier.{k}": v.detach().clone() for k, v in head.state_dict().items() if "num_batches" not in k}
head.train()
logits = head(x)
loss = nn.functional.cross_entropy(logits, targets, weight=weight)
loss.backward()
grads = {f"grad.classifier.{k}": p.grad.detach().clone() for k, p in head.named_parameters()}
after = {f"after.classifier.{k}": v.detach().clone() for k, v in head.state_dict().items() if "running" in k}
head.eval()
with torch.no_grad():
    eval_logits = head(x)

# three Adam steps (the reference's optimizer) from the initial weights, no class weights
head2 = Classifier(D, C, H).double()
head2.load_state_dict({k[len("classifier."):]: v for k, v in init.items()}, strict=False)
opt = torch.optim.Adam(head2.parameters(), lr=1e-2)
head2.train()
for _ in range(3):
    opt.zero_grad()
    nn.functional.cross_entropy(head2(x.detach()), targets).backward()
    opt.step()
trained = {f"adam3.classifier.{k}": p.detach().clone() for k, p in head2.named_parameters()}

tensors = {**init, **grads, **after, **trained}
tensors["x"] = x.detach()
tensors["targets"] = targets.int()
tensors["class_weight"] = weight
tensors["logits"] = logits.detach()
tensors["loss"] = loss.detach().reshape(1)
tensors["grad.x"] = x.grad.detach()
tensors["eval_logits"] = eval_logits


def write(path, named, meta):
    header, blobs, off = {"__metadata__": meta}, [], 0
    for k, v in named.items():
        v = v.contiguous()
        dtype = {torch.float64: "F64", torch.float32: "F32", torch.int32: "I32"}[v.dtype]
        b = v.numpy().tobytes()
        header[k] = {"dtype": dtype, "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


out = os.path.join(REPO, "tests", "fixtures", "head", "classifier-head.safetensors")
write(out, {k: (v.float() if k.startswith("classifier.") else v) for k, v in tensors.items()},
      {"config": json.dumps(dict(d_in=D, n_classes=C, hidden=H, n_layers=4, dropout=0.0, negative_slope=0.1)),
       "torch": torch.__version__})
print(out, os.path.getsize(out), "bytes")

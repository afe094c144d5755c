#!/usr/bin/python3
"""Self-check of the PyTorch reference (genemamba_ref.py). Exits non-zero on the first failure.

    /usr/bin/python3 scripts/reference/selfcheck.py

What it asserts, and why each check is there:
  * the hand-written causal conv equals F.conv1d (groups = channels, left pad K-1);
  * segsum equals its definition;
  * the sequential Mamba-2 scan equals the materialised quadratic form y_t = sum_s C_t.B_s
    exp(sum_{r=s+1..t} dA_r) delta_s x_s (and likewise for Mamba-1), so the recurrence itself is
    checked against something that is not a recurrence;
  * sequential == ssd (float64, ~1e-10) for chunk lengths that divide T, do not divide it, exceed
    it, and Q = 1; float32 to a looser tolerance;
  * the padded-batch path (mask + per-sequence reversal + 2B batch) equals the per-sequence
    unpadded path at valid positions, for both mixers, all five combine modes and both Mamba-2
    scans: hidden, logits, loss AND every parameter gradient (pads must not leak anywhere);
  * the conv masks: a plain flip (pads leading the reversed rows) with the masks is exact too, and
    without them it is not (negative control);
  * the reversal is an involution and equals a plain flip without padding;
  * torch.autograd.gradcheck on the conv, the norms, each scan and a tiny whole model;
  * save_safetensors / load_safetensors round trip with 8-byte alignment;
  * the committed fixtures reproduce from their own float32 weights on the padded path (float64:
    to storage rounding; float32: the errors torch reaches, a guide for engine tolerances).
"""

import os
import struct
import sys
import tempfile
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genemamba_ref as G  # noqa: E402

torch.set_default_dtype(torch.float64)
T0 = time.time()


def ok(name, err=None, tol=None):
    if err is not None:
        if not (err <= tol):
            print(f"FAIL {name}: max error {err:.3e} > {tol:.1e}")
            sys.exit(1)
        print(f"ok   {name}  (max err {err:.2e}, tol {tol:.0e})")
    else:
        print(f"ok   {name}")


def maxerr(a, b):
    return (a - b).abs().max().item()


def relerr(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-300)).item()


def rand_scan_inputs(g, b, T, H, P, N, dtype=torch.float64):
    """Inputs in the ranges the model produces: delta ~ softplus of small values (0.001..~2),
    A in [-16, -1], so decays span from ~1 down to ~e^-30 within a chunk."""
    x = torch.randn(b, T, H, P, generator=g, dtype=dtype)
    delta = F.softplus(torch.randn(b, T, H, generator=g, dtype=dtype) * 2 - 2)
    A = -(1 + 15 * torch.rand(H, generator=g, dtype=dtype))
    B = torch.randn(b, T, N, generator=g, dtype=dtype)
    C = torch.randn(b, T, N, generator=g, dtype=dtype)
    return x, delta, A, B, C


def naive_mamba2(x, delta, A, B, C):
    b, T, H, P = x.shape
    dA = delta * A  # [b, T, H]
    cs = torch.cumsum(dA, 1)
    y = torch.zeros_like(x)
    for t in range(T):
        for s in range(t + 1):
            w = torch.exp(cs[:, t] - cs[:, s]) * (C[:, t] * B[:, s]).sum(-1, keepdim=True)  # [b, H]
            y[:, t] += (w * delta[:, s])[..., None] * x[:, s]
    return y


def naive_mamba1(x, delta, A, B, C):
    b, T, E = x.shape
    y = torch.zeros_like(x)
    for t in range(T):
        for s in range(t + 1):
            decay = torch.exp(delta[:, s + 1 : t + 1, :, None].sum(1) * A)  # [b, E, N]
            y[:, t] += (decay * B[:, s, None, :] * C[:, t, None, :]).sum(-1) * delta[:, s] * x[:, s]
    return y


g = torch.Generator().manual_seed(1234)

# ---- building blocks -----------------------------------------------------------------------------
xc = torch.randn(2, 9, 5, generator=g)
wc = torch.randn(5, 1, 4, generator=g)
bc = torch.randn(5, generator=g)
ref = F.conv1d(xc.transpose(1, 2), wc, bc, padding=3, groups=5)[..., :9].transpose(1, 2)
ok("causal depthwise conv == F.conv1d", maxerr(G.causal_depthwise_conv(xc, wc, bc), ref), 1e-13)

v = torch.randn(3, 7, generator=g)
ss = G.segsum(v)
want = torch.full((3, 7, 7), -float("inf"))
for i in range(7):
    for j in range(i + 1):
        want[:, i, j] = v[:, j + 1 : i + 1].sum(-1)
fin = torch.isfinite(want)
assert torch.equal(fin, torch.isfinite(ss))
ok("segsum == definition", maxerr(ss[fin], want[fin]), 1e-13)

# ---- scans ---------------------------------------------------------------------------------------
x, dl, A, B, C = rand_scan_inputs(g, 2, 13, 3, 4, 5)
ok("mamba2 sequential == materialised quadratic form",
   relerr(G.mamba2_scan_sequential(x, dl, A, B, C), naive_mamba2(x, dl, A, B, C)), 1e-12)

xe = torch.randn(2, 10, 6, generator=g)
de = F.softplus(torch.randn(2, 10, 6, generator=g) - 1)
Ae = -torch.exp(torch.log(torch.arange(1, 5, dtype=torch.float64)).repeat(6, 1) + 0.1 * torch.randn(6, 4, generator=g))
Be, Ce = torch.randn(2, 10, 4, generator=g), torch.randn(2, 10, 4, generator=g)
ok("mamba1 sequential == materialised form",
   relerr(G.mamba1_scan_sequential(xe, de, Ae, Be, Ce), naive_mamba1(xe, de, Ae, Be, Ce)), 1e-12)

for T, Q in [(11, 4), (11, 11), (11, 256), (11, 1), (64, 16), (100, 32), (300, 256)]:
    x, dl, A, B, C = rand_scan_inputs(g, 2, T, 4, 8, 6)
    ys = G.mamba2_scan_sequential(x, dl, A, B, C)
    yd = G.mamba2_scan_ssd(x, dl, A, B, C, chunk=Q)
    ok(f"sequential == ssd float64 (T={T}, Q={Q})", relerr(yd, ys), 1e-10)

x, dl, A, B, C = rand_scan_inputs(g, 2, 300, 4, 8, 6, dtype=torch.float32)
ok("sequential == ssd float32 (T=300, Q=256)",
   relerr(G.mamba2_scan_ssd(x, dl, A, B, C, chunk=256), G.mamba2_scan_sequential(x, dl, A, B, C)), 1e-5)

# ---- reversal ------------------------------------------------------------------------------------
lengths = torch.tensor([11, 8, 4, 1])
idx = G.reversal_index(lengths, 11)
h = torch.randn(4, 11, 3, generator=g)
assert torch.equal(G.reverse_valid(G.reverse_valid(h, idx), idx), h)
full = G.reversal_index(torch.tensor([11, 11]), 11)
assert torch.equal(G.reverse_valid(h[:2], full), h[:2].flip(1))
assert torch.equal(G.reverse_valid(h, idx)[2, :4], h[2, :4].flip(0)) and torch.equal(G.reverse_valid(h, idx)[2, 4:], h[2, 4:])
ok("reversal: involution, plain flip without pads, pads stay in place")

# ---- padded batch == unpadded per-sequence, forward and gradients --------------------------------
TINY = {
    "mamba2": dict(vocab_size=24, d_model=16, n_layer=2, mixer="mamba2", d_state=8, headdim=8, expand=2),
    "mamba1": dict(vocab_size=24, d_model=16, n_layer=2, mixer="mamba1", d_state=4, dt_rank=1, expand=2),
}
Bsz, L = 3, 11
lengths = torch.tensor([11, 8, 4])
valid = torch.arange(L)[None, :] < lengths[:, None]
tokens = torch.randint(2, 24, (Bsz, L), generator=g)
tokens[~valid] = 1
targets = torch.randint(2, 24, (Bsz, L), generator=g)
targets[(torch.rand(Bsz, L, generator=g) > 0.6) | ~valid] = -100
targets[:, 0] = torch.randint(2, 24, (Bsz,), generator=g)  # at least one target per row


def run(model, path, scan, chunk):
    model.zero_grad(set_to_none=True)
    hid, logits = model(tokens, lengths, path=path, scan=scan, chunk=chunk)
    loss = G.lm_loss(logits, targets)
    loss.backward()
    grads = OrderedDict((n, p.grad.clone()) for n, p in model.ordered_parameters().items())
    return hid.detach(), logits.detach(), loss.detach(), grads


for mixer in ("mamba2", "mamba1"):
    for combine in G.COMBINES:
        model = G.GeneMamba(G.Config.from_dict(dict(TINY[mixer], combine=combine)), seed=7, perturb=True)
        base = run(model, "unpadded", "sequential", 256)
        scans = [("sequential", 256), ("ssd", 4)] if mixer == "mamba2" else [("sequential", 256)]
        for scan, chunk in scans:
            got = run(model, "padded", scan, chunk)
            err = max(maxerr(got[0][valid], base[0][valid]), maxerr(got[1][valid], base[1][valid]),
                      maxerr(got[2], base[2]))
            gerr = max(relerr(got[3][n], base[3][n]) if base[3][n].abs().max() > 0 else maxerr(got[3][n], base[3][n])
                       for n in base[3])
            tol = 1e-12 if scan == "sequential" else 1e-10
            ok(f"padded == unpadded {mixer}-{combine} ({scan}): forward", err, tol)
            ok(f"padded == unpadded {mixer}-{combine} ({scan}): gradients", gerr, tol)
        # the PAD row never reaches a valid position, so it gets no gradient on either path
        assert base[3]["embeddings.weight"][1].abs().max() == 0
# what the conv masks do. With the per-sequence reversal both branches are right-padded and the
# mixer is causal, so valid outputs are exact even without the masks; with a plain flip the pads
# LEAD the reversed rows: exact with the masks, wrong without (the check has teeth).
def run_variant(model, scan, chunk, **kw):
    model.zero_grad(set_to_none=True)
    _, logits = model(tokens, lengths, path="padded", scan=scan, chunk=chunk, **kw)
    G.lm_loss(logits, targets).backward()
    return logits.detach(), OrderedDict((n, p.grad.clone()) for n, p in model.ordered_parameters().items())


for mixer in ("mamba2", "mamba1"):
    model = G.GeneMamba(G.Config.from_dict(dict(TINY[mixer], combine="gate")), seed=7, perturb=True)
    base = run(model, "unpadded", "sequential", 256)
    for scan, chunk in ([("sequential", 256), ("ssd", 4)] if mixer == "mamba2" else [("sequential", 256)]):
        lg, gr = run_variant(model, scan, chunk, reverse="plain", conv_mask=True)
        err = max([maxerr(lg[valid], base[1][valid])] + [maxerr(gr[n], base[3][n]) for n in gr])
        ok(f"plain flip + conv masks == unpadded {mixer}-gate ({scan}): logits and gradients", err, 1e-10)
        lg, _ = run_variant(model, scan, chunk, reverse="valid", conv_mask=False)
        ok(f"per-sequence reversal without masks == unpadded {mixer}-gate ({scan})", maxerr(lg[valid], base[1][valid]), 1e-10)
        lg, _ = run_variant(model, scan, chunk, reverse="plain", conv_mask=False)
        d = maxerr(lg[valid], base[1][valid])
        assert d > 1e-3, d
        ok(f"negative control {mixer} ({scan}): plain flip without masks moves valid logits by {d:.2f}")
# gate weights really get gradient (catches a combine that ignores aggr)
assert run(G.GeneMamba(G.Config.from_dict(dict(TINY["mamba2"], combine="gate")), seed=7), "padded", "sequential", 256)[3][
    "mamba_mixer.aggr.weight"].abs().max() > 0

try:
    G.GeneMamba(G.Config.from_dict(dict(TINY["mamba1"], combine="mean")))(tokens, lengths, scan="ssd")
    raise SystemExit("FAIL mamba1 accepted scan=ssd")
except ValueError:
    ok("mamba1 rejects scan=ssd")

# ---- gradcheck -----------------------------------------------------------------------------------
def gc(name, fn, inputs, fast=False):
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in inputs)
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=fast), name
    ok(f"gradcheck {name}")


gc("causal conv", G.causal_depthwise_conv, (torch.randn(2, 6, 3, generator=g), torch.randn(3, 1, 4, generator=g),
                                            torch.randn(3, generator=g)))
gc("rms_norm", lambda a, w: G.rms_norm(a, w, 1e-5), (torch.randn(2, 5, 6, generator=g), torch.randn(6, generator=g)))
gc("gated rms_norm", lambda y, z, w: G.rms_norm(y * F.silu(z), w, 1e-5),
   (torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g), torch.randn(6, generator=g)))
small = rand_scan_inputs(g, 2, 7, 2, 3, 4)
gc("mamba2 sequential scan", G.mamba2_scan_sequential, small)
gc("mamba2 ssd scan (Q=3, T=7)", lambda *a: G.mamba2_scan_ssd(*a, chunk=3), small)
gc("mamba1 sequential scan", G.mamba1_scan_sequential,
   (xe[:, :6, :3], de[:, :6, :3], Ae[:3], Be[:, :6], Ce[:, :6]))

micro = G.GeneMamba(G.Config.from_dict(dict(vocab_size=8, d_model=4, n_layer=2, mixer="mamba2", combine="gate",
                                               d_state=2, headdim=2)), seed=3, perturb=True)
names = list(micro.ordered_parameters())
tok_m = torch.tensor([[2, 3, 4, 5, 6], [7, 2, 3, 1, 1]])
len_m = torch.tensor([5, 3])
tgt_m = torch.tensor([[3, -100, 5, 6, 2], [2, 3, -100, -100, -100]])


try:
    from torch.func import functional_call  # torch >= 2.0
except ImportError:
    from torch.nn.utils.stateless import functional_call  # torch 1.13


def micro_loss(*params):
    _, logits = functional_call(micro, dict(zip(names, params)), (tok_m, len_m))
    return G.lm_loss(logits, tgt_m)


gc("whole model loss (tiny mamba2-gate, padded, all parameters)", micro_loss,
   tuple(p.detach() for p in micro.ordered_parameters().values()), fast=True)

# ---- safetensors ---------------------------------------------------------------------------------
with tempfile.TemporaryDirectory() as d:
    p = os.path.join(d, "t.safetensors")
    ts = OrderedDict(a=torch.randn(3, 2, generator=g).float(), b=torch.arange(5, dtype=torch.int32),
                     c=torch.randn(2, 2, 2, generator=g), d=torch.tensor([7, -9], dtype=torch.int64), e=torch.zeros(0))
    G.save_safetensors(p, ts, {"config": '{"x": 1}'})
    back, meta = G.load_safetensors(p)
    with open(p, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
    assert n % 8 == 0 and meta == {"config": '{"x": 1}'} and list(back) == list(ts)
    assert all(back[k].dtype == ts[k].dtype and torch.equal(back[k], ts[k]) for k in ts)
ok("safetensors round trip")

# ---- the committed fixtures reproduce ------------------------------------------------------------
# Reloads each fixture's float32 weights and recomputes everything on the PADDED path (the fixture
# was made on the unpadded one): in float64 it must agree to float32 storage rounding; in float32
# the errors printed are what torch itself reaches, a guide for the engine's tolerances.
FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "engine")
import json  # noqa: E402
for mixer in G.MIXERS:
    for combine in G.COMBINES:
        path = os.path.join(FIX, f"{mixer}-{combine}.safetensors")
        if not os.path.exists(path):
            print(f"skip fixture {path} (not generated)")
            continue
        t, meta = G.load_safetensors(path)
        cfg = G.Config.from_dict(json.loads(meta["config"]))
        tok, ln, tg = t["input.tokens"].long(), t["input.lengths"].long(), t["input.targets"].long()
        vmask = torch.arange(tok.shape[1])[None, :] < ln[:, None]
        scans = [("sequential", 256), ("ssd", 4)] if mixer == "mamba2" else [("sequential", 256)]
        for dtype, tol in ((torch.float64, 1e-6), (torch.float32, 1e-5)):
            for scan, chunk in scans:
                model = G.model_from_tensors(cfg, t, dtype)
                hid, lg = model(tok, ln, path="padded", scan=scan, chunk=chunk)
                loss = G.lm_loss(lg, tg)
                loss.backward()
                e_fwd = max(relerr(lg.detach()[vmask].double(), t["output.logits"][vmask].double()),
                            relerr(hid.detach()[vmask].double(), t["output.hidden"][vmask].double()),
                            relerr(loss.detach().reshape(1).double(), t["output.loss"].double()))
                e_grad = max(maxerr(p.grad.double(), t["grad." + n].double()) / max(t["grad." + n].abs().max().item(), 1e-30)
                             for n, p in model.ordered_parameters().items() if t["grad." + n].abs().max() > 0)
                ok(f"fixture {mixer}-{combine} {str(dtype)[6:]} padded {scan}: forward", e_fwd, tol)
                ok(f"fixture {mixer}-{combine} {str(dtype)[6:]} padded {scan}: gradients (rel. to each max)", e_grad, tol * 5)
        # the AdamW trajectory on the padded path; float32 shows what a float32 engine can reach
        adam = json.loads(meta["adamw"])
        for dtype, tol in ((torch.float64, 1e-6), (torch.float32, 1e-4)):
            model = G.model_from_tensors(cfg, t, dtype)
            opt = G.make_adamw(model, lr=adam["lr"], weight_decay=adam["weight_decay"], betas=tuple(adam["betas"]),
                               eps=adam["eps"])
            losses = []
            for _ in range(adam["steps"]):
                opt.zero_grad(set_to_none=True)
                loss = G.lm_loss(model(tok, ln)[1], tg)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(model.parameters()), adam["clip_grad_norm"])
                opt.step()
                losses.append(loss.item())
            ok(f"fixture {mixer}-{combine} AdamW losses ({str(dtype)[6:]}, padded)",
               relerr(torch.tensor(losses, dtype=torch.float64), t["adamw.losses"].double()), tol)

print(f"selfcheck passed in {time.time() - T0:.1f} s")

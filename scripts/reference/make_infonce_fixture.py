#!/usr/bin/python3
"""Writes tests/fixtures/infonce/reference.json: the reference InfoNCE gene-pair loss on small cases.

    /usr/bin/python3 scripts/reference/make_infonce_fixture.py [--out tests/fixtures/infonce]

Reimplements the loss of the reference trainer (genemamba-model.md §7, §10 bug 5) with PyTorch
autograd in float64:
  1. post-norm hidden states flattened to (B*L, d), F.normalize (x / max(|x|, 1e-12));
  2. positions whose token is PAD (1) or UNK (0) dropped;
  3. COO pairs (an uncoalesced sparse (maxId+1)^2 matrix with 0/1 values) kept when both ids occur
     anywhere in the batch;
  4. each id mapped to its LAST occurrence in the flattened, row-major (b, t) batch;
  5. s = cos / tau for every kept pair;
  6. loss = -mean_{label=1}(s_pos - logsumexp_{all kept pairs}(s)), one global denominator.
The reference gives NaN with no kept positive (or no kept pair); like the port, this gives 0 and a
zero gradient. The hidden states are rounded to float32 first, so the stored float32 inputs are
exactly the inputs the float64 outputs belong to. Deterministic (fixed seed).

Cases (all share the inputs):
  main         ~30 pairs, positives and negatives, some touching genes absent from the batch or
               present only at UNK/PAD-like places; expected loss and gradient wrt hidden.
  no_positive  every kept pair is a negative (the positives all touch absent genes): loss 0.
  none_kept    no pair has both genes in the batch: loss 0.
"""

import argparse
import json
import os

import torch
import torch.nn.functional as F

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PAD, UNK = 1, 0
BATCH, LEN, D, VOCAB = 3, 12, 8, 40
LENGTHS = [12, 9, 5]
TAU = 0.1
SEED = 20240607


def reference_infonce(hidden, ids, pair_index, pair_values, tau, vocab):
    """The reference loss; hidden (B, L, d) float64 requiring grad, ids (B, L) int64."""
    B, L, d = hidden.shape
    coo = torch.sparse_coo_tensor(pair_index, pair_values, (vocab, vocab))  # uncoalesced, as shipped
    idx = coo._indices()
    val = coo._values()
    h = F.normalize(hidden.reshape(B * L, d), dim=-1)
    flat = ids.reshape(-1)
    keep = (flat != PAD) & (flat != UNK)
    h = h[keep]
    flat = flat[keep]
    last = torch.full((vocab,), -1, dtype=torch.int64)
    for pos, tok in enumerate(flat.tolist()):  # later occurrences overwrite: last occurrence wins
        last[tok] = pos
    pa, pb = last[idx[0]], last[idx[1]]
    m = (pa >= 0) & (pb >= 0)
    s = (h[pa[m]] * h[pb[m]]).sum(-1) / tau
    lab = val[m]
    if s.numel() == 0 or int((lab == 1).sum()) == 0:
        return None, int(m.sum()), int((lab == 1).sum())  # the reference's NaN
    loss = -(s[lab == 1] - torch.logsumexp(s, 0)).mean()
    return loss, int(m.sum()), int((lab == 1).sum())


def make_inputs(g):
    # Tokens from a narrow range so that ids repeat within and across cells.
    tokens = torch.randint(2, 26, (BATCH, LEN), generator=g)
    for r, n in enumerate(LENGTHS):
        tokens[r, n:] = PAD
    tokens[0, 3] = UNK
    tokens[1, 0] = UNK
    tokens[2, 4] = UNK
    tokens[0, 7] = PAD  # a PAD inside the valid prefix is dropped too
    # Guarantee a few cross-cell duplicates
    tokens[1, 2] = tokens[0, 1]
    tokens[2, 1] = tokens[0, 1]
    tokens[2, 3] = tokens[1, 5]
    hidden = torch.randn(BATCH, LEN, D, generator=g, dtype=torch.float64).float().double()
    return tokens, hidden


def unique_pairs(cands):
    seen, out = set(), []
    for a, b, lab in cands:
        key = (min(a, b), max(a, b))
        if a == b or key in seen:
            continue
        seen.add(key)
        out.append((a, b, lab))
    return out


def make_pairs(g, tokens):
    present = sorted(set(tokens[tokens > 1].tolist()))
    absent = [i for i in range(2, VOCAB) if i not in present]
    assert len(present) >= 8 and len(absent) >= 4
    rand = lambda n: int(torch.randint(0, n, (1,), generator=g))
    main = []
    while len(main) < 22:  # both genes present
        a, b = present[rand(len(present))], present[rand(len(present))]
        main.append((a, b, len(main) % 3 != 2))
        main = unique_pairs(main)
    main += [(present[0], absent[0], 1), (absent[1], present[2], 0), (absent[2], absent[3], 1),
             (present[3], absent[1], 1), (absent[0], present[4], 0), (present[5], 0, 1), (1, present[6], 0)]
    main = unique_pairs([(a, b, int(lab)) for a, b, lab in main])
    # no_positive: negatives between present genes, positives only with an absent gene
    nopos = unique_pairs([(present[i], present[i + 1], 0) for i in range(6)] +
                         [(present[i], absent[i % len(absent)], 1) for i in range(6)])
    # none_kept: every pair touches an absent gene
    none = unique_pairs([(absent[i], present[i], i % 2) for i in range(min(4, len(absent)))] +
                        [(absent[0], absent[1], 1)])
    return main, nopos, none


def run_case(name, pairs, tokens, hidden):
    index = torch.tensor([[a for a, _, _ in pairs], [b for _, b, _ in pairs]], dtype=torch.int64)
    values = torch.tensor([lab for _, _, lab in pairs], dtype=torch.int64)
    h = hidden.clone().requires_grad_(True)
    loss, kept, kept_pos = reference_infonce(h, tokens, index, values, TAU, VOCAB)
    case = {"name": name, "pairs": [list(p) for p in pairs], "kept": kept, "kept_positives": kept_pos}
    if loss is None:
        case["loss"] = 0.0
        case["grad_zero"] = True
    else:
        loss.backward()
        case["loss"] = float(loss)
        case["grad"] = [float(x) for x in h.grad.reshape(-1)]
    print(f"{name}: {len(pairs)} pairs, kept {kept} ({kept_pos} positive), loss {case['loss']:.12g}")
    return case


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "infonce"))
    args = ap.parse_args()
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    tokens, hidden = make_inputs(g)
    main_pairs, nopos, none = make_pairs(g, tokens)
    cases = [run_case("main", main_pairs, tokens, hidden), run_case("no_positive", nopos, tokens, hidden),
             run_case("none_kept", none, tokens, hidden)]
    assert cases[0]["kept"] > 10 and cases[0]["kept_positives"] > 3 and "grad" in cases[0]
    assert cases[1]["kept"] > 0 and cases[1]["kept_positives"] == 0
    assert cases[2]["kept"] == 0
    out = {
        "description": "reference InfoNCE gene-pair loss (genemamba-model.md §7), float64 PyTorch autograd; "
                       "written by scripts/reference/make_infonce_fixture.py",
        "batch": BATCH, "length": LEN, "d": D, "vocab_size": VOCAB, "tau": TAU, "pad_id": PAD, "unk_id": UNK,
        "lengths": LENGTHS,
        "tokens": [int(t) for t in tokens.reshape(-1)],
        "hidden": [float(x) for x in hidden.reshape(-1)],  # float32-exact values
        "cases": cases,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "reference.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()

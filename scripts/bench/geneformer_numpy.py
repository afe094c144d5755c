#!/usr/bin/python3
"""Geneformer V1 rank-value tokenizer in plain numpy + h5py: the peer of `gm tokenize` in the benchmark.

Run it with Debian's interpreter, /usr/bin/python3 (the `python3` on PATH may be a pyenv build without
numpy/h5py). Install the modules with `apt-get update && apt-get install -y python3-numpy python3-h5py`.

    /usr/bin/python3 scripts/bench/geneformer_numpy.py --h5ad FILE.h5ad \
        --medians ../shared/data/genes/gene_medians_v1.json \
        --vocab ../shared/data/genes/vocab_25426.json --out tokens.bin \
        [--max-len 2048] [--min-genes 200] [--target-sum 10000] [--chunk 512] [--limit-cells N]

Algorithm (Geneformer `TranscriptomeTokenizer`, V1; docs: tokenization-and-data.md section 2.2):
  * input: an h5ad whose counts are a CSR matrix in `X` (group with data/indices/indptr and attr
    `shape`), Ensembl ids in the var index (the dataset named by var's `_index` attribute);
  * genes kept: those with both a vocabulary token (gene i of the vocab list has token id
    first_gene_id + i) and a finite, positive median; Ensembl ids are matched as written;
  * the file is read in row chunks of `--chunk` cells (512, as Geneformer V1) with h5py; only indptr
    is read whole;
  * cells with obs `is_primary_data` False are dropped when the column exists (Geneformer's
    `filter_pass` rule applied to CELLxGENE data, as gm does);
  * n_counts = the row sum over ALL genes (float64); cells with fewer than `--min-genes` non-zero
    entries over ALL genes are dropped (the GeneMamba >= 200 genes filter);
  * v = X / n_counts * target_sum / median, in float64, in exactly that order of operations;
  * per cell, the non-zero v of kept genes are ranked by v descending. Geneformer used numpy's
    default (unstable) argsort, so its order of tied values is arbitrary; this script breaks ties
    deterministically by ascending token id: np.lexsort((token_ids, -v));
  * the ranked token ids are truncated to `--max-len` (2048; V1 adds no special tokens).

Normalisation and the cell filter are vectorised per chunk; the ranking is one np.lexsort per cell
in a Python loop, as Geneformer does (one argsort per cell). (A single lexsort over a whole chunk
keyed by (token, -v, row) gives the same tokens but was 3-4x slower here.)

Output (`--out`): little-endian int32 throughout: the number of cells n, then the n sequence
lengths, then all token ids concatenated in cell order. Tokens are streamed to a temporary file
next to the output while the file is read, so memory stays bounded.

The last line on stdout is a JSON object:
  {"cells_in", "cells_out", "seconds", "cells_per_s", "peak_rss_mb"}
where seconds covers loading the vocabulary and medians, reading, tokenizing and writing, and
peak_rss_mb is resource.getrusage(RUSAGE_SELF).ru_maxrss / 1024 (ru_maxrss is in KiB on Linux).
Single-threaded: the BLAS/OpenMP thread variables are set to 1 before numpy is imported.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description="Geneformer V1 rank-value tokenizer (numpy + h5py reference).")
    p.add_argument("--h5ad", required=True, help="input .h5ad with CSR counts in X")
    p.add_argument("--medians", required=True, help="JSON object Ensembl id -> non-zero median")
    p.add_argument("--vocab", required=True, help='JSON {"specials":{...},"first_gene_id":2,"genes":[...]}')
    p.add_argument("--out", required=True, help="output file (int32 n, lengths, tokens)")
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--min-genes", type=int, default=200)
    p.add_argument("--target-sum", type=float, default=10000.0)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--limit-cells", type=int, default=None, help="tokenize only the first N cells of the file")
    a = p.parse_args(argv)
    if a.max_len < 1 or a.chunk < 1 or a.min_genes < 0 or not (a.target_sum > 0):
        p.error("--max-len and --chunk must be >= 1, --min-genes >= 0, --target-sum > 0")
    if a.limit_cells is not None and a.limit_cells < 0:
        p.error("--limit-cells must be >= 0")
    return a


def read_strings(ds):
    """A 1-d string dataset as a list of str."""
    if h5py.check_string_dtype(ds.dtype) is not None:
        return list(ds.asstr()[()])
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in ds[()]]


def var_index(f):
    var = f["var"]
    if isinstance(var, h5py.Dataset):  # anndata <= 0.6: compound dataset
        names = var.dtype.names or ()
        key = "index" if "index" in names else names[0]
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in var[key]]
    name = var.attrs.get("_index", "_index")
    if isinstance(name, bytes):
        name = name.decode("utf-8")
    if name not in var:
        for alt in ("_index", "index"):
            if alt in var:
                name = alt
                break
        else:
            raise SystemExit(f"{f.filename}: var has no index dataset (attr _index={name!r})")
    return read_strings(var[name])


def main(argv):
    args = parse_args(argv)
    t0 = time.perf_counter()

    with open(args.vocab, "r", encoding="utf-8") as fh:
        vocab = json.load(fh)
    first = int(vocab.get("first_gene_id", 0))
    token_of = {g: first + i for i, g in enumerate(vocab["genes"])}
    with open(args.medians, "r", encoding="utf-8") as fh:
        medians = json.load(fh)

    f = h5py.File(args.h5ad, "r")
    X = f["X"]
    if not isinstance(X, h5py.Group):
        raise SystemExit(f"{args.h5ad}: X is dense; this reference reads a CSR X only")
    enc = X.attrs.get("encoding-type", X.attrs.get("h5sparse_format", b"csr_matrix"))
    if isinstance(enc, bytes):
        enc = enc.decode("utf-8")
    if enc not in ("csr_matrix", "csr"):
        raise SystemExit(f"{args.h5ad}: X is {enc}; this reference reads a CSR X only")
    shape = X.attrs["shape"] if "shape" in X.attrs else X.attrs["h5sparse_shape"]
    n_cells, n_genes = int(shape[0]), int(shape[1])

    genes = var_index(f)
    if len(genes) != n_genes:
        raise SystemExit(f"{args.h5ad}: var has {len(genes)} genes, X has {n_genes} columns")
    col_token = np.full(n_genes, -1, dtype=np.int64)
    col_median = np.ones(n_genes, dtype=np.float64)
    for j, g in enumerate(genes):
        tok = token_of.get(g)
        med = medians.get(g)
        if tok is None or med is None:
            continue
        med = float(med)
        if not (np.isfinite(med) and med > 0):
            continue
        col_token[j] = tok
        col_median[j] = med
    col_keep = col_token >= 0

    if args.limit_cells is not None:
        n_cells = min(n_cells, args.limit_cells)
    indptr = X["indptr"][: n_cells + 1].astype(np.int64)
    # Geneformer keeps cells with filter_pass == 1; for CELLxGENE-style files that is is_primary_data.
    primary = None
    if "obs" in f and "is_primary_data" in f["obs"]:
        primary = np.asarray(f["obs"]["is_primary_data"][:n_cells]).astype(bool)
    data_ds = X["data"]
    indices_ds = X["indices"]

    tmp_path = args.out + ".tokens.tmp"
    lengths = []
    cells_out = 0
    max_len = args.max_len
    target_sum = float(args.target_sum)
    with open(tmp_path, "wb") as tok_out:
        for a in range(0, n_cells, args.chunk):
            b = min(a + args.chunk, n_cells)
            s, e = int(indptr[a]), int(indptr[b])
            data = data_ds[s:e].astype(np.float64, copy=False)
            cols = indices_ds[s:e].astype(np.int64, copy=False)
            ptr = indptr[a : b + 1] - s
            starts = ptr[:-1]
            row_nnz = np.diff(ptr)

            # n_counts over all genes (float64 row sums); expressed genes = non-zero entries.
            padded = np.append(data, 0.0)
            n_counts = np.add.reduceat(padded, starts) if len(starts) else np.zeros(0)
            n_counts[row_nnz == 0] = 0.0
            nz = np.append((data != 0).astype(np.int64), 0)
            n_expr = np.add.reduceat(nz, starts) if len(starts) else np.zeros(0, dtype=np.int64)
            n_expr[row_nnz == 0] = 0
            pass_rows = n_expr >= args.min_genes
            if primary is not None:
                pass_rows &= primary[a:b]

            # entries of passing cells in kept genes, v = X / n_counts * target_sum / median
            row_of = np.repeat(np.arange(b - a), row_nnz)
            sel = pass_rows[row_of] & col_keep[cols] & (data != 0)
            r = row_of[sel]
            c = cols[sel]
            v = data[sel] / n_counts[r] * target_sum / col_median[c]
            tok = col_token[c]
            nz_v = v != 0
            if not nz_v.all():
                r, v, tok = r[nz_v], v[nz_v], tok[nz_v]

            # entries are grouped by cell already (CSR order): split per cell and rank
            kept_rows = np.nonzero(pass_rows)[0]
            counts = np.bincount(r, minlength=b - a)
            offs = np.concatenate(([0], np.cumsum(counts)))
            for i in kept_rows:
                cv = v[offs[i] : offs[i + 1]]
                ct = tok[offs[i] : offs[i + 1]]
                order = np.lexsort((ct, -cv))
                seq = ct[order[:max_len]].astype("<i4")
                tok_out.write(seq.tobytes())
                lengths.append(len(seq))
            cells_out += len(kept_rows)
    f.close()

    with open(args.out, "wb") as out:
        np.array([cells_out], dtype="<i4").tofile(out)
        np.asarray(lengths, dtype="<i4").tofile(out)
        with open(tmp_path, "rb") as tok_in:
            shutil.copyfileobj(tok_in, out, 1 << 22)
    os.remove(tmp_path)

    seconds = time.perf_counter() - t0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "cells_in": n_cells,
                "cells_out": cells_out,
                "seconds": round(seconds, 4),
                "cells_per_s": round(n_cells / seconds, 2) if seconds > 0 else None,
                "peak_rss_mb": round(peak_rss_mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
